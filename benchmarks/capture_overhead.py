"""Attention capture vs plain generation vs eager output_attentions, and ReAL speed.

Time: the three variants interleaved in one process, ``--repeats`` rounds, the
median of each. Memory: each variant alone in a fresh subprocess (its peak
resident memory is its own), ``--memory-repeats`` subprocesses per variant,
interleaved, the median peak and growth; beside it the capture buffer's
computed size (steps x recorded layers x batch x keys x 4 bytes). Torch runs
on ``--threads`` threads (default 1: stable when other processes share the
cores). Prints ratios measured in this run against issue 13's targets.
Usage: python benchmarks/capture_overhead.py [--new-tokens 64] [--image-side 896] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("plain", "eager", "capture")


def bench_spec():
    from inspectd.model.tiny_spec import TinySpec

    # About 25M parameters: text 512 x 8 layers, vision 256 x 4 blocks.
    return TinySpec(
        text_hidden=512, text_layers=8, text_heads=8, text_kv_heads=4, text_intermediate=1024,
        vision_hidden=256, vision_depth=4, vision_heads=4, vision_intermediate=768, fullatt_blocks=(3,),
        vocab_size=2048, max_pixels=1024 * 1024, seed=0,
    )


def _setup(side: int):
    import numpy as np
    import torch
    from PIL import Image

    from inspectd.bundle.manifest import PromptSpec
    from inspectd.model.prompting import anomaly_word_token_ids, capture_targets, chat_text
    from inspectd.model.tiny import build_tiny_model

    torch.manual_seed(0)
    model, processor = build_tiny_model(bench_spec())
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))
    prompt = PromptSpec()
    batch = processor(text=[chat_text(processor, prompt)], images=[image], return_tensors="pt")
    text_ids, hits = anomaly_word_token_ids(processor.tokenizer, prompt, ("defects", "anomalies"))
    targets, _ = capture_targets(batch["input_ids"], model.config.image_token_id, text_ids, hits)
    return model, batch, targets


def _runner(model, batch, targets, variant: str, new_tokens: int):
    """Switch the model to ``variant`` and return a function running one generation."""
    from inspectd.model.capture import enable_capture, recording

    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if variant == "eager":
        # What a user of output_attentions does: the whole model on eager attention.
        model.set_attn_implementation("eager")
        kwargs.update(output_attentions=True, return_dict_in_generate=True)
    elif variant == "capture":
        enable_capture(model)
    else:
        model.set_attn_implementation("sdpa")

    def once():
        if variant == "capture":
            recorder = capture_recorder(model, targets, new_tokens)
            with recording(recorder):
                model.generate(**batch, **kwargs)
            recorder.stacked()
        else:
            model.generate(**batch, **kwargs)

    return once


def capture_recorder(model, targets, new_tokens: int):
    """The recorder the runtime builds: ReAL's default layers, a buffer for ``new_tokens`` steps."""
    from inspectd.model.capture import AttentionRecorder
    from inspectd.real.params import RealParams

    layers = model.config.text_config.num_hidden_layers
    return AttentionRecorder(targets, layers, layers=range(layers)[RealParams().layer_slice(layers)],
                             max_steps=new_tokens)


def run_variant(variant: str, new_tokens: int, side: int, repeats: int, threads: int) -> dict:
    """One variant alone in this process: its peak resident memory is its own."""
    import torch

    torch.set_num_threads(threads)
    model, batch, targets = _setup(side)
    once = _runner(model, batch, targets, variant, new_tokens)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        for _ in range(repeats):
            once()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "variant": variant,
        "params": sum(p.numel() for p in model.parameters()),
        "image_tokens": int((batch["input_ids"] == model.config.image_token_id).sum()),
        "peak_rss_mb": peak_kb / 1024,
        "peak_growth_mb": (peak_kb - rss_before) / 1024,
        "buffer_mb": capture_recorder(model, targets, new_tokens).buffer_bytes() / 2**20,
    }


def run_timing(new_tokens: int, side: int, repeats: int, threads: int) -> dict:
    """All variants interleaved in one process, so machine noise hits each alike."""
    import torch

    torch.set_num_threads(threads)
    model, batch, targets = _setup(side)
    times = {v: [] for v in VARIANTS}
    with torch.inference_mode():
        _runner(model, batch, targets, "plain", new_tokens)()  # warm-up
        for _ in range(repeats):
            for variant in VARIANTS:
                once = _runner(model, batch, targets, variant, new_tokens)
                started = time.perf_counter()
                once()
                times[variant].append(time.perf_counter() - started)
    ratios = [c / p for c, p in zip(times["capture"], times["plain"])]  # per round: the same noise for both
    return {**{v: statistics.median(t) for v, t in times.items()}, "capture_over_plain": statistics.median(ratios),
            "eager_over_capture": statistics.median(e / c for e, c in zip(times["eager"], times["capture"]))}


def profile_capture(new_tokens: int, side: int, threads: int) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.set_num_threads(threads)
    model, batch, targets = _setup(side)
    once = _runner(model, batch, targets, "capture", new_tokens)
    with torch.inference_mode():
        once()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            with record_function("capture generation"):
                once()
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=48))
    return 0


def bench_real(tokens: int = 300, grid: int = 15, repeats: int = 200) -> float:
    import numpy as np

    from inspectd.real.localize import TokenEvidence, localize
    from inspectd.real.params import RealParams

    rng = np.random.default_rng(0)
    maps = rng.dirichlet(np.ones(grid * grid), size=tokens).reshape(tokens, grid, grid)
    evidence = TokenEvidence(maps, rng.uniform(0, 0.2, tokens))
    params = RealParams()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        localize(evidence, params, (grid * 28, grid * 28))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--image-side", type=int, default=896, help="896 px -> 1024 merged image tokens")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median)")
    parser.add_argument("--memory-repeats", type=int, default=5, help="subprocesses per variant (median peak)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="profile one capture generation instead: where "
                                                                   "its time goes (torch.profiler, by self time)")
    parser.add_argument("--variant", choices=(*VARIANTS, "timing"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        return profile_capture(args.new_tokens, args.image_side, args.threads)
    if args.variant == "timing":
        print(json.dumps(run_timing(args.new_tokens, args.image_side, args.repeats, args.threads)))
        return 0
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.new_tokens, args.image_side, 1, args.threads)))
        return 0

    def child(variant: str) -> dict:
        done = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--new-tokens", str(args.new_tokens),
             "--image-side", str(args.image_side), "--repeats", str(args.repeats), "--threads", str(args.threads)],
            capture_output=True, text=True, check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    real_s = bench_real()
    runs = {variant: [] for variant in VARIANTS}
    for _ in range(args.memory_repeats):
        for variant in VARIANTS:
            runs[variant].append(child(variant))
    memory = {v: {key: statistics.median(r[key] for r in rs) for key in ("peak_rss_mb", "peak_growth_mb")}
              for v, rs in runs.items()}
    spread = {v: (min(r["peak_rss_mb"] for r in rs), max(r["peak_rss_mb"] for r in rs)) for v, rs in runs.items()}
    first = runs["plain"][0]
    seconds = child("timing")
    print(f"model: {first['params'] / 1e6:.1f}M parameters, {first['image_tokens']} image tokens, "
          f"{args.new_tokens} new tokens, {args.threads} thread(s); time = median of {args.repeats} interleaved "
          f"rounds, memory = median of {args.memory_repeats} fresh processes per variant")
    print(f"{'variant':<10}{'time s':>10}{'peak RSS MB':>14}{'(min-max)':>16}{'growth MB':>12}")
    for variant in VARIANTS:
        low, high = spread[variant]
        print(f"{variant:<10}{seconds[variant]:>10.3f}{memory[variant]['peak_rss_mb']:>14.0f}"
              f"{f'{low:.0f}-{high:.0f}':>16}{memory[variant]['peak_growth_mb']:>12.0f}")
    buffer_mb = runs["capture"][0]["buffer_mb"]
    growth = memory["capture"]["peak_growth_mb"] - memory["plain"]["peak_growth_mb"]
    print(f"capture buffer, computed: {buffer_mb:.2f} MB; measured growth over plain: {growth:+.0f} MB")
    print(f"capture / plain time:   {seconds['capture_over_plain']:.3f}x  (target <= 1.05)")
    print(f"capture / plain memory: {memory['capture']['peak_rss_mb'] / memory['plain']['peak_rss_mb']:.3f}x"
          "  (target <= 1.05)")
    print(f"eager / capture time:   {seconds['eager_over_capture']:.3f}x  (target >= 1.6)")
    print(f"eager / plain memory:   {memory['eager']['peak_rss_mb'] / memory['plain']['peak_rss_mb']:.3f}x")
    print(f"ReAL, 300 reasoning tokens on a 15x15 grid: {real_s * 1000:.2f} ms (target < 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

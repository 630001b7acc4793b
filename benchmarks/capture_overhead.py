"""Attention capture vs plain generation vs eager output_attentions, and ReAL speed.

Each generation variant runs in its own subprocess so that its peak resident
memory is its own. Prints times, peak memory and ratios measured in this run.
Usage: python benchmarks/capture_overhead.py [--new-tokens 64] [--image-side 896] [--repeats 3]
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
    from inspectd.model.tiny import TinySpec

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
    from inspectd.model.capture import AttentionRecorder, enable_capture, recording

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
            recorder = AttentionRecorder(targets, model.config.text_config.num_hidden_layers)
            with recording(recorder):
                model.generate(**batch, **kwargs)
            recorder.stacked()
        else:
            model.generate(**batch, **kwargs)

    return once


def run_variant(variant: str, new_tokens: int, side: int, repeats: int) -> dict:
    """One variant alone in this process: its peak resident memory is its own."""
    import torch

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
    }


def run_timing(new_tokens: int, side: int, repeats: int) -> dict:
    """All variants interleaved in one process, so machine noise hits each alike."""
    import torch

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
    return {v: statistics.median(t) for v, t in times.items()}


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=(*VARIANTS, "timing"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant == "timing":
        print(json.dumps(run_timing(args.new_tokens, args.image_side, args.repeats)))
        return 0
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.new_tokens, args.image_side, args.repeats)))
        return 0

    def child(variant: str) -> dict:
        done = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--new-tokens", str(args.new_tokens),
             "--image-side", str(args.image_side), "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    real_s = bench_real()
    memory = {variant: child(variant) for variant in VARIANTS}
    seconds = child("timing")
    plain, eager, capture = (memory[v] for v in VARIANTS)
    print(f"model: {plain['params'] / 1e6:.1f}M parameters, {plain['image_tokens']} image tokens, "
          f"{args.new_tokens} new tokens; time = median of {args.repeats} interleaved runs")
    print(f"{'variant':<10}{'time s':>10}{'peak RSS MB':>14}{'growth MB':>12}")
    for variant in VARIANTS:
        r = memory[variant]
        print(f"{variant:<10}{seconds[variant]:>10.3f}{r['peak_rss_mb']:>14.0f}{r['peak_growth_mb']:>12.0f}")
    print(f"capture / plain time:   {seconds['capture'] / seconds['plain']:.3f}x  (target <= 1.10)")
    print(f"capture / plain memory: {capture['peak_rss_mb'] / plain['peak_rss_mb']:.3f}x  (target <= 1.15)")
    print(f"eager / capture time:   {seconds['eager'] / seconds['capture']:.3f}x  (target >= 1.5)")
    print(f"eager / plain memory:   {eager['peak_rss_mb'] / plain['peak_rss_mb']:.3f}x")
    print(f"ReAL, 300 reasoning tokens on a 15x15 grid: {real_s * 1000:.2f} ms (target < 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

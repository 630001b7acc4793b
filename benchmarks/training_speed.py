"""Time per GRPO step and per evaluated image, on the tiny and the ~25M model.

Both models are untrained builds of the real architecture, first given a
short supervised warm-up so replies parse (otherwise the consistency reward
and ReAL have nothing to work on). Prints seconds per GRPO step (batch x
generations as given) and per image of ``inspectd eval``'s work.
Usage: python benchmarks/training_speed.py [--steps 3] [--images 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(name: str, spec, steps: int, images: int, checkpointing: bool = True) -> dict:
    from inspectd.bundle.load import load_bundle
    from inspectd.bundle.manifest import BundleManifest, PromptSpec
    from inspectd.bundle.save import save_bundle
    from inspectd.data.layouts import read_mvtec
    from inspectd.data.synthetic import make_sample, write_mvtec_layout
    from inspectd.evaluation.runner import evaluate
    from inspectd.inspection.inspector import Inspector, InspectorOptions
    from inspectd.model.tiny import build_tiny_model
    from inspectd.real.params import RealParams
    from inspectd.training.cgro import build_trainer, cgro_rows
    from inspectd.training.cgro_config import CgroSettings
    from inspectd.training.warmup import supervised_warmup
    from inspectd.training.warmup_config import ReplyExample, WarmupSettings
    from inspectd.training.warmup_config import reasoning_reply

    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    model, processor = build_tiny_model(spec)
    params = sum(p.numel() for p in model.parameters())
    supervised_warmup(model, processor, PromptSpec(),
                      lambda i: ReplyExample(make_sample(500_000 + i, 112).image, reasoning_reply(make_sample(500_000 + i, 112))),
                      WarmupSettings(steps=120, batch_size=8, learning_rate=3e-3, warmup_steps=10))
    real = RealParams(layer_start=0)
    save_bundle(model, processor, root / "bundle", BundleManifest(name=name, base_model=name, max_new_tokens=48,
                                                                  image_size=(168, 168), real=real), name)
    bundle = load_bundle(root / "bundle", "cpu")
    rows = cgro_rows([(make_sample(600_000 + i, 168).image, make_sample(600_000 + i, 168).anomalous)
                      for i in range(4 * (steps + 1))], PromptSpec())
    trainer, _ = build_trainer(bundle.model, bundle.processor, rows,
                               CgroSettings(max_steps=steps + 1, batch_size=4, generations=2,
                                            max_completion_length=48, save_steps=10_000,
                                            gradient_checkpointing=checkpointing), PromptSpec(), real,
                               root / "cgro")
    trainer.train()
    step_times = [float(h["step_time"]) for h in trainer.state.log_history if "step_time" in h][1:]
    write_mvtec_layout(root / "data", "tiles", range(images), size=168)
    fresh = load_bundle(root / "bundle", "cpu")
    inspector = Inspector(fresh, real, InspectorOptions(batch_size=4))
    started = time.perf_counter()
    evaluate(inspector, [read_mvtec(root / "data")])
    per_image = (time.perf_counter() - started) / images
    return {"name": name, "params": params, "cgro_step_s": statistics.median(step_times), "eval_image_s": per_image}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--no-checkpointing", action="store_true", help="GRPO without gradient checkpointing")
    parser.add_argument("--only", choices=("tiny", "25M"))
    args = parser.parse_args()
    from capture_overhead import bench_spec

    from inspectd.model.tiny_spec import TinySpec

    torch.set_num_threads(2)
    for name, spec in (("tiny", TinySpec()), ("25M", bench_spec())):
        if args.only and name != args.only:
            continue
        r = measure(name, spec, args.steps, args.images, checkpointing=not args.no_checkpointing)
        print(f"{r['name']:<5} {r['params'] / 1e6:5.1f}M params: GRPO step (4 prompts x 2 replies, <=48 tokens, 168 px) "
              f"{r['cgro_step_s']:.2f} s{'' if not args.no_checkpointing else ' (no gradient checkpointing)'}; "
              f"eval {r['eval_image_s'] * 1000:.0f} ms per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

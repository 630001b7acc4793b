"""Recipe for the shipped demo bundle: tiny Qwen2.5-VL + supervised warm-up.

Deterministic (fixed seeds) and CPU-sized. The model learns the reply format
and to describe synthetic defects with what and where; CGRO comes on top of
this in a later recipe. Run: ``python -m inspectd.training.warmup_recipe``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from inspectd.bundle.manifest import BundleManifest, PromptSpec
from inspectd.bundle.save import save_bundle
from inspectd.data.synthetic import make_sample
from inspectd.model.tiny import TinySpec, build_tiny_model
from inspectd.real.params import RealParams
from inspectd.training.sft import ReplyExample, WarmupSettings, supervised_warmup

TRAIN_SEED_OFFSET = 1_000_000  # training images use seeds >= this; evaluation uses seeds below
IMAGE_SIZE = 168


def reply_for(sample) -> str:
    return f"<think>{sample.description()}</think><answer>{'yes' if sample.anomalous else 'no'}</answer>"


def training_example(index: int) -> ReplyExample:
    sample = make_sample(TRAIN_SEED_OFFSET + index, IMAGE_SIZE)
    return ReplyExample(sample.image, reply_for(sample))


def model_card(name: str, spec: TinySpec, settings: WarmupSettings, seconds: float, losses: list[float]) -> str:
    return f"""# {name}

**What it is.** A tiny Qwen2.5-VL (the real architecture, {spec.text_layers} text layers of
width {spec.text_hidden}, a {spec.vision_depth}-block vision encoder of width {spec.vision_hidden}; about 0.7M
parameters), trained from scratch on this CPU with a supervised warm-up only, so that the
out-of-the-box run of inspectd shows real replies, scores and ReAL maps. It is a model
for trying inspectd and for its tests, **not** a replacement for a CGRO-tuned
Qwen2.5-VL-7B, and it has not been through CGRO.

**Data.** {settings.steps * settings.batch_size} synthetic {IMAGE_SIZE}x{IMAGE_SIZE} images from
`inspectd.data.synthetic` (seeds from {TRAIN_SEED_OFFSET}), half with one drawn defect; replies
`<think>what and where</think><answer>yes|no</answer>` written from the drawn mask.

**Recipe.** `python -m inspectd.training.warmup_recipe` — AdamW (betas 0.9/0.98, weight
decay {settings.weight_decay}), peak lr {settings.learning_rate}, {settings.warmup_steps} warm-up steps then
cosine, batch {settings.batch_size}, {settings.steps} steps, gradient clip {settings.grad_clip}, seed
{settings.seed}. Took {seconds:.0f} s on 2 CPU cores. Final loss (mean of last 20 steps):
{np.mean(losses[-20:]):.3f}.

**Quality.** Not evaluated against targets yet; expect near-chance verdicts on real images.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="models/tiny-warmup")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    spec = TinySpec(seed=7)
    settings = WarmupSettings(steps=args.steps, batch_size=8, learning_rate=2e-3, warmup_steps=30, seed=7)
    model, processor = build_tiny_model(spec)
    started = time.perf_counter()
    losses = supervised_warmup(
        model, processor, PromptSpec(), training_example, settings,
        on_step=lambda step, loss: print(f"step {step} loss {loss:.4f}", flush=True) if step % 25 == 0 else None,
    )
    seconds = time.perf_counter() - started
    manifest = BundleManifest(
        name=Path(args.out).name,
        base_model="inspectd tiny Qwen2.5-VL, trained from scratch (supervised warm-up only)",
        max_new_tokens=48,
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        real=RealParams(layer_start=0, smoothing_sigma=0.7),
    )
    save_bundle(model, processor, Path(args.out), manifest, model_card(manifest.name, spec, settings, seconds, losses))
    print(f"wrote {args.out} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training-step time with the stock vs the packed vision passes (inspectd.model.packed_vision).

The recipe's model (models/recipes/tiny-cgro.yaml), one warm-up step
(forward + backward, batch of synthetic images with their replies) per
variant, interleaved so machine noise hits both alike; at the recipe's
168 px (4 windows per image) and at 448 px (16 windows per image).
Usage: python benchmarks/vision_packing.py [--repeats 5] [--batch 16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def step_time(model, batch) -> float:
    started = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    from inspectd.bundle.manifest import PromptSpec
    from inspectd.data.synthetic import make_sample
    from inspectd.model.packed_vision import use_packed_vision
    from inspectd.model.tiny import build_tiny_model
    from inspectd.training.recipe import _spec, load_recipe
    from inspectd.training.warmup import reply_batch
    from inspectd.training.warmup_config import ReplyExample, reasoning_reply

    torch.set_num_threads(2)
    stock, processor = build_tiny_model(_spec(load_recipe(REPO / "models" / "recipes" / "tiny-cgro.yaml")))
    packed = copy.deepcopy(stock)
    use_packed_vision(packed)
    stock.train()
    packed.train()
    print(f"model: {sum(p.numel() for p in stock.parameters()) / 1e6:.2f}M parameters, batch {args.batch}, "
          f"median of {args.repeats} interleaved steps")
    for size in (168, 448):
        samples = [make_sample(3_000_000 + i, size) for i in range(args.batch)]
        batch = reply_batch(processor, PromptSpec(), [ReplyExample(s.image, reasoning_reply(s)) for s in samples])
        times = {"stock": [], "packed": []}
        for model, name in ((stock, "stock"), (packed, "packed")):
            step_time(model, batch)  # warm-up
        for _ in range(args.repeats):
            for model, name in ((stock, "stock"), (packed, "packed")):
                times[name].append(step_time(model, batch))
        s, p = statistics.median(times["stock"]), statistics.median(times["packed"])
        print(f"{size} px ({(size // 14) ** 2} patches/image): stock {s:.3f} s, packed {p:.3f} s, "
              f"stock/packed {s / p:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

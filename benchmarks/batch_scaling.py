"""Per-image time at batch 1, 2, 4, 8: does batching pay, on the shipped tiny model and the ~25M model?

Each batch size runs the same images (one ``generate`` call per batch, capture and ReAL included, through
``Inspector.inspect_images``), rounds interleaved across batch sizes, median per-image time. The tiny model is
the shipped bundle (168 px); the 25M model is benchmarks/capture_overhead.py's spec with random weights, its
replies forced to a fixed length (``--new-tokens``) so batches do equal work.
Usage: python benchmarks/batch_scaling.py [--batches 1,2,4,8] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _inspector(bundle: Path, batch: int, new_tokens: int | None):
    from inspectd.bundle.load import load_bundle
    from inspectd.inspection.inspector import Inspector, InspectorOptions

    loaded = load_bundle(bundle, "cpu")
    return Inspector(loaded, loaded.manifest.real, InspectorOptions(batch_size=batch, max_new_tokens=new_tokens))


def _bench_bundle(folder: Path) -> Path:
    """The ~25M spec of capture_overhead.py saved as an untrained bundle (random weights)."""
    from capture_overhead import bench_spec

    from inspectd.model.tiny import save_tiny_bundle

    save_tiny_bundle(folder, bench_spec(), name="bench-25m")
    return folder


def per_image_ms(bundle: Path, sizes: list[int], images, rounds: int, new_tokens: int | None,
                 fixed_length: bool) -> dict[int, float]:
    import torch

    inspectors = {b: _inspector(bundle, b, new_tokens) for b in sizes}
    if fixed_length:  # random weights stop at random places: force every reply to new_tokens
        for inspector in inspectors.values():
            inspector.model.model.generation_config.min_new_tokens = new_tokens
    samples: dict[int, list[float]] = {b: [] for b in sizes}
    with torch.no_grad():
        for inspector in inspectors.values():
            inspector.inspect_images(images[:1])  # warm-up
        for _ in range(rounds):
            for b, inspector in inspectors.items():
                started = time.perf_counter()
                for first in range(0, len(images), b):
                    inspector.inspect_images(images[first:first + b])
                samples[b].append((time.perf_counter() - started) / len(images) * 1000)
    return {b: statistics.median(v) for b, v in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32, help="the 25M model's reply length")
    parser.add_argument("--side", type=int, default=448, help="the 25M model's image side (448 px = 256 tokens)")
    args = parser.parse_args()
    import torch

    from inspectd.data.synthetic import make_sample
    from inspectd.inspection.inspector import NamedImage

    torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batches.split(",")]
    count = max(sizes)
    tiny_images = [NamedImage(f"{i}.png", make_sample(300_000 + i, 168).image) for i in range(count)]
    big_images = [NamedImage(f"{i}.png", make_sample(300_000 + i, args.side).image) for i in range(count)]
    with tempfile.TemporaryDirectory() as folder:
        rows = {
            "tiny-cgro (3.7M, 168 px)": per_image_ms(REPO / "models" / "tiny-cgro", sizes, tiny_images, args.rounds,
                                                     None, False),
            f"25M random ({args.side} px, {args.new_tokens} tokens)": per_image_ms(
                _bench_bundle(Path(folder) / "bench"), sizes, big_images, args.rounds, args.new_tokens, True),
        }
    print(f"per-image ms, median of {args.rounds} interleaved rounds over {count} images, {args.threads} thread(s)")
    print(f"{'model':<34}" + "".join(f"{f'batch {b}':>10}" for b in sizes) + f"{'speed-up':>10}")
    for name, times in rows.items():
        print(f"{name:<34}" + "".join(f"{times[b]:>10.1f}" for b in sizes)
              + f"{times[sizes[0]] / times[sizes[-1]]:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

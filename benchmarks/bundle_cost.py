"""Per-image inspection time of several bundles side by side: what a new build costs against the shipped one.

Each bundle inspects the same photos with its own settings (input size, mirror views, score), in rounds
interleaved across bundles so that a slow moment of a shared machine falls on all of them; prints the median
per-image time and its ratio to the first bundle. Inspection only: load, generate with capture, branches, ReAL,
combining views. Pin threads (``--threads``): torch's default slows inference many times on a shared machine.
Usage: python benchmarks/bundle_cost.py BUNDLE [BUNDLE ...] [--images 16] [--rounds 3] [--threads 1] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEV = REPO.parent / "shared" / "datasets" / "magnetic_tile" / "test"


def time_inspectors(inspectors: dict, paths: list[Path], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per image of each inspector, one sample per round, rounds interleaved across inspectors."""
    for inspector in inspectors.values():
        inspector.inspect_files(paths[:1])  # warm-up: first-call allocations are not the steady cost
    samples: dict[str, list[float]] = {name: [] for name in inspectors}
    for _ in range(rounds):
        for name, inspector in inspectors.items():
            started = time.perf_counter()
            inspector.inspect_files(paths)
            samples[name].append((time.perf_counter() - started) / len(paths) * 1000)
    return samples


def timing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)


def compare(bundles: dict[str, Path], paths: list[Path], args: argparse.Namespace, unit: str) -> None:
    """Load each bundle, time them side by side and print each median with its ratio to the first's."""
    import torch

    from inspectd.bundle.load import load_bundle
    from inspectd.inspection.inspector import Inspector, InspectorOptions

    torch.set_num_threads(args.threads)
    inspectors = {}
    for name, folder in bundles.items():
        bundle = load_bundle(folder, "cpu")
        inspectors[name] = Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=args.batch))
    samples = time_inspectors(inspectors, paths, args.rounds)
    print(f"{len(paths)} photos, batch {args.batch} rows, {args.threads} thread(s), median of {args.rounds} rounds")
    base = statistics.median(next(iter(samples.values())))
    width = max(len(name) for name in samples)
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<{width}}  {median:7.1f} ms per image  ({median / base:.2f}x {unit})")


def _label(folder: Path) -> str:
    from inspectd.bundle.files import read_manifest

    manifest = read_manifest(folder)
    size = "x".join(map(str, manifest.image_size)) if manifest.image_size else "processor's"
    return f"{folder.name} ({size} px, {manifest.score.views} view(s))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders; the first is the reference")
    parser.add_argument("--folder", type=Path, default=DEV, help="photos to inspect (searched recursively)")
    timing_arguments(parser)
    args = parser.parse_args()
    paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in {".jpg", ".png"}
                   and "ground_truth" not in p.parts)[: args.images]
    print(f"photos from {args.folder}")
    compare({_label(folder): folder for folder in args.bundles}, paths, args, "the first")

if __name__ == "__main__":
    main()

"""Per-image time of the magnetic-tile bundle with 1, 2 and 4 mirror views (``score.views``): what the views cost.

The same bundle's weights under each ``views`` setting (the manifest is copied and changed in a temporary folder),
the same dev-subset tiles, ``model.batch_size`` rows per generate call, rounds interleaved across settings, median
per-image time and its ratio to one view. Inspection only (load, generate with capture, branches, ReAL, combining).
Usage: python benchmarks/mirror_views.py [--images 16] [--rounds 3] [--threads 1] [--batch 8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BUNDLE = REPO / "models" / "magnetic-tile-cgro"
DEV = REPO.parent / "shared" / "datasets" / "magnetic_tile" / "test"

from benchmarks.bundle_cost import print_ratios, time_inspectors  # noqa: E402 (after the path is set)


def _with_views(folder: Path, views: int) -> Path:
    from inspectd.bundle.files import read_manifest, write_manifest

    target = folder / f"views-{views}"
    shutil.copytree(BUNDLE, target)
    manifest = read_manifest(target)
    write_manifest(target, manifest.model_copy(update={"score": manifest.score.model_copy(update={"views": views})}))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    import torch

    from inspectd.bundle.load import load_bundle
    from inspectd.inspection.inspector import Inspector, InspectorOptions

    torch.set_num_threads(args.threads)
    paths = sorted(DEV.glob("*/*.jpg"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        inspectors = {}
        for views in (1, 2, 4):
            bundle = load_bundle(_with_views(Path(tmp), views), "cpu")
            inspectors[f"views {views}:"] = Inspector(bundle, bundle.manifest.real,
                                                      InspectorOptions(batch_size=args.batch))
        samples = time_inspectors(inspectors, paths, args.rounds)
    print(f"{len(paths)} dev tiles, batch {args.batch} rows, {args.threads} thread(s), median of {args.rounds} rounds")
    print_ratios(samples, "one view")

if __name__ == "__main__":
    main()

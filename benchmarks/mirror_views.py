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

from benchmarks.bundle_cost import compare, timing_arguments  # noqa: E402 (after the path is set)


def _with_views(folder: Path, views: int) -> Path:
    from inspectd.bundle.files import read_manifest, write_manifest

    target = folder / f"views-{views}"
    shutil.copytree(BUNDLE, target)
    manifest = read_manifest(target)
    write_manifest(target, manifest.model_copy(update={"score": manifest.score.model_copy(update={"views": views})}))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    timing_arguments(parser)
    args = parser.parse_args()
    paths = sorted(DEV.glob("*/*.jpg"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        compare({f"views {views}:": _with_views(Path(tmp), views) for views in (1, 2, 4)}, paths, args, "one view")

if __name__ == "__main__":
    main()

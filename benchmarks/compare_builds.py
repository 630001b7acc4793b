"""Validation figures of several builds of a labelled-folder recipe, side by side.

    python benchmarks/compare_builds.py var/recipe/magnetic-tile-cgro var/variants/S8 ... [--dev]

Reads each work folder's recorded stages (no model runs): the real validation
photos' image AUROC (from the export's calibration) and, on the held-out good
images with drawn defects, image AUROC, pooled pixel AUROC of ReAL and of the
all-token map, and the mean over defect kinds of the per-kind pixel AUROC.
Both pixel figures are printed because they disagree: the pooled one ranks
every pixel of every image together, so with score-gated maps it also
carries the image score; the per-kind mean is ruled by the maps. Builds of
several warm-up seeds compare only when they share `data.drawn_validation_seed`.
The dev columns (`--dev`: the recipe's zero-shot set) are for reporting a
choice made without them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _suite(eval_dir: Path, variant: str, suite: str) -> dict | None:
    path = eval_dir / f"{variant}-{suite}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _figures(report: dict) -> dict[str, float]:
    kinds = [c["metrics"]["pixel_auroc"] for c in report["categories"] if "/" in c["category"]]
    overall = report["overall"]
    return {"img": overall["image_auroc"], "px": overall["pixel_auroc"], "all": overall["pixel_auroc_all_tokens"],
            "aupr": overall["pixel_aupr"], "kinds": float(np.mean(kinds)) if kinds else float("nan")}


def build_rows(work_dir: Path, dev: bool) -> list[str]:
    export = json.loads((work_dir / "export" / "stage.json").read_text(encoding="utf-8"))
    rows = []
    for variant in ("warmup", "cgro"):
        drawn = _suite(work_dir / "eval", variant, "drawn_validation")
        if drawn is None:
            continue
        v = _figures(drawn)
        row = (f"| {work_dir.name} {variant} | {100 * export[variant]['calibration_image_auroc']:.1f} "
               f"| {100 * v['img']:.1f} | {100 * v['px']:.1f} | {100 * v['all']:.1f} | {100 * v['kinds']:.1f} |")
        zero_shot = _suite(work_dir / "eval", variant, "zero_shot") if dev else None
        if zero_shot is not None:
            d = _figures(zero_shot)
            row += (f" {100 * d['img']:.1f} | {100 * d['px']:.1f} | {100 * d['all']:.1f} | {100 * d['aupr']:.1f} "
                    f"| {100 * d['kinds']:.1f} |")
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dirs", nargs="+", type=Path, help="recipe work folders with finished export and eval")
    parser.add_argument("--dev", action="store_true", help="add the zero-shot (dev) columns")
    args = parser.parse_args()
    header = ("| build | real val img | drawn val img | drawn val px ReAL | drawn val px all-token "
              "| drawn val px, mean of kinds |")
    if args.dev:
        header += " dev img | dev px ReAL | dev px all-token | dev px AUPR | dev px, mean of kinds |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for work_dir in args.work_dirs:
        for row in build_rows(work_dir, args.dev):
            print(row)


if __name__ == "__main__":
    main()

"""Validation figures of several builds of a labelled-folder recipe, side by side.

    python benchmarks/compare_builds.py var/recipe/magnetic-tile-cgro var/variants/S8 ... [--dev] [--summary]

Reads each work folder's recorded stages (no model runs): the real validation
photos' image AUROC (from the export's calibration) and, on the held-out good
images with drawn defects, image AUROC, pooled pixel AUROC of ReAL and of the
all-token map, and the mean over defect kinds of the per-kind pixel AUROC.
The pooled pixel AUPR is printed beside them. With ``--summary``, one more row
per variant (warm-up, CGRO) gives each column's mean over the builds and its
spread (min-max): the figures a rule over several seeds is judged on.
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


def build_figures(work_dir: Path, dev: bool) -> dict[str, list[float]]:
    """Per variant with a drawn-validation report: the table's figures in column order (percent)."""
    export = json.loads((work_dir / "export" / "stage.json").read_text(encoding="utf-8"))
    out = {}
    for variant in ("warmup", "cgro"):
        drawn = _suite(work_dir / "eval", variant, "drawn_validation")
        if drawn is None:
            continue
        v = _figures(drawn)
        figures = [export[variant]["calibration_image_auroc"], v["img"], v["px"], v["all"], v["aupr"], v["kinds"]]
        zero_shot = _suite(work_dir / "eval", variant, "zero_shot") if dev else None
        if zero_shot is not None:
            d = _figures(zero_shot)
            figures += [d["img"], d["px"], d["all"], d["aupr"], d["kinds"]]
        out[variant] = [100 * f for f in figures]
    return out


def _name(work_dir: Path) -> str:
    """A seed's build folder (seed-8) is named with its recipe's folder: builds of two recipes share seeds."""
    return f"{work_dir.parent.name}/{work_dir.name}" if work_dir.name.startswith("seed-") else work_dir.name


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def summary_rows(builds: list[dict[str, list[float]]]) -> list[str]:
    """Per variant: each column's mean over the builds that have it, and its spread (min-max)."""
    rows = []
    for variant in ("warmup", "cgro"):
        columns = [figures[variant] for figures in builds if variant in figures]
        if not columns:
            continue
        width = min(len(c) for c in columns)
        table = np.array([c[:width] for c in columns])
        cells = [f"{m:.1f} ({lo:.1f}-{hi:.1f})" for m, lo, hi in zip(table.mean(0), table.min(0), table.max(0))]
        rows.append(_row(f"mean of {len(columns)} {variant} (min-max)", cells))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dirs", nargs="+", type=Path, help="recipe work folders with finished export and eval")
    parser.add_argument("--dev", action="store_true", help="add the zero-shot (dev) columns")
    parser.add_argument("--summary", action="store_true", help="add each variant's mean and spread over the builds")
    args = parser.parse_args()
    header = ("| build | real val img | drawn val img | drawn val px ReAL | drawn val px all-token "
              "| drawn val px AUPR | drawn val px, mean of kinds |")
    if args.dev:
        header += " dev img | dev px ReAL | dev px all-token | dev px AUPR | dev px, mean of kinds |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    builds = []
    for work_dir in args.work_dirs:
        figures = build_figures(work_dir, args.dev)
        builds.append(figures)
        for variant, values in figures.items():
            print(_row(f"{_name(work_dir)} {variant}", [f"{v:.1f}" for v in values]))
    if args.summary:
        for row in summary_rows(builds):
            print(row)


if __name__ == "__main__":
    main()

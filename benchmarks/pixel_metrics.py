"""Pixel metrics on 10^8 pixels: streaming bins vs the exact sort, time and peak memory.

Feeds 100 maps of 1000x1000 pixels one at a time into BinnedCurve (constant
memory) and, for comparison, runs the exact path on the first 10^7 pixels
(it needs every score in memory at once). Peak memory is the process's
peak RSS growth over each phase, measured in separate subprocesses.
Usage: python benchmarks/pixel_metrics.py [--images 100] [--side 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _maps(images: int, side: int):
    rng = np.random.default_rng(0)
    for _ in range(images):
        labels = np.zeros((side, side), dtype=bool)
        y, x = rng.integers(0, side - 50, size=2)
        labels[y : y + 50, x : x + 50] = True
        scores = np.clip(rng.normal(0.3, 0.15, (side, side)) + 0.3 * labels, 0, 1).astype(np.float32)
        yield scores, labels


def phase(kind: str, images: int, side: int) -> dict:
    from inspectd.metrics.ranking import BinnedCurve, exact_auroc_ap

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if kind == "binned":
        curve = BinnedCurve()
        for scores, labels in _maps(images, side):
            curve.add(scores, labels)
        auroc, ap = curve.auroc_ap()
    else:
        pairs = list(_maps(images, side))
        auroc, ap = exact_auroc_ap(np.concatenate([l.ravel() for _, l in pairs]),
                                   np.concatenate([s.ravel() for s, _ in pairs]))
    seconds = time.perf_counter() - started
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"kind": kind, "pixels": images * side * side, "seconds": seconds, "peak_growth_mb": growth,
            "auroc": auroc, "ap": ap}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--side", type=int, default=1000)
    parser.add_argument("--phase", choices=("binned", "exact"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.images, args.side)))
        return 0
    runs = []
    for kind, images in (("binned", args.images), ("exact", max(1, args.images // 10)), ("binned", max(1, args.images // 10))):
        done = subprocess.run([sys.executable, __file__, "--phase", kind, "--images", str(images), "--side",
                               str(args.side)], capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout))
    for r in runs:
        print(f"{r['kind']:<7} {r['pixels']:>12,} px  {r['seconds']:7.1f} s  peak +{r['peak_growth_mb']:7.0f} MB  "
              f"AUROC {r['auroc']:.6f}  AP {r['ap']:.6f}")
    print(f"binned vs exact on {runs[1]['pixels']:,} px: AUROC diff {abs(runs[1]['auroc'] - runs[2]['auroc']):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

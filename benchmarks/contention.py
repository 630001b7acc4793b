"""Inference under CPU contention: per-batch time with busy processes beside it, as a ratio to idle.

    python benchmarks/contention.py [--bundle models/tiny-cgro] [--competitors 4] [--repeats 5]

For each thread setting (inspectd's default ``model.threads: 1``, and torch's
own default of one thread per core), a fresh process loads the bundle and
times batches of 4 images, alternating idle and loaded rounds (``repeats``
of each, interleaved, medians reported) so drift hits both alike. Loaded =
``competitors`` processes spinning in pure Python. Also loaded with the
competitors at nice 10, which stands in for a service that the unit gives a
higher CPU weight than the rest of the box. On N cores with C spinners, a
one-thread process gets at best N/(C+1) of a core under a fair scheduler:
with 2 cores and 4 spinners that is 2.5x slower than idle.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _spin(nice: int) -> None:
    os.nice(nice)
    while True:
        pass


def _child(bundle: str, threads: int | None, repeats: int, competitors: int) -> dict:
    import torch

    from inspectd.bundle.load import load_bundle
    from inspectd.data.synthetic import make_sample
    from inspectd.inspection.inspector import Inspector, InspectorOptions, NamedImage
    from inspectd.model.cpu_threads import limit_cpu_threads

    if threads is not None:
        limit_cpu_threads(threads)
    loaded = load_bundle(Path(bundle), "cpu")
    inspector = Inspector(loaded, loaded.manifest.real, InspectorOptions(batch_size=4))
    images = [NamedImage(f"s{i}", make_sample(700 + i, 168).image) for i in range(4)]
    inspector.inspect_images(images)  # warm-up

    def batch_seconds() -> float:
        started = time.perf_counter()
        inspector.inspect_images(images)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"idle": [], "loaded": [], "loaded_niced": []}
    for _ in range(repeats):
        times["idle"].append(batch_seconds())
        for label, nice in (("loaded", 0), ("loaded_niced", 10)):
            spinners = [multiprocessing.Process(target=_spin, args=(nice,), daemon=True) for _ in range(competitors)]
            for spinner in spinners:
                spinner.start()
            time.sleep(0.5)  # let the scheduler spread them
            try:
                times[label].append(batch_seconds())
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.join()
    return {"threads": torch.get_num_threads(), **{k: statistics.median(v) for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(REPO / "models" / "tiny-cgro"))
    parser.add_argument("--competitors", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        threads = None if args.child == "default" else int(args.child)
        print(json.dumps(_child(args.bundle, threads, args.repeats, args.competitors)))
        return
    print(f"{os.cpu_count()} cores, {args.competitors} busy competitors, batch of 4, medians of {args.repeats}")
    print(f"{'setting':<28} {'idle s':>8} {'loaded s':>9} {'ratio':>6} {'niced s':>8} {'ratio':>6}")
    for label, child in (("model.threads: 1 (default)", "1"), ("torch default threads", "default")):
        out = subprocess.run([sys.executable, __file__, "--bundle", args.bundle, "--competitors",
                              str(args.competitors), "--repeats", str(args.repeats), "--child", child],
                             capture_output=True, text=True, check=True, cwd=REPO,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label + ' (' + str(r['threads']) + ')':<28} {r['idle']:>8.3f} {r['loaded']:>9.3f} "
              f"{r['loaded'] / r['idle']:>5.1f}x {r['loaded_niced']:>8.3f} {r['loaded_niced'] / r['idle']:>5.1f}x",
              flush=True)


if __name__ == "__main__":
    main()

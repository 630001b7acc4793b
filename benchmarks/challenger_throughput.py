"""Does a challenger in the shadow cost the line throughput? The champion's images/s over a burst, three ways.

The real daemon (subprocess, the shipped champion ``models/tiny-cgro``) gets N files renamed into its drop folder
at once, more than it can take, (a) without a challenger, (b) with ``models/magnetic-tile-cgro`` as an idle-mode
challenger, (c) with it in sampled mode (fraction 0.25). The champion's images/s = (N - B) / (time of the last row -
time of the first batch's rows), as in daemon_throughput.py; with a challenger the burst starts once it is loaded
("challenger ready"), so its loading is not counted. Runs are interleaved (none, idle, sampled, none, ...) and the
medians compared: target idle / none >= 0.95 (idle mode inspects only while the champion has nothing queued or in
flight). Also printed: the challenger rows written by the champion's last row (idle: ~0, it waits for the burst to
end) and the share of parts sampled.

Usage: python benchmarks/challenger_throughput.py [--files 200] [--batch 4] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CHALLENGER = REPO / "models" / "magnetic-tile-cgro"

from daemon_bench import png_payloads, start_daemon  # noqa: E402

MODES = {
    "none": None,
    "idle": {"bundle": str(CHALLENGER), "mode": "idle"},
    "sampled 0.25": {"bundle": str(CHALLENGER), "mode": "sampled", "sample_fraction": 0.25},
}


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def _query(db: Path, sql: str) -> list[tuple]:
    try:
        connection = sqlite3.connect(db)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()
    except sqlite3.OperationalError:  # not created yet
        return []


def burst(payloads: list[bytes], batch: int, threads: int, challenger: dict | None) -> tuple[float, int, int]:
    """(champion images/s, challenger rows written by the champion's last row, challenger rows ~5 s later)."""
    files = len(payloads)
    model = {"batch_size": batch, "threads": threads}
    if challenger is not None:
        model["challenger"] = challenger
    with tempfile.TemporaryDirectory(prefix="inspectd-challenger-bench-") as folder:
        root = Path(folder)
        (root / "staging").mkdir()
        proc = start_daemon(root, model, queue={"max_wait_ms": 0, "capacity": max(256, files)},
                            disk_guard={"min_free_mb": 0})
        db = root / "var" / "inspectd.db"
        try:
            deadline = time.time() + 180
            while challenger is not None and "challenger ready" not in (root / "daemon.log").read_text():
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError((root / "daemon.log").read_text())
                time.sleep(0.1)
            for i, data in enumerate(payloads):
                (root / "staging" / f"s{i:05d}.png").write_bytes(data)
            for i in range(files):  # renames: each complete at once, all faster than the model
                os.rename(root / "staging" / f"s{i:05d}.png", root / "drop" / f"s{i:05d}.png")
            deadline = time.time() + 900
            while (_query(db, "SELECT count(*) FROM inspections") or [(0,)])[0][0] < files:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the burst did not finish:\n" + (root / "daemon.log").read_text()[-3000:])
                time.sleep(0.05)
            shadow_at_end = _query(db, "SELECT count(*) FROM challenger_results")[0][0]
            stamps = sorted(_stamp(row[0]) for row in _query(db, "SELECT created_at FROM inspections"))
            time.sleep(5 if challenger is not None else 0)
            shadow_later = _query(db, "SELECT count(*) FROM challenger_results")[0][0]
        finally:
            proc.terminate()
            proc.wait()
    return (files - batch) / (stamps[-1] - stamps[batch - 1]), shadow_at_end, shadow_later


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each mode (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each model process")
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # inherited by the daemon
        os.environ[name] = str(args.threads)
    payloads = png_payloads(args.files, 1_200_000)
    print(f"champion tiny-cgro, challenger {CHALLENGER.name}; {args.files} files of 168 px, batch {args.batch}, "
          f"torch threads {args.threads} per model process, {os.cpu_count()} CPU(s); "
          f"median of {args.repeats} interleaved runs")
    runs: dict[str, list[tuple[float, int, int]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode, challenger in MODES.items():
            runs[mode].append(burst(payloads, args.batch, args.threads, challenger))
    base = statistics.median(r[0] for r in runs["none"])
    print(f"{'challenger':>13} {'img/s (median)':>15} {'runs':>24} {'ratio':>6} {'shadow rows at end':>19} "
          f"{'5 s later':>10}")
    for mode, results in runs.items():
        rate = statistics.median(r[0] for r in results)
        each = ", ".join(f"{r[0]:.1f}" for r in results)
        print(f"{mode:>13} {rate:>15.2f} {each:>24} {rate / base:>6.3f} "
              f"{statistics.median(r[1] for r in results):>19.0f} {statistics.median(r[2] for r in results):>10.0f}")
    print("target: idle / none >= 0.95")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

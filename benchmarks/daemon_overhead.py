"""Daemon overhead per image and history query speed on a large store.

1. Runs the real daemon (subprocess) on the shipped tiny model and drops N
   files at a steady rate. Per file: overhead = (archive rename time - the
   writer's close time) - (decode + model + ReAL time recorded in the row).
   That covers event delivery, queueing, batching wait, hashing, the DB
   commit and the archive move. Run once with queue.max_wait_ms=0 and once
   with the shipped default (200 ms), which trades latency for batches.
2. Generates a store with 1,000,000 inspections and times filtered history
   queries (in-process, median of 5).
Usage: python benchmarks/daemon_overhead.py [--files 500] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from daemon_bench import drop_at_rate, png_payloads, start_daemon


def run_daemon(files: int, rate_hz: float, max_wait_ms: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="inspectd-bench-"))
    proc = start_daemon(root, {"batch_size": 4}, queue={"max_wait_ms": max_wait_ms})
    db = root / "var" / "inspectd.db"
    closed = drop_at_rate(root / "drop", png_payloads(files, 900_000), rate_hz)
    while True:
        done = sqlite3.connect(db).execute("SELECT count(*) FROM inspections").fetchone()[0]
        if done >= files:
            break
        time.sleep(0.2)
    proc.terminate()
    proc.wait()
    rows = sqlite3.connect(db).execute(
        "SELECT source_path, archived_path, load_ms, model_ms, real_ms FROM inspections").fetchall()
    overheads, work = [], []
    for source, archived, load_ms, model_ms, real_ms in rows:
        end_to_end = (os.stat(archived).st_ctime - closed[Path(source).name]) * 1000
        busy = (load_ms or 0) + (model_ms or 0) + (real_ms or 0)
        overheads.append(end_to_end - busy)
        work.append(busy)
    queue_ms = [r[0] for r in sqlite3.connect(db).execute("SELECT queue_ms FROM inspections")]
    overheads.sort()
    return {
        "files": len(rows),
        "median_overhead_ms": statistics.median(overheads),
        "p90_overhead_ms": overheads[int(0.9 * len(overheads))],
        "median_work_ms": statistics.median(work),
        "median_queue_ms": statistics.median(queue_ms),
    }


def history_speed(rows: int) -> dict:
    from inspectd.store.database import migrate, open_engine
    from inspectd.store.queries import HistoryFilter, history

    root = Path(tempfile.mkdtemp(prefix="inspectd-history-"))
    url = f"sqlite:///{root / 'big.db'}"
    migrate(open_engine(url))
    rng = random.Random(0)
    start = datetime(2026, 1, 1)
    cameras = [f"line{i}-cam{j}" for i in range(1, 6) for j in range(1, 5)]
    connection = sqlite3.connect(root / "big.db")
    generated = time.perf_counter()
    batch = []
    for i in range(rows):
        verdict = rng.choices(["normal", "anomalous", "unknown", "failed"], [0.9, 0.08, 0.01, 0.01])[0]
        score = None if verdict in ("unknown", "failed") else rng.random()
        split = None if score is None else rng.random() < 0.28  # four views split on 88 of 314 hold-out photos
        batch.append((start + timedelta(seconds=i * 30), rng.choice(cameras), f"/srv/drop/{i}.png",
                      f"{i:064x}", 100_000, verdict, score, 0.5, 1, 50.0, 60.0, split))
        if len(batch) == 50_000:
            connection.executemany(
                "INSERT INTO inspections (created_at, camera, source_path, sha256, size_bytes, verdict, score, "
                "threshold, bundle_id, model_ms, latency_ms, views_disagree) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", batch)
            batch.clear()
    connection.commit()
    connection.execute("ANALYZE")
    connection.close()
    generated = time.perf_counter() - generated
    engine = open_engine(url)
    end = start + timedelta(seconds=rows * 30)
    cases = {
        "newest 50": HistoryFilter(),
        "camera + verdict=anomalous": HistoryFilter(camera="line3-cam2", verdict="anomalous"),
        "last 24 h, min score 0.9": HistoryFilter(since=end - timedelta(hours=24), min_score=0.9),
        "one week window, camera": HistoryFilter(since=end - timedelta(days=60), until=end - timedelta(days=53),
                                                 camera="line1-cam1"),
        "verdict=failed (1%)": HistoryFilter(verdict="failed", limit=200),
        "views disagree (28%)": HistoryFilter(views_disagree=True),
        "views disagree, camera, anomalous": HistoryFilter(views_disagree=True, camera="line3-cam2",
                                                           verdict="anomalous"),
    }
    timings = {}
    for label, filters in cases.items():
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            history(engine, filters)
            samples.append(time.perf_counter() - t)
        timings[label] = statistics.median(samples) * 1000
    return {"rows": rows, "generate_s": generated, "queries_ms": timings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--rate", type=float, default=4.0, help="files per second (below the model's capacity)")
    parser.add_argument("--waits", default="0,20,200", help="queue.max_wait_ms values to compare ('' for none)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    for wait in (int(w) for w in args.waits.split(",") if w.strip()):
        r = run_daemon(args.files, args.rate, wait)
        print(f"daemon, {r['files']} files at {args.rate:g}/s, queue.max_wait_ms={wait}: overhead median "
              f"{r['median_overhead_ms']:.1f} ms, p90 {r['p90_overhead_ms']:.1f} ms "
              f"(of which waiting in the queue: median {r['median_queue_ms']:.1f} ms; "
              f"decode+model+ReAL median {r['median_work_ms']:.1f} ms)")
    if args.rows <= 0:
        return 0
    h = history_speed(args.rows)
    print(f"history over {h['rows']:,} rows (generated in {h['generate_s']:.0f} s):")
    for label, ms in h["queries_ms"].items():
        print(f"  {label:<32} {ms:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

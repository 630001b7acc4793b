"""The writer's commit latency while retention deletes old rows, against the same writer alone.

    python benchmarks/retention_latency.py [--old-rows 100000] [--seconds 10]

Builds a SQLite store (WAL, as the daemon opens it) holding ``old-rows``
inspections two years old, each with a 4 KB map blob and an alert. A writer
thread then commits one inspection + map per transaction (what the recorder
does per image) for ``seconds`` alone, then again for exactly as long as
retention takes to delete every old row (``rows_days: 365``, default
batches, pages given back to the file system), and prints the p50/p99
commit latency of both phases and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from inspectd.config import ArchiveSettings, RetentionSettings
from inspectd.daemon.retention import Retention
from inspectd.store.clock import utcnow
from inspectd.store.database import migrate, open_engine
from inspectd.store.schema import ArtifactRow, InspectionRow


def _fill(path: Path, rows: int) -> None:
    import sqlite3

    old = (utcnow() - timedelta(days=730)).isoformat(sep=" ")
    connection = sqlite3.connect(path)
    blob = os.urandom(4096)
    with connection:
        connection.executemany(
            "INSERT INTO inspections (id, created_at, camera, source_path, sha256, size_bytes, verdict, threshold, "
            "reasoning_tokens, tokens_used) VALUES (?, ?, 'c1', ?, ?, 1, 'normal', 0.5, 0, 0)",
            ((i, old, f"/drop/{i}.png", f"{i:064x}") for i in range(1, rows + 1)))
        connection.executemany("INSERT INTO artifacts (inspection_id, map_png, mask_png) VALUES (?, ?, x'00')",
                               ((i, blob) for i in range(1, rows + 1)))
        connection.executemany(
            "INSERT INTO alerts (inspection_id, rule, channel, camera, idempotency_key, payload, status, attempts, "
            "next_attempt_at, created_at) VALUES (?, 'r', 'hook', 'c1', ?, '{}', 'delivered', 1, ?, ?)",
            ((i, f"k{i}", old, old) for i in range(1, rows + 1)))
    connection.close()


def _writer(engine, seconds: float, start_id: int, until: threading.Event | None = None) -> list[float]:
    """Commit for ``seconds``, or (with ``until``) until that event is set."""
    latencies, blob, i = [], os.urandom(4096), start_id
    deadline = time.monotonic() + seconds
    while (until is None and time.monotonic() < deadline) or (until is not None and not until.is_set()):
        i += 1
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            row = InspectionRow(created_at=utcnow(), camera="c1", source_path=f"/drop/new{i}.png",
                                sha256=f"new{i:061x}", size_bytes=1, verdict="normal", threshold=0.5)
            session.add(row)
            session.flush()
            session.add(ArtifactRow(inspection_id=row.id, map_png=blob, mask_png=b"\x00"))
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)  # a busy line: ~100 images/s at most
    return latencies


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if q < 100 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "store.db"
        engine = open_engine(f"sqlite:///{db}")
        migrate(engine)
        started = time.perf_counter()
        _fill(db, args.old_rows)
        print(f"store: {args.old_rows} old rows with 4 KB maps and an alert each "
              f"({db.stat().st_size / 2**20:.0f} MB, built in {time.perf_counter() - started:.0f} s)")
        idle = _writer(engine, args.seconds, 10_000_000)
        retention = Retention(engine, RetentionSettings(rows_days=365), ArchiveSettings(mode="keep"))
        outcome, finished = {}, threading.Event()

        def prune() -> None:
            began = time.perf_counter()
            outcome["removed"] = retention.run_once()
            outcome["seconds"] = time.perf_counter() - began
            finished.set()

        pruner = threading.Thread(target=prune)
        pruner.start()
        busy = _writer(engine, 0, 20_000_000, until=finished)  # exactly while retention runs
        pruner.join()
        print(f"retention removed {outcome['removed'].describe()} in {outcome['seconds']:.1f} s "
              f"(file now {db.stat().st_size / 2**20:.0f} MB)")
        for label, values in (("writer alone", idle), ("during retention", busy)):
            print(f"{label:<18} commits {len(values):>5}  p50 {_p(values, 50):6.2f} ms  p99 {_p(values, 99):6.2f} ms")
        print(f"p99 during retention / alone: {_p(busy, 99) / _p(idle, 99):.2f}x (target < 2x)")


if __name__ == "__main__":
    main()

"""Start-up of the reader commands engineers type all day: ``inspectd history``, ``stats`` and ``alerts``.

Builds a SQLite store of N rows (default 10,000; through the real migrations, 2 cameras, ~10 % anomalous with an
alert each) and times each command end to end as a fresh process (interpreter start, imports, the query,
printing), the median of R runs. Beside them, the floor no reader can go under: the interpreter with nothing
imported, and with SQLAlchemy Core imported (what the readers query with); and, for comparison, SQLAlchemy's ORM,
pydantic and PyYAML (what they imported before they read the store through Core and the settings only when a
config is read). Threads are pinned to one (other processes share the cores).

Bytecode: an installed box writes each module's ``.pyc`` once and reads it at every later start. Where
``PYTHONDONTWRITEBYTECODE`` is set (some CI and development shells) inspectd's modules would be compiled from
source at every run, ~0.1 s that no user pays; so the package is compiled into its ``__pycache__`` once
(``compileall``) before anything is timed, and the output says so.

The commands are timed with ``--db`` (the store's URL, no config read) and once with ``--config`` naming a
minimal config of that store: the validated settings (pydantic, PyYAML) are what that start adds.
Run: python benchmarks/cli_startup.py [--rows N] [--runs R]
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inspectd.store.database import migrate, open_engine  # noqa: E402


def fill(path: Path, rows: int) -> None:
    engine = open_engine(f"sqlite:///{path}")
    migrate(engine)
    raw = engine.raw_connection()
    cursor = raw.cursor()
    rng = random.Random(0)
    start = datetime.utcnow() - timedelta(days=7)
    for i in range(1, rows + 1):
        anomalous = rng.random() < 0.1
        at = (start + timedelta(seconds=i * 60)).isoformat(sep=" ")
        cursor.execute(
            "INSERT INTO inspections (id, created_at, camera, source_path, archived_path, sha256, size_bytes, verdict,"
            " score, threshold, reasoning, reasoning_tokens, tokens_used, latency_ms) VALUES "
            "(?, ?, ?, ?, ?, ?, 1000, ?, ?, 0.5, ?, 12, 3, 120.0)",
            (i, at, f"line{i % 2}", f"/srv/drop/part-{i}.png", f"/srv/archive/part-{i}.png", f"{i:064x}",
             "anomalous" if anomalous else "normal", 0.9 if anomalous else 0.1,
             "a thin crack near the upper left of the tile surface" if anomalous else "the surface is clean"))
        if anomalous:
            cursor.execute(
                "INSERT INTO alerts (inspection_id, rule, channel, camera, idempotency_key, payload, status, attempts,"
                " next_attempt_at, created_at) VALUES (?, 'defect', 'hook', ?, ?, '{}', ?, 1, ?, ?)",
                (i, f"line{i % 2}", f"k{i}", "failed" if i % 3 == 0 else "delivered", at, at))
    raw.commit()
    raw.close()
    engine.dispose()


def median_s(argv: list[str], runs: int, env: dict) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, cwd=REPO)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{argv} failed: {done.stderr.decode()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    compiled = compileall.compile_dir(REPO / "inspectd", quiet=1)  # as an installed box has them: see the docstring
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store.db"
        fill(store, args.rows)
        url = f"sqlite:///{store}"
        cli = [sys.executable, "-m", "inspectd.cli"]
        floor = median_s([sys.executable, "-c", "pass"], args.runs, env)
        core = median_s([sys.executable, "-c", "import sqlalchemy"], args.runs, env)
        libraries = median_s([sys.executable, "-c", "import sqlalchemy.orm, pydantic, yaml"], args.runs, env)
        print(f"store: {args.rows} rows; median of {args.runs} runs, each a fresh process; inspectd's bytecode "
              f"compiled into __pycache__ first ({'ok' if compiled else 'FAILED'}), as an installed box has it")
        print(f"{'python -c pass':<44} {floor:6.3f} s")
        print(f"{'import sqlalchemy (Core)':<44} {core:6.3f} s   the readers' floor")
        print(f"{'import sqlalchemy.orm, pydantic, yaml':<44} {libraries:6.3f} s   what the readers no longer "
              f"import with --db")
        config = Path(folder) / "inspectd.yaml"
        config.write_text(f"model:\n  bundle: bundle\nstore:\n  url: {url}\n", encoding="utf-8")
        for command in (["history"], ["stats"], ["alerts"], ["history", "--format", "json", "--limit", "200"]):
            seconds = median_s([*cli, *command, "--db", url], args.runs, env)
            print(f"{'inspectd ' + ' '.join(command):<44} {seconds:6.3f} s   {seconds / core:4.2f}x the Core import "
                  f"alone")
        seconds = median_s([*cli, "--config", str(config), "history"], args.runs, env)
        print(f"{'inspectd --config C history':<44} {seconds:6.3f} s   {seconds / core:4.2f}x the Core import alone "
              f"(the settings validated)")


if __name__ == "__main__":
    main()

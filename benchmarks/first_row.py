"""A newcomer's first run: seconds from ``inspectd run`` to the ready line and to the first row in the store.

Starts the real daemon (subprocess, OMP_NUM_THREADS=1) on a copy of the shipped config/inspectd.yaml in a temp
folder laid out like the checkout (config/inspectd.yaml, var/ beside it; model.bundle pointed at models/tiny-cgro),
drops one fresh synthetic image into its drop folder as soon as the daemon is ready (``--drop-at-start``: at once,
as a camera would), and prints the seconds to the ready line, to the first row, and each loading step of the log
with its offset from the start. The target (issue: a newcomer's first ten minutes) is <= 30 s to the first row
from a warm .venv.

Run: OMP_NUM_THREADS=1 python benchmarks/first_row.py [--runs 1] [--drop-at-start]
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "models" / "tiny-cgro"
TARGET_S = 30.0
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")


def shipped_config(root: Path) -> Path:
    """config/inspectd.yaml as shipped, at root/config, its bundle the checkout's (its var/ is then root/var)."""
    settings = yaml.safe_load((REPO / "config" / "inspectd.yaml").read_text())
    settings["model"]["bundle"] = str(BUNDLE)
    folder = root / "config"
    folder.mkdir()
    path = folder / "inspectd.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def drop_one(folder: Path) -> None:
    """One fresh synthetic part, written under a hidden name and renamed in, as demo-feed does."""
    from inspectd.data.synthetic import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    sample = make_sample(time.time_ns() % 1_000_000_000, 168, anomalous=True)
    temp = folder / ".first.png.part"
    sample.image.save(temp, format="PNG")
    os.rename(temp, folder / "first.png")


def rows(db: Path) -> int:
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        return connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
    except sqlite3.OperationalError:  # not created or not migrated yet
        return 0
    finally:
        connection.close()


def one_run(drop_at_start: bool, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="inspectd-first-row-") as folder:
        root = Path(folder)
        config = shipped_config(root)
        drop, db = root / "var" / "drop", root / "var" / "inspectd.db"
        log_path = root / "daemon.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("INSPECTD_CONFIG", None)
        with log_path.open("w") as log:
            started_wall = time.time()
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "--config", str(config), "run"],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        ready_s = row_s = None
        try:
            if drop_at_start:
                drop_one(drop)
            deadline = started + timeout_s
            while time.perf_counter() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
                if ready_s is None and "inspectd ready" in log_path.read_text():
                    ready_s = time.perf_counter() - started
                    if not drop_at_start:
                        drop_one(drop)
                if ready_s is not None and rows(db):
                    row_s = time.perf_counter() - started
                    break
                time.sleep(0.05)
            else:
                raise SystemExit(f"no row within {timeout_s} s:\n{log_path.read_text()[-4000:]}")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        steps = []
        for line in log_path.read_text().splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            steps.append((stamp - started_wall, match.group(3), match.group(4)))
            if "inspectd ready" in line:
                break
        return {"ready_s": ready_s, "row_s": row_s, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="daemon starts (each on a fresh temp folder)")
    parser.add_argument("--drop-at-start", action="store_true", help="drop the image at once, not when ready")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args()
    print(f"daemon on the shipped config (bundle {BUNDLE.name}), OMP_NUM_THREADS=1, {os.cpu_count()} cores, "
          f"image dropped {'at start' if args.drop_at_start else 'when ready'}")
    results = []
    for number in range(1, args.runs + 1):
        result = one_run(args.drop_at_start, args.timeout)
        results.append(result)
        print(f"run {number}: ready after {result['ready_s']:.1f} s, first row after {result['row_s']:.1f} s")
        for offset, logger, message in result["steps"]:
            print(f"  {offset:6.1f} s  {logger}: {message[:150]}")
    ready = statistics.median(r["ready_s"] for r in results)
    row = statistics.median(r["row_s"] for r in results)
    print(f"median of {len(results)}: ready {ready:.1f} s, first row {row:.1f} s; "
          f"ratio first row / target {row / TARGET_S:.2f} (target <= 1: {TARGET_S:.0f} s)")


if __name__ == "__main__":
    main()

"""A newcomer's first run (make run): the daemon says what it is loading, and the demo feed waits for it.

One real daemon serves the first tests: ``demo-feed --wait-ready`` is started before it (and a stale ready file,
left by a "crashed" daemon whose pid is gone, is in place), the daemon is started once the feed waits, and the test
watches the drop folder until the daemon is ready. No file may appear before that; all of them after.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config

pytestmark = pytest.mark.slow

FEED_COUNT = 3
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("NOTIFY_SOCKET", None)
    return env


def _feed(config: Path, *extra: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "inspectd.cli", "--config", str(config), "demo-feed",
                                 "--wait-ready", *extra], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env())


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped): what a crashed daemon leaves in its ready file."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_ready_file(path: Path, pid: int, process_start: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": "ready", "pid": pid, "process_start": process_start, "bundle": "old",
                                "folders": []}))


def _stamp(line: str) -> float:
    return datetime.strptime(_STAMP.match(line).group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class FirstRun:
    log: str  # the daemon's
    feed_log: str
    feed_code: int | None
    early: list[str]  # files seen in the drop folder before the daemon was ready
    ready_file: dict | None  # while the daemon ran
    ready_file_after_stop: bool
    rows: int
    daemon_pid: int
    stale_pid: int


@pytest.fixture(scope="module")
def first_run(random_bundle, tmp_path_factory) -> FirstRun:
    root = tmp_path_factory.mktemp("first-run")
    config = write_config(root, random_bundle)
    drop, db = root / "drop-line1", root / "var" / "inspectd.db"
    ready_path = db.with_name("inspectd.db.ready")
    stale_pid = _dead_pid()
    _stale_ready_file(ready_path, stale_pid)
    feed_log = root / "feed.log"
    feed = _feed(config, "--count", str(FEED_COUNT), "--interval", "0.3", "--wait-timeout", "120", log=feed_log)
    daemon = None
    try:
        wait_for(lambda: "waiting for the daemon" in feed_log.read_text() or feed.poll() is not None, 60,
                 "the feed waits for the daemon")
        time.sleep(1.0)  # a feed that did not wait would drop its files now: the folder is watched below
        daemon = DaemonProcess(config)
        early: list[str] = []
        while not daemon.notify.seen("READY=1"):
            early += [p.name for p in drop.iterdir() if p.name not in early]
            if daemon.proc.poll() is not None:
                raise AssertionError(f"daemon exited {daemon.proc.returncode}:\n{daemon.output()}")
            time.sleep(0.02)
        ready_file = json.loads(ready_path.read_text()) if ready_path.exists() else None
        feed_code = feed.wait(timeout=120)
        if feed_code == 0:
            wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] >= FEED_COUNT, 120,
                     f"{FEED_COUNT} rows")
        rows = db_rows(db, "SELECT count(*) FROM inspections")[0][0]
        pid = daemon.proc.pid
        assert daemon.stop() == 0, daemon.output()
        return FirstRun(daemon.output(), feed_log.read_text(), feed_code, early, ready_file, ready_path.exists(),
                        rows, pid, stale_pid)
    finally:
        if feed.poll() is None:
            feed.kill()
            feed.wait()
        if daemon is not None and daemon.proc.poll() is None:
            daemon.kill9()


def test_the_daemon_logs_its_loading_steps_in_order_before_the_ready_line(first_run):
    lines = first_run.log.splitlines()
    steps = ["starting the model process", "model process started: torch", "verifying bundle tiny-random: ",
             "hashes verified (", "model loaded on cpu (", "store sqlite:", "inspectd ready: "]
    found = []
    for step in steps:
        numbers = [i for i, line in enumerate(lines) if step in line]
        assert len(numbers) == 1, f"{step!r} logged {len(numbers)} times:\n{first_run.log}"
        found.append(numbers[0])
    assert found == sorted(found), f"steps out of order {found}:\n{first_run.log}"
    for number in (found[1], *found[3:-1]):  # each step that ends, with its seconds
        assert re.search(r"\(\d+\.\d s\)$", lines[number]), lines[number]
    assert re.search(r"\(started in \d+\.\d s\)$", lines[found[-1]]), lines[found[-1]]
    assert re.search(r"verifying bundle tiny-random: \d+ files, \d+\.\d MB$", lines[found[2]]), lines[found[2]]
    assert all(" INFO " in lines[number] for number in found), first_run.log
    # a handful of lines, no spam: nothing else before the ready line but the stale file's removal
    assert found[-1] < 10, first_run.log


def test_demo_feed_waits_for_the_daemon_then_drops_every_file(first_run):
    assert first_run.early == [], f"dropped before the daemon was ready: {first_run.early}"
    assert first_run.feed_code == 0, first_run.feed_log
    assert first_run.rows == FEED_COUNT, (first_run.log, first_run.feed_log)
    ready_at = _stamp(next(line for line in first_run.log.splitlines() if "inspectd ready: " in line))
    dropped = [_stamp(line) for line in first_run.feed_log.splitlines() if " dropped demo-" in line]
    assert len(dropped) == FEED_COUNT, first_run.feed_log
    assert min(dropped) >= ready_at, (first_run.log, first_run.feed_log)
    assert f"daemon ready (pid {first_run.daemon_pid}, bundle tiny-random on cpu)" in first_run.feed_log


def test_the_ready_file_names_the_live_daemon_and_is_removed_at_the_stop(first_run):
    info = first_run.ready_file
    assert info is not None, first_run.log
    assert info["state"] == "ready" and info["pid"] == first_run.daemon_pid and info["bundle"] == "tiny-random"
    assert info["device"] == "cpu" and len(info["folders"]) == 1 and info["startup_s"] > 0
    assert not first_run.ready_file_after_stop
    # the crashed run's file was not taken as ready (by the feed), and the daemon removed it when it started
    assert f"left by pid {first_run.stale_pid}, which is not running" in first_run.feed_log
    assert "removed a stale ready file " in first_run.log and f"left by pid {first_run.stale_pid}" in first_run.log


def test_a_stale_ready_file_is_not_taken_as_ready_and_the_wait_gives_up_clearly(random_bundle, tmp_path):
    config = write_config(tmp_path, random_bundle)
    ready_path = tmp_path / "var" / "inspectd.db.ready"
    _stale_ready_file(ready_path, _dead_pid())
    feed = _feed(config, "--count", "1", "--wait-timeout", "2", log=tmp_path / "feed.log")
    code = feed.wait(timeout=60)
    out = (tmp_path / "feed.log").read_text()
    assert code == 2, out
    assert "the daemon never became ready within 2 s" in out and str(ready_path) in out, out
    assert "which is not running" in out, out
    assert list((tmp_path / "drop-line1").iterdir()) == []


def test_a_pid_reused_by_another_process_is_not_taken_for_the_daemon(tmp_path):
    from inspectd.daemon.ready_file import process_start, read_ready

    path = tmp_path / "inspectd.db.ready"
    _stale_ready_file(path, os.getpid(), process_start=str(int(process_start(os.getpid())) - 1))
    state = read_ready(path)
    assert not state.ready and "not running" in state.stale
    _stale_ready_file(path, os.getpid(), process_start=process_start(os.getpid()))
    assert read_ready(path).ready

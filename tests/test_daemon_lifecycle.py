"""The daemon's start and its model process's end, as systemd sees them: a real subprocess, SQLite file and bundle.

A corrupt bundle must be refused before the store is created or migrated; a model process that dies while no file
is queued must be noticed at once (health 503, exit 1 for systemd to restart), not when the next part arrives.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import _model_process
from tests.test_metrics_endpoint import _free_port

pytestmark = pytest.mark.slow


def _health(port: int) -> tuple[int, str] | None:
    """``/healthz``'s status and body, or None when nothing answers (the daemon is gone)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def test_the_model_process_dying_while_idle_makes_the_daemon_exit_within_a_watchdog_interval(random_bundle,
                                                                                            tmp_path):
    port = _free_port()
    config = write_config(tmp_path, random_bundle, metrics={"enabled": True, "port": port})
    watchdog_s = 6.0  # WatchdogSec: systemd would kill a daemon that stops pinging after this long
    daemon = DaemonProcess(config, watchdog_usec=int(watchdog_s * 1e6))
    answers: list[tuple[int, str]] = []
    try:
        daemon.wait_ready()
        wait_for(lambda: _health(port) == (200, "ok\n"), 30, "healthy while idle")
        os.kill(_model_process(daemon), signal.SIGKILL)  # no file queued: nothing else would notice
        killed = time.monotonic()
        while daemon.proc.poll() is None and time.monotonic() - killed < 30:
            answer = _health(port)
            if answer is not None:
                answers.append(answer)
            time.sleep(0.02)
        elapsed = time.monotonic() - killed
        code = daemon.proc.wait(timeout=30)
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
    log = daemon.output()
    assert code == 1, log
    assert elapsed < watchdog_s, f"exited {elapsed:.1f} s after the kill:\n{log}"
    assert "model process is gone (exit code -9)" in log and "while idle" in log, log
    unhealthy = [body for status, body in answers if status == 503]
    assert unhealthy and all("model process is gone" in body for body in unhealthy), answers


def _tamper(bundle: Path, copy: Path) -> Path:
    """A copy of ``bundle`` whose weights file has one byte changed; returns the weights file."""
    shutil.copytree(bundle, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    return weights


def _run(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(config), "run"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _store_at(db: Path, revision: str) -> None:
    """A SQLite store migrated only to ``revision``: what an older inspectd left behind."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from inspectd.store.database import MIGRATIONS

    db.parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_a_tampered_bundle_is_refused_before_the_store_is_created_or_migrated(random_bundle, tmp_path):
    weights = _tamper(random_bundle, tmp_path / "tampered")
    config = write_config(tmp_path, tmp_path / "tampered")
    db = tmp_path / "var" / "inspectd.db"

    fresh = _run(config)
    assert fresh.returncode == 2, fresh.stderr
    assert str(weights) in fresh.stderr and "does not match" in fresh.stderr, fresh.stderr
    assert not db.exists(), "no store is created for a daemon that cannot start"

    _store_at(db, "0001")
    before = db.read_bytes()
    existing = _run(config)
    assert existing.returncode == 2, existing.stderr
    assert str(weights) in existing.stderr, existing.stderr
    assert db.read_bytes() == before, "an older store is not migrated by a daemon that cannot start"
    assert db_rows(db, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert not Path(f"{db}-wal").exists()


def test_the_daemons_main_process_never_loads_torch_or_transformers(tmp_path):
    """The model runs in its own process: the main one (watch, queue, store, alerts) stays small and starts fast.
    Read from the running daemon itself, after a part went through, a reload and all: its memory maps and modules."""
    from tests.test_daemon import png_bytes

    config = write_config(tmp_path, REPO / "models" / "tiny-cgro")
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        (tmp_path / "drop-line1" / "part.png").write_bytes(png_bytes(92_001))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1, 60, "1 row")
        daemon.proc.send_signal(signal.SIGHUP)  # unchanged bundle: rehashed and kept, in the main process
        wait_for(lambda: "model settings unchanged" in daemon.output(), 60, "reload done")
        maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
        assert "/torch/" not in maps, "torch is loaded in the daemon's main process"
        model = _model_process(daemon)
        assert "/torch/" in Path(f"/proc/{model}/maps").read_text(), "the model process is where torch lives"
    finally:
        assert daemon.stop() == 0

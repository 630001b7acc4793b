"""Disk guard: below the free-space floor no file is taken (nothing lost), an alert goes out, and it resumes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from inspectd.config import load_settings
from inspectd.daemon.disk_guard import DiskGuard, free_bytes
from inspectd.daemon.service import Daemon
from inspectd.daemon.systemd import SystemdNotifier
from tests.daemon_harness import NotifySocket, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes

MiB = 2**20


class FreeSpace:
    """The free space the test decides, for every guarded folder (the interface the daemon measures through)."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.asked: set[Path] = set()

    def __call__(self, path: Path) -> int:
        self.asked.add(Path(path))
        return self.free


def test_the_real_probe_pauses_below_a_floor_above_the_free_space(format_bundle, tmp_path):
    config = write_config(tmp_path, format_bundle, disk_guard={"min_free_mb": 10**12})
    settings = load_settings(config)
    guard = DiskGuard(settings)
    assert set(guard.paths) == {tmp_path / "var", tmp_path / "archive", tmp_path / "failed"}
    change = guard.check()
    assert change is not None and change.paused and guard.paused.is_set()
    # the real free space (other processes write meanwhile: two reads a moment apart differ by a few KiB)
    assert 0 < change.readings[0].free and abs(change.readings[0].free - free_bytes(tmp_path / "archive")) < 64 * MiB
    assert "MiB free" in change.describe()
    assert guard.check() is None, "a pause is reported once"


def _alerts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow
def test_below_the_floor_files_wait_in_the_folder_and_are_taken_when_space_returns(format_bundle, tmp_path):
    config = write_config(
        tmp_path, format_bundle,
        alerts={"channels": [{"type": "log", "name": "ops", "path": "var/ops-alerts.jsonl"}]},
        disk_guard={"min_free_mb": 100, "check_interval_s": 0.2, "channels": ["ops"]},
    )
    db, drop, alerts = tmp_path / "var" / "inspectd.db", tmp_path / "drop-line1", tmp_path / "var" / "ops-alerts.jsonl"
    space = FreeSpace(10_000 * MiB)
    notify = NotifySocket()
    daemon = Daemon(load_settings(config), SystemdNotifier({"NOTIFY_SOCKET": str(notify.path)}), free_space=space)
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: notify.seen("READY=1"), 120, "daemon ready")
        (drop / "before.png").write_bytes(png_bytes(80_001))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1, 60, "first row")

        space.free = 50 * MiB
        wait_for(lambda: [a["event"] for a in _alerts(alerts)] == ["disk_low"], 30, "disk_low alert")
        low = _alerts(alerts)[0]
        assert low["floor_bytes"] == 100 * MiB and set(low["free_bytes"].values()) == {50 * MiB}
        assert any("PAUSED" in m for m in notify.messages)
        for i in range(3):
            (drop / f"during-{i}.png").write_bytes(png_bytes(80_010 + i))
        time.sleep(3)  # several checks and a reconcile pass: still nothing taken
        assert db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1
        assert sorted(p.name for p in drop.iterdir()) == ["during-0.png", "during-1.png", "during-2.png"]

        space.free = 105 * MiB  # above the floor but within its 10 % margin: stays paused
        time.sleep(1.5)
        assert db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1

        space.free = 10_000 * MiB
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 4, 60, "the waiting files")
        wait_for(lambda: [a["event"] for a in _alerts(alerts)] == ["disk_low", "disk_ok"], 30, "disk_ok alert")
    finally:
        daemon.request_stop()
        runner.join(timeout=120)
        notify.close()
    assert not runner.is_alive()
    assert list(drop.iterdir()) == []
    assert {tmp_path / "var", tmp_path / "archive", tmp_path / "failed"} <= space.asked
    statuses = db_rows(db, "SELECT rule, status, inspection_id FROM alerts ORDER BY id")
    assert statuses == [("disk_low", "delivered", None), ("disk_ok", "delivered", None)]

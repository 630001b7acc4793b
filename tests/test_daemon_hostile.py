"""A box that runs for years: crash windows, hostile names and links in the drop folder, stopping.

Each test runs the real daemon as a subprocess on a real SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes

pytestmark = pytest.mark.slow


def _count(db: Path) -> int:
    return db_rows(db, "SELECT count(*) FROM inspections")[0][0]


def _show_overlay(config: Path, inspection_id: int, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inspectd.cli", "--config", str(config), "show", str(inspection_id), "--overlay",
         str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _forget_archived_paths(db: Path) -> None:
    """The state a crash leaves between the move into the archive and the write of its path."""
    connection = sqlite3.connect(db, timeout=10)
    with connection:
        connection.execute("UPDATE inspections SET archived_path = NULL")
    connection.close()


def test_rows_left_without_archived_path_by_a_crash_are_repaired(format_bundle, tmp_path):
    config = write_config(tmp_path, format_bundle)
    db, drop = tmp_path / "var" / "inspectd.db", tmp_path / "drop-line1"
    first_bytes, second_bytes = png_bytes(31), png_bytes(32)
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        (drop / "part.png").write_bytes(first_bytes)
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections WHERE archived_path IS NOT NULL")[0][0] == 1,
                 60, "first part archived")
        (drop / "part.png").write_bytes(second_bytes)  # same name, other bytes: archived as part.2.png
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections WHERE archived_path IS NOT NULL")[0][0] == 2,
                 60, "second part archived")
    finally:
        assert daemon.stop() == 0
    archived = dict(db_rows(db, "SELECT sha256, archived_path FROM inspections"))
    assert {Path(p).name for p in archived.values()} == {"part.png", "part.2.png"}

    _forget_archived_paths(db)
    restarted = DaemonProcess(config)
    try:
        restarted.wait_ready()  # repaired before the daemon says it is ready
        repaired = dict(db_rows(db, "SELECT sha256, archived_path FROM inspections"))
        assert repaired == archived, "each row gets back the file with its own bytes"
        _forget_archived_paths(db)  # the same damage while running: the reconcile pass (every 2 s) repairs it
        wait_for(lambda: dict(db_rows(db, "SELECT sha256, archived_path FROM inspections")) == archived, 30,
                 "repaired by the reconcile pass")
    finally:
        assert restarted.stop() == 0
    assert "archived path repaired" in restarted.output()
    first_id = db_rows(db, "SELECT id FROM inspections WHERE sha256 = ?", (hashlib.sha256(first_bytes).hexdigest(),))
    shown = _show_overlay(config, first_id[0][0], tmp_path / "overlay.png")
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "overlay.png").stat().st_size > 0


def test_a_file_name_that_is_not_utf8_fails_nobody(format_bundle, tmp_path):
    config = write_config(tmp_path, format_bundle)
    db, drop = tmp_path / "var" / "inspectd.db", tmp_path / "drop-line1"
    latin1 = os.path.join(os.fsencode(drop), b"Pr\xfcfung.png")
    with open(latin1, "wb") as handle:
        handle.write(png_bytes(41))
    (drop / "neighbour.png").write_bytes(png_bytes(42))  # same batch: present before the start-up scan
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections WHERE archived_path IS NOT NULL")[0][0] == 2,
                 60, "both files recorded and archived")
    finally:
        assert daemon.stop() == 0
    rows = {Path(r[0]).name: r[1:] for r in db_rows(db, "SELECT source_path, verdict, archived_path FROM inspections")}
    assert set(rows) == {"Pr%FCfung.png", "neighbour.png"}
    verdict, archived = rows["Pr%FCfung.png"]
    assert verdict in ("normal", "anomalous")
    assert Path(archived).name == "Pr%FCfung.png" and Path(archived).is_file(), "archived under a UTF-8 name"
    assert os.listdir(drop) == []
    assert "UnicodeEncodeError" not in daemon.output()


def test_symbolic_links_are_refused_and_their_targets_never_read_or_copied(format_bundle, tmp_path):
    other_fs = Path("/dev/shm")
    cross = other_fs.is_dir() and os.access(other_fs, os.W_OK) and other_fs.stat().st_dev != tmp_path.stat().st_dev
    failed_root = Path(os.environ.get("TMPDIR_SHM", "/dev/shm")) / f"inspectd-failed-{os.getpid()}-{time.time_ns()}" \
        if cross else tmp_path / "failed"
    config = write_config(tmp_path, format_bundle, archive={"failed_folder": str(failed_root)})
    db, drop = tmp_path / "var" / "inspectd.db", tmp_path / "drop-line1"
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret_bytes = png_bytes(51)  # a valid image: a daemon that followed links would inspect it
    secret.write_bytes(secret_bytes)
    os.symlink(secret, drop / "left-behind.png")  # present before the start
    (drop / "y.png").mkdir()  # a folder with an image's name
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        staging = tmp_path / "staging.png"
        os.symlink(secret, staging)
        os.rename(staging, drop / "renamed-in.png")  # a link renamed into the folder: an inotify move event
        (drop / "real.png").write_bytes(png_bytes(52))
        wait_for(lambda: _count(db) >= 3, 60, "three rows")
        time.sleep(5)  # two reconcile passes: the folder is not offered again, nor logged twice
    finally:
        assert daemon.stop() == 0
        output = daemon.output()
    try:
        rows = {Path(r[0]).name: r[1:] for r in db_rows(
            db, "SELECT source_path, verdict, error, archived_path, sha256 FROM inspections")}
        assert set(rows) == {"left-behind.png", "renamed-in.png", "real.png"}
        for name in ("left-behind.png", "renamed-in.png"):
            verdict, error, archived, sha256 = rows[name]
            assert verdict == "failed" and "symbolic link refused" in error
            assert sha256 != hashlib.sha256(secret_bytes).hexdigest(), "the target's bytes were never hashed"
            moved = Path(archived)
            assert moved.parent == failed_root / "line1"
            assert moved.is_symlink() and os.readlink(moved) == str(secret), "the link moved, not its target's bytes"
            assert "symbolic link refused" in json.loads(Path(archived + ".error.json").read_text())["reason"]
        assert rows["real.png"][0] in ("normal", "anomalous")
        regular_copies = [p for p in failed_root.rglob("*") if p.is_file() and not p.is_symlink()
                          and p.read_bytes() == secret_bytes]
        assert regular_copies == []
        assert secret.read_bytes() == secret_bytes
        assert (drop / "y.png").is_dir()
        assert len(re.findall(r"y\.png in the drop folder is a folder", output)) == 1, output
    finally:
        if cross:
            subprocess.run(["rm", "-rf", str(failed_root)], check=False)


def test_sigterm_finishes_the_batch_in_flight_starts_no_other_and_exits_at_once(format_bundle, tmp_path):
    config = write_config(tmp_path, format_bundle, model={"batch_size": 4})
    config.write_text(config.read_text() + "log_level: DEBUG\n")
    db, drop = tmp_path / "var" / "inspectd.db", tmp_path / "drop-line1"
    for i in range(24):
        (drop / f"f{i:02d}.png").write_bytes(png_bytes(60 + i))
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        wait_for(lambda: _count(db) >= 1, 60, "the first row")
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.wait(timeout=60)
        exited = time.time()
    finally:
        code = daemon.stop()
    assert code == 0
    output = daemon.output()
    stop_line = re.search(r"stopping: no new files; finishing batch #(\d+)", output)
    last_started = int(stop_line.group(1))
    batches = {int(number): names.split(", ")
               for number, names in re.findall(r"batch #(\d+) of \d+: (.*)", output)}
    assert max(batches) == last_started, "no batch starts after the stop request"
    assert all(len(names) <= 4 for names in batches.values())
    started = {name for names in batches.values() for name in names}
    recorded_after = re.findall(r"INFO inspectd\.recorder: #\d+ line1 (\S+) ", output[stop_line.start():])
    assert set(recorded_after) <= started, "every row written after the stop request is of a batch started before it"
    recorded = _count(db)
    assert recorded == len(started), "every started file gets its row before the process exits"
    assert recorded < 24 and len(os.listdir(drop)) == 24 - recorded, "unstarted files stay in the drop folder"
    assert set(os.listdir(drop)) == {f"f{i:02d}.png" for i in range(24)} - started
    lingered = exited - _log_time(output, "stopped after recording")
    assert lingered < 1.0, f"the process exited {lingered:.2f} s after saying it had stopped"


def _log_time(output: str, message: str) -> float:
    """The time of the log line holding ``message`` (logging's asctime, local time, millisecond part)."""
    line = next(line for line in output.splitlines() if message in line)
    stamp, millis = line[:23].split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def test_a_file_renamed_in_from_another_folder_is_taken_at_once(format_bundle, tmp_path):
    """FTP servers and camera software write elsewhere and rename in: no close event ever follows."""
    config = write_config(tmp_path, format_bundle)
    db, drop = tmp_path / "var" / "inspectd.db", tmp_path / "drop-line1"
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        (incoming / "shot.png").write_bytes(png_bytes(71))
        renamed_at = time.time()
        os.rename(incoming / "shot.png", drop / "shot.png")
        wait_for(lambda: _count(db) == 1, 60, "the renamed file recorded")
        waited = time.time() - renamed_at
    finally:
        assert daemon.stop() == 0
    assert waited < 30, f"recorded {waited:.0f} s after the rename (the close-event grace is 300 s)"

"""The daemon end to end: a real subprocess, SQLite file, HTTP receiver and tiny model."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from inspectd.data.synthetic import make_sample
from tests.daemon_harness import DaemonProcess, Receiver, db_rows, wait_for, write_config

pytestmark = pytest.mark.slow


def png_bytes(seed: int, size: int = 96) -> bytes:
    buffer = io.BytesIO()
    make_sample(seed, size).image.save(buffer, format="PNG")
    return buffer.getvalue()


def drop_direct(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


def drop_slowly(folder: Path, name: str, data: bytes, pause: float = 0.4) -> None:
    """A camera writing in chunks with pauses longer than nothing, shorter than stable_s."""
    with open(folder / name, "wb") as handle:
        third = len(data) // 3
        for start in (0, third, 2 * third):
            handle.write(data[start : start + third] if start < 2 * third else data[start:])
            handle.flush()
            os.fsync(handle.fileno())
            time.sleep(pause)


def drop_renamed(folder: Path, name: str, data: bytes) -> None:
    temp = folder / f".{name}.part"
    temp.write_bytes(data)
    os.rename(temp, folder / name)


def test_two_hundred_files_each_recorded_once_while_readers_poll(format_bundle, tmp_path):
    receiver = Receiver()
    config = write_config(
        tmp_path,
        format_bundle,
        cameras=("line1", "line2"),
        alerts={
            "channels": [{"type": "webhook", "name": "hook", "url": receiver.url}],
            "rules": [{"name": "every", "verdicts": ["anomalous", "normal"], "channels": ["hook"], "cooldown_s": 0}],
        },
    )
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    reader_errors: list[str] = []
    stop_readers = threading.Event()

    def reader():
        while not stop_readers.is_set():
            try:
                connection = sqlite3.connect(db, timeout=10)
                connection.execute("SELECT count(*), max(id) FROM inspections WHERE verdict != 'x'").fetchone()
                connection.execute("SELECT * FROM inspection_daily_stats").fetchall()
                connection.close()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc) and "unable to open" not in str(exc):
                    reader_errors.append(str(exc))
            time.sleep(0.005)

    try:
        daemon.wait_ready()
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for thread in readers:
            thread.start()
        expected: dict[str, str] = {}
        writers = []
        for i in range(200):
            data = png_bytes(10_000 + i)
            name = f"img-{i:03d}.png"
            folder = tmp_path / ("drop-line1" if i % 2 else "drop-line2")
            expected[hashlib.sha256(data).hexdigest()] = name
            mode = i % 3
            if mode == 0:
                drop_direct(folder, name, data)
            elif mode == 1:
                writer = threading.Thread(target=drop_slowly, args=(folder, name, data))
                writer.start()
                writers.append(writer)
            else:
                drop_renamed(folder, name, data)
        for writer in writers:
            writer.join()
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] >= 200, 240, "200 rows")
        time.sleep(2.5)  # a rescan pass after the last file must not add rows
        rows = db_rows(db, "SELECT sha256, source_path, verdict, archived_path, camera FROM inspections")
        assert len(rows) == 200
        assert {r[0] for r in rows} == set(expected), "every file recorded once, by the hash of its full bytes"
        assert not [r for r in rows if r[2] == "failed"], "no file was read half-written"
        for sha, source, _, archived, camera in rows:
            assert Path(source).name == expected[sha] and Path(archived).is_file()
            assert camera == ("line1" if "drop-line1" in source else "line2")
        assert not list((tmp_path / "drop-line1").iterdir()) and not list((tmp_path / "drop-line2").iterdir())
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM alerts WHERE status != 'delivered'")[0][0] == 0, 60,
                 "every alert delivered")
        expected_alerts = db_rows(db, "SELECT count(*) FROM inspections WHERE verdict IN ('anomalous', 'normal')")[0][0]
        assert len(receiver.keys()) == expected_alerts > 0
    finally:
        stop_readers.set()
        code = daemon.stop()
        receiver.close()
    assert code == 0, daemon.output()
    assert daemon.notify.seen("STOPPING=1")
    assert reader_errors == []
    assert "database is locked" not in daemon.output()
    assert sorted(receiver.keys()) == sorted(set(receiver.keys()))


def test_bad_files_become_failed_rows_and_the_daemon_keeps_going(format_bundle, tmp_path):
    config = write_config(tmp_path, format_bundle, images={"max_pixels": 1_000_000, "max_file_bytes": 2_000_000})
    drop = tmp_path / "drop-line1"
    good = png_bytes(5)
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        (drop / "empty.png").write_bytes(b"")
        (drop / "notes.png").write_bytes(b"plain text, not pixels")
        (drop / "truncated.png").write_bytes(good[: len(good) // 2])
        (drop / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(3000))
        Image.new("L", (2000, 1000)).save(drop / "bomb.png")
        (drop / "huge.bin").write_bytes(os.urandom(2_100_000))
        wait_for(lambda: db_rows(tmp_path / "var/inspectd.db", "SELECT count(*) FROM inspections")[0][0] >= 6, 60, "6 rows")
        drop_direct(drop, "good.png", good)
        wait_for(lambda: db_rows(tmp_path / "var/inspectd.db", "SELECT count(*) FROM inspections")[0][0] >= 7, 60, "7 rows")
    finally:
        code = daemon.stop()
    assert code == 0
    rows = {Path(r[0]).name: r[1:] for r in db_rows(
        tmp_path / "var/inspectd.db", "SELECT source_path, verdict, error, archived_path FROM inspections")}
    reasons = {
        "empty.png": "empty",
        "notes.png": "not an image",
        "truncated.png": "truncated",
        "corrupt.jpg": "corrupt",
        "bomb.png": "decompression bomb",
        "huge.bin": "over the limit",
    }
    for name, reason in reasons.items():
        verdict, error, archived = rows[name]
        assert verdict == "failed" and reason in error, (name, error)
        sidecar = Path(archived + ".error.json")
        assert Path(archived).parent == tmp_path / "failed" / "line1"
        assert reason in json.loads(sidecar.read_text())["reason"]
    assert rows["good.png"][0] in ("anomalous", "normal")


def test_kill_9_mid_batch_then_restart_records_every_file_once_and_loses_no_alert(format_bundle, tmp_path):
    receiver = Receiver(secret=b"s3cret")
    (tmp_path / "secret").write_text("s3cret\n")
    config = write_config(
        tmp_path,
        format_bundle,
        alerts={
            "channels": [{"type": "webhook", "name": "hook", "url": receiver.url, "secret_file": "secret"}],
            "rules": [{"name": "all", "verdicts": ["anomalous", "normal", "unknown"], "channels": ["hook"],
                       "cooldown_s": 0}],
        },
    )
    db = tmp_path / "var" / "inspectd.db"
    drop = tmp_path / "drop-line1"
    hashes = set()
    for i in range(40):
        data = png_bytes(20_000 + i)
        hashes.add(hashlib.sha256(data).hexdigest())
        drop_direct(drop, f"f{i:02d}.png", data)  # present before start: found by the start-up scan
    first = DaemonProcess(config)
    first.wait_ready()
    wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] >= 6, 120, "a few rows")
    first.kill9()
    partial = db_rows(db, "SELECT count(*) FROM inspections")[0][0]
    assert partial < 40, "the kill must land mid-run"
    second = DaemonProcess(config)
    try:
        second.wait_ready()
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] >= 40, 120, "40 rows")
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM alerts WHERE status != 'delivered'")[0][0] == 0
                 and db_rows(db, "SELECT count(*) FROM alerts")[0][0] >= 40, 60, "alerts delivered")
        time.sleep(2.5)
    finally:
        assert second.stop() == 0
        receiver.close()
    rows = db_rows(db, "SELECT sha256, archived_path FROM inspections")
    assert len(rows) == 40 and {r[0] for r in rows} == hashes
    assert all(r[1] and Path(r[1]).is_file() for r in rows)
    assert not list(drop.iterdir())
    keys_in_db = {r[0] for r in db_rows(db, "SELECT idempotency_key FROM alerts")}
    assert len(keys_in_db) == 40
    delivered = receiver.keys()
    assert set(delivered) == keys_in_db, "every alert delivered, none invented"
    assert len(delivered) - len(set(delivered)) <= 1, "at most the one alert in flight at the kill is resent"
    assert all(r["signature_ok"] for r in receiver.received)


def test_webhook_outage_is_retried_with_backoff_until_delivered(format_bundle, tmp_path):
    receiver = Receiver()
    receiver.failing = True
    config = write_config(
        tmp_path,
        format_bundle,
        alerts={
            "channels": [{"type": "webhook", "name": "hook", "url": receiver.url, "timeout_s": 2}],
            "rules": [{"name": "all", "verdicts": ["anomalous", "normal", "unknown"], "channels": ["hook"],
                       "cooldown_s": 0}],
            "retry": {"base_s": 0.5, "max_s": 4, "max_attempts": 50},
        },
    )
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        for i in range(3):
            drop_direct(tmp_path / "drop-line1", f"a{i}.png", png_bytes(30_000 + i))
        wait_for(lambda: len(db_rows(db, "SELECT id FROM alerts")) == 3
                 and (db_rows(db, "SELECT min(attempts) FROM alerts")[0][0] or 0) >= 3, 60, "three failed attempts")
        pending = db_rows(db, "SELECT status, attempts, last_error FROM alerts")
        assert len(pending) == 3 and all(s == "pending" and "503" in e for s, _, e in pending)
        receiver.failing = False
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM alerts WHERE status = 'delivered'")[0][0] == 3, 60,
                 "delivery after the outage")
    finally:
        assert daemon.stop() == 0
        receiver.close()
    assert len(receiver.keys()) == 3
    log = daemon.output()
    waits = [float(line.split("next try in ")[1].split(" s")[0]) for line in log.splitlines() if "next try in" in line]
    assert waits and max(waits) > min(waits), "delays grow between attempts"


def test_duplicates_and_systemd_watchdog(format_bundle, tmp_path):
    config = write_config(tmp_path, format_bundle)
    daemon = DaemonProcess(config, watchdog_usec=1_000_000)
    data = png_bytes(40_000)
    try:
        daemon.wait_ready()
        drop_direct(tmp_path / "drop-line1", "first.png", data)
        wait_for(lambda: db_rows(tmp_path / "var/inspectd.db", "SELECT count(*) FROM inspections")[0][0] == 1, 60, "row")
        drop_direct(tmp_path / "drop-line1", "again.png", data)
        wait_for(lambda: "duplicate of inspection #1" in daemon.output(), 30, "duplicate logged")
        time.sleep(1.5)
    finally:
        assert daemon.stop() == 0
    assert db_rows(tmp_path / "var/inspectd.db", "SELECT count(*) FROM inspections")[0][0] == 1
    assert (tmp_path / "archive").rglob("again.png")
    assert daemon.notify.messages.count("WATCHDOG=1") >= 2


def test_polling_observer_with_keep_mode_records_once_and_leaves_files(format_bundle, tmp_path):
    config = write_config(tmp_path, format_bundle, watch={"observer": "polling", "poll_interval_s": 0.2,
                                                          "stable_s": 0.6, "reconcile_interval_s": 1},
                          archive={"mode": "keep"})
    db = tmp_path / "var" / "inspectd.db"
    drop = tmp_path / "drop-line1"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        drop_slowly(drop, "slow.png", png_bytes(50_000), pause=0.3)  # changes faster than stable_s
        drop_renamed(drop, "renamed.png", png_bytes(50_001))
        (drop / ".hidden.png").write_bytes(png_bytes(50_002))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] >= 2, 60, "2 rows")
        time.sleep(3)  # several rescans of the kept files add nothing
    finally:
        assert daemon.stop() == 0
    rows = db_rows(db, "SELECT source_path, verdict, archived_path FROM inspections ORDER BY source_path")
    assert [Path(r[0]).name for r in rows] == ["renamed.png", "slow.png"]
    assert all(r[1] != "failed" and r[2] is None for r in rows)
    assert sorted(p.name for p in drop.iterdir()) == [".hidden.png", "renamed.png", "slow.png"]


def test_sighup_reloads_alert_rules(format_bundle, tmp_path):
    import signal

    import yaml

    config = write_config(tmp_path, format_bundle, alerts={"channels": [{"type": "log", "name": "file",
                                                                          "path": "var/alerts.jsonl"}]})
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        drop_direct(tmp_path / "drop-line1", "before.png", png_bytes(60_000))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1, 60, "first row")
        settings = yaml.safe_load(config.read_text())
        settings["alerts"]["rules"] = [{"name": "all", "verdicts": ["anomalous", "normal", "unknown"],
                                        "channels": ["file"], "cooldown_s": 0}]
        config.write_text(yaml.safe_dump(settings))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded 1 alert rule" in daemon.output(), 20, "reload logged")
        drop_direct(tmp_path / "drop-line1", "after.png", png_bytes(60_001))
        wait_for(lambda: (tmp_path / "var" / "alerts.jsonl").is_file(), 60, "alert written")
        config.write_text("alerts: [broken\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in daemon.output(), 20, "bad reload refused")
    finally:
        assert daemon.stop() == 0
    lines = [json.loads(line) for line in (tmp_path / "var" / "alerts.jsonl").read_text().splitlines()]
    assert [Path(line["source_path"]).name for line in lines] == ["after.png"]
    assert Path(lines[0]["archived_path"]).is_file(), "the alert says where the photo is now"
    assert lines[0]["threshold"] == round(lines[0]["threshold"], 4) and "error" in lines[0]


def _model_process(daemon: DaemonProcess) -> int:
    """The pid of the daemon's model process (its spawned child; multiprocessing's resource tracker is the other)."""
    children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children").read_text().split()
    spawned = [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(spawned) == 1, children
    return spawned[0]


def test_the_model_process_outlives_unit_signals_and_its_death_restarts_the_daemon(format_bundle, tmp_path):
    """The model runs in a process of its own. systemd signals the whole unit on stop: the model process ignores
    it (the daemon finishes the batch in flight, then closes it). If the model process dies, the daemon exits 1 so
    that systemd restarts it, and the file it was given stays in the drop folder."""
    import signal

    config = write_config(tmp_path, format_bundle)
    daemon = DaemonProcess(config)
    db = tmp_path / "var/inspectd.db"
    drop = tmp_path / "drop-line1"
    try:
        daemon.wait_ready()
        model = _model_process(daemon)
        os.kill(model, signal.SIGTERM)
        os.kill(model, signal.SIGINT)
        drop_renamed(drop, "after-signals.png", png_bytes(41_000))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1, 60,
                 "the model process still inspects after SIGTERM and SIGINT")
        os.kill(model, signal.SIGKILL)
        drop_renamed(drop, "after-kill.png", png_bytes(41_001))
        code = daemon.proc.wait(timeout=60)
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
    assert code == 1, daemon.output()
    assert "the model process is gone" in daemon.output()
    assert (drop / "after-kill.png").is_file(), "the file stays for the restarted daemon"
    assert db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 1

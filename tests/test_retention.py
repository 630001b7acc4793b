"""Retention on a real store (SQLite and PostgreSQL) and a real archive folder."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspectd.config import ArchiveSettings, RetentionSettings
from inspectd.daemon.retention import Retention
from inspectd.store.database import migrate, open_engine
from inspectd.store.schema import AlertRow, ArtifactRow, InspectionRow

NOW = datetime(2026, 6, 30, 12, 0, 0)


def _fill(engine, ages_days: list[float], blob_bytes: int = 20_000) -> None:
    with Session(engine) as session, session.begin():
        for i, age in enumerate(ages_days):
            created = NOW - timedelta(days=age)
            row = InspectionRow(created_at=created, camera="c1", source_path=f"/drop/{i}.png", sha256=f"{i:064x}",
                                size_bytes=1, verdict="anomalous", score=0.9, threshold=0.5)
            session.add(row)
            session.flush()
            session.add(ArtifactRow(inspection_id=row.id, map_png=os.urandom(blob_bytes), mask_png=b"m"))
            session.add(AlertRow(inspection_id=row.id, rule="r", channel="hook", camera="c1",
                                 idempotency_key=f"k{i}", payload={}, status="delivered", attempts=1,
                                 next_attempt_at=created, created_at=created))


def _count(engine, table) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(table))


def test_old_maps_then_old_rows_are_deleted_in_batches_and_recent_ones_kept(store_url, tmp_path):
    engine = open_engine(store_url)
    migrate(engine)
    _fill(engine, [400, 300, 100, 40, 20, 10, 1, 0.1] * 30, blob_bytes=2_000)  # 240 rows
    settings = RetentionSettings(maps_days=30, rows_days=365, batch_rows=7, pause_ms=0)
    retention = Retention(engine, settings, ArchiveSettings(mode="keep"), clock=lambda: NOW)
    removed = retention.run_once()
    assert (removed.maps, removed.rows) == (4 * 30, 30), "maps of rows 30+ days old, then rows over a year old"
    assert _count(engine, InspectionRow) == 210 and _count(engine, AlertRow) == 210
    assert _count(engine, ArtifactRow) == 4 * 30, "maps of the last 30 days stay"
    with Session(engine) as session:
        oldest_map = session.scalar(select(func.min(InspectionRow.created_at)).join(
            ArtifactRow, ArtifactRow.inspection_id == InspectionRow.id))
    assert oldest_map >= NOW - timedelta(days=30)
    assert retention.run_once().maps == 0, "a second pass finds nothing"


def test_the_sqlite_file_shrinks(tmp_path):
    db = tmp_path / "store.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate(engine)
    _fill(engine, [60] * 400 + [1] * 100)  # 10 MB of maps
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.stat().st_size
    retention = Retention(engine, RetentionSettings(maps_days=30, pause_ms=0), ArchiveSettings(mode="keep"),
                          clock=lambda: NOW)
    assert retention.run_once().maps == 400
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    after = db.stat().st_size
    assert after < 0.35 * before, f"{before} -> {after} bytes"


def test_archive_by_age_and_by_size_keeps_today(tmp_path):
    archive = ArchiveSettings(folder=tmp_path / "archive", failed_folder=tmp_path / "failed")
    for day, size in (("2026-06-01", 3000), ("2026-06-20", 3000), ("2026-06-29", 3000), ("2026-06-30", 3000)):
        folder = archive.folder / day / "c1"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(b"x" * size)
    (archive.folder / "notes").mkdir()  # not a day: left alone
    old_failed = archive.failed_folder / "c1" / "bad.png"
    old_failed.parent.mkdir(parents=True)
    old_failed.write_bytes(b"y" * 100)
    (archive.failed_folder / "c1" / "fresh.png").write_bytes(b"z")
    month_ago = (NOW - timedelta(days=40) - datetime(1970, 1, 1)).total_seconds()  # NOW is UTC
    os.utime(old_failed, (month_ago, month_ago))
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)

    by_age = Retention(engine, RetentionSettings(archive_days=14), archive, clock=lambda: NOW)
    removed = by_age.run_once()
    assert (removed.files, removed.bytes) == (2, 3100)
    assert sorted(p.name for p in archive.folder.iterdir()) == ["2026-06-20", "2026-06-29", "2026-06-30", "notes"]
    assert [p.name for p in (archive.failed_folder / "c1").iterdir()] == ["fresh.png"]

    by_size = Retention(engine, RetentionSettings(archive_max_gb=5000 / 2**30), archive, clock=lambda: NOW)
    assert by_size.run_once().files == 2
    assert sorted(p.name for p in archive.folder.iterdir()) == ["2026-06-30", "notes"], "today's folder stays"
    assert Path(archive.folder / "2026-06-30" / "c1" / "a.png").is_file()


@pytest.mark.slow
def test_the_daemon_applies_retention_at_start(format_bundle, tmp_path):
    from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config

    config = write_config(tmp_path, format_bundle, retention={"rows_days": 30})
    db = tmp_path / "var" / "inspectd.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate(engine)
    with Session(engine) as session, session.begin():
        session.add(InspectionRow(created_at=datetime.utcnow() - timedelta(days=45), camera="line1",
                                  source_path="/drop/old.png", sha256="0" * 64, size_bytes=1, verdict="normal",
                                  threshold=0.5))
    engine.dispose()
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 0, 30, "old row removed")
    finally:
        assert daemon.stop() == 0
    assert "retention removed 0 map(s), 1 inspection(s)" in daemon.output()

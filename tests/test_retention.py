"""Retention on a real store (SQLite and PostgreSQL) and a real archive folder."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from inspectd.config import ArchiveSettings, RetentionSettings
from inspectd.daemon.archive import Archiver
from inspectd.daemon.retention import Retention
from inspectd.store.database import head_revision, migrate, open_engine
from inspectd.store.schema import AlertRow, ArchiveFileRow, ArtifactRow, InspectionRow, ReviewRow

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


def test_a_challengers_maps_go_at_maps_days_and_its_verdicts_stay(store_url):
    """maps_days covers a challenger's maps too; its verdict, score and reasoning stay for the comparison, and
    rows_days takes its rows with their inspection."""
    from inspectd.store.schema import BundleRow, ChallengerResultRow

    engine = open_engine(store_url)
    migrate(engine)
    _fill(engine, [400, 40, 1])
    with Session(engine) as session, session.begin():
        bundle = BundleRow(sha256="c" * 64, name="challenger", base_model="x", quantization="nf4", path="/b",
                           first_seen=NOW)
        session.add(bundle)
        session.flush()
        for inspection_id in session.scalars(select(InspectionRow.id)):
            session.add(ChallengerResultRow(inspection_id=inspection_id, bundle_id=bundle.id, created_at=NOW,
                                            verdict="normal", score=0.2, threshold=0.5, reasoning="clean",
                                            map_png=b"map", mask_png=b"mask"))
    retention = Retention(engine, RetentionSettings(maps_days=30, rows_days=365, pause_ms=0),
                          ArchiveSettings(mode="keep"), clock=lambda: NOW)
    retention.run_once()
    with Session(engine) as session:
        rows = session.execute(select(InspectionRow.created_at, ChallengerResultRow.verdict,
                                      ChallengerResultRow.map_png).join(
            InspectionRow, InspectionRow.id == ChallengerResultRow.inspection_id)
            .order_by(InspectionRow.created_at)).all()
    assert [(NOW - created).days for created, _, _ in rows] == [40, 1]  # the 400-day row went with its inspection
    assert [(verdict, blob) for _, verdict, blob in rows] == [("normal", None), ("normal", b"map")]


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


def _recorded(engine, archiver: Archiver, name: str, created: datetime, failed: bool = False, size: int = 1000,
              reviews: tuple[str, ...] = (), camera: str = "c1") -> tuple[int, Path]:
    """A photo moved by the real archiver (into the archive, or the failed folder with its sidecar) and its row,
    with maps and an alert, and the given reviews; returns (row id, archived path). Its mtime is ``created``."""
    drop = archiver.settings.folder.parent / "drop"
    drop.mkdir(parents=True, exist_ok=True)
    source = drop / name
    data = os.urandom(size)
    source.write_bytes(data)
    stamp = _epoch(created)
    os.utime(source, (stamp, stamp))
    target = archiver.fail(source, camera, "not an image", None) if failed else archiver.archive(source, camera, created)
    with Session(engine) as session, session.begin():
        row = InspectionRow(created_at=created, camera=camera, source_path=str(source), archived_path=str(target),
                            sha256=hashlib.sha256(data).hexdigest(), size_bytes=size,  # readers check it
                            verdict="failed" if failed else "anomalous", score=None if failed else 0.9,
                            threshold=0.5, reasoning=None if failed else "a scratch near the top",
                            raw_reply=None if failed else "<think>a scratch near the top</think><answer>yes</answer>")
        session.add(row)
        session.flush()
        if not failed:
            session.add(ArtifactRow(inspection_id=row.id, map_png=b"map", mask_png=b"mask", token_maps=b"tokens"))
            session.add(AlertRow(inspection_id=row.id, rule="r", channel="hook", camera=camera,
                                 idempotency_key=f"k-{row.id}", payload={}, status="delivered", attempts=1,
                                 next_attempt_at=created, created_at=created))
        for i, label in enumerate(reviews):
            session.add(ReviewRow(inspection_id=row.id, label=label, note=f"review {i}", reviewer="ana",
                                  created_at=created + timedelta(hours=1 + i)))
        return row.id, target


def _epoch(when: datetime) -> float:
    """A naive UTC time (the store's convention) as a Unix time."""
    return (when - datetime(1970, 1, 1)).total_seconds()


def _archive(tmp_path) -> ArchiveSettings:
    return ArchiveSettings(folder=tmp_path / "archive", failed_folder=tmp_path / "failed")


def _sqlite(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'var' / 'store.db'}")
    migrate(engine)
    return engine


def test_retention_deletes_only_the_files_it_archived(tmp_path, caplog):
    """A file inspectd did not put in the archive or the failed folder stays, whatever its age (``cp -p`` and FTP
    uploads keep old mtimes); the recorded ones older than archive_days go, the newer stay."""
    archive, engine = _archive(tmp_path), _sqlite(tmp_path)
    archiver = Archiver(archive)
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=1)
    old_id, old_photo = _recorded(engine, archiver, "old.png", old)
    _, old_failed = _recorded(engine, archiver, "bad.png", old, failed=True)
    _, recent_photo = _recorded(engine, archiver, "new.png", recent)
    sidecar = old_failed.with_name(old_failed.name + ".error.json")
    sidecar_bytes = sidecar.stat().st_size
    os.utime(sidecar, (_epoch(old), _epoch(old)))
    month_ago = _epoch(NOW - timedelta(days=30))
    theirs = [old_photo.parent / "theirs.png", old_failed.parent / "theirs.png", archive.folder / "notes.txt",
              archive.failed_folder / "theirs.error.json"]
    for path in theirs:
        path.write_bytes(b"not inspectd's")
        os.utime(path, (month_ago, month_ago))

    retention = Retention(engine, RetentionSettings(archive_days=14, pause_ms=0), archive, clock=lambda: NOW)
    with caplog.at_level("INFO", logger="inspectd.retention"):
        removed = retention.run_once()
    assert all(path.is_file() for path in theirs), "files inspectd did not put there are left alone"
    assert not old_photo.exists() and not old_failed.exists() and not sidecar.exists()
    assert recent_photo.is_file()
    assert (removed.files, removed.bytes) == (3, 2000 + sidecar_bytes)
    assert _count(engine, InspectionRow) == 3, "rows stay (no rows_days): only their files went"
    with Session(engine) as session:
        assert session.get(InspectionRow, old_id).photo_removed_at == NOW
    left_alone = [r for r in caplog.records if "left alone" in r.getMessage()]
    assert left_alone and all(str(path) in caplog.text for path in theirs[:2] + theirs[3:])
    caplog.clear()
    with caplog.at_level("INFO", logger="inspectd.retention"):
        again = retention.run_once()
    assert not again and "left alone" not in caplog.text, "a second pass removes nothing and logs nothing again"
    assert all(path.is_file() for path in theirs)


def test_a_photo_outlives_its_row_until_archive_days_and_duplicates_are_known(tmp_path):
    """rows_days deletes a row but not its photo (the archive is kept until archive_days); retention still knows
    that file, and a duplicate archived without a row of its own, and removes both at archive_days."""
    from inspectd.config import AlertSettings
    from inspectd.daemon.items import ReadyFile
    from inspectd.daemon.recorder import InspectionRecorder, Processed
    from inspectd.inspection.result import InspectionResult
    from inspectd.verdict import Verdict
    from inspectd.real.params import RealParams
    from inspectd.store.clock import utcnow

    archive, engine = _archive(tmp_path), _sqlite(tmp_path)
    recorder = InspectionRecorder(engine, None, RealParams(), Archiver(archive), AlertSettings(), save_maps=False)
    drop = tmp_path / "drop"
    drop.mkdir()
    data = os.urandom(500)
    for name in ("part.png", "again.png"):
        (drop / name).write_bytes(data)
        ready = ReadyFile(drop / name, "c1", time.time())
        recorder.record(Processed(ready, hashlib.sha256(data).hexdigest(), len(data),
                                  InspectionResult(str(drop / name), Verdict.NORMAL, 0.5, score=0.1), time.time()))
    files = sorted(p for p in archive.folder.rglob("*") if p.is_file())
    assert [p.name for p in files] == ["again.png", "part.png"], "the second one archived as a duplicate"
    assert _count(engine, ArchiveFileRow) == 1, "the duplicate has no row: the store names it apart"
    later = utcnow() + timedelta(days=40)

    rows_only = Retention(engine, RetentionSettings(rows_days=30, pause_ms=0), archive, clock=lambda: later)
    assert rows_only.run_once().rows == 1
    assert _count(engine, InspectionRow) == 0 and all(p.is_file() for p in files), "the archive is kept"

    by_age = Retention(engine, RetentionSettings(rows_days=30, archive_days=14, pause_ms=0), archive,
                       clock=lambda: later)
    removed = by_age.run_once()
    assert removed.files == 2 and not any(p.exists() for p in files)
    assert not list(archive.folder.iterdir()), "the emptied day folder is removed too"


def test_archive_by_size_removes_the_oldest_recorded_files_and_keeps_today(tmp_path):
    archive, engine = _archive(tmp_path), _sqlite(tmp_path)
    archiver = Archiver(archive)
    photos = {day: _recorded(engine, archiver, f"{day}.png", NOW - timedelta(days=day), size=3000)[1]
              for day in (29, 10, 1, 0)}
    theirs = archive.folder / "2026-05-01" / "c1" / "theirs.png"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"x" * 100_000)
    by_size = Retention(engine, RetentionSettings(archive_max_gb=7000 / 2**30, pause_ms=0), archive,
                        clock=lambda: NOW)
    removed = by_size.run_once()
    assert (removed.files, removed.bytes) == (2, 6000)
    assert [day for day, path in photos.items() if path.exists()] == [1, 0] and theirs.is_file()
    tight = Retention(engine, RetentionSettings(archive_max_gb=1000 / 2**30, pause_ms=0), archive, clock=lambda: NOW)
    assert tight.run_once().files == 1
    assert photos[0].is_file(), "today's photos stay whatever the budget"


def test_a_box_sharing_a_store_deletes_only_its_own_cameras_files(store_url, tmp_path):
    """Several boxes may share one PostgreSQL store: each box's retention deletes (and marks) only the files of
    the cameras it watches, since another box's files are on another disk."""
    engine = open_engine(store_url)
    migrate(engine)
    archive = _archive(tmp_path)
    archiver = Archiver(archive)
    old = NOW - timedelta(days=40)
    mine_id, mine = _recorded(engine, archiver, "mine.png", old, camera="line1")
    theirs_id, theirs = _recorded(engine, archiver, "theirs.png", old, camera="line2")
    box = Retention(engine, RetentionSettings(archive_days=14, pause_ms=0), archive, clock=lambda: NOW,
                    cameras=["line1"])
    assert box.run_once().files == 1
    assert not mine.exists() and theirs.is_file()
    with Session(engine) as session:
        assert session.get(InspectionRow, mine_id).photo_removed_at == NOW
        assert session.get(InspectionRow, theirs_id).photo_removed_at is None, "left for line2's own box"


def test_reviewed_rows_outlive_retention_as_tombstones_with_their_reviews(store_url, tmp_path, caplog):
    """rows_days deletes unreviewed rows as before; a reviewed row is kept, reduced to a tombstone (its maps,
    alerts, reply and photo removed) with every review, and the log and the metrics say how many."""
    from inspectd.daemon.metrics import DaemonMetrics
    from inspectd.data.archived_photos import PhotoRoots
    from inspectd.data.reviewed import export_reviewed

    engine = open_engine(store_url)
    migrate(engine)
    archive = _archive(tmp_path)
    archiver = Archiver(archive)
    old, recent = NOW - timedelta(days=400), NOW - timedelta(days=1)
    reviewed_id, reviewed_photo = _recorded(engine, archiver, "reviewed.png", old, reviews=("defect", "good"))
    plain_id, plain_photo = _recorded(engine, archiver, "plain.png", old)
    fresh_id, fresh_photo = _recorded(engine, archiver, "fresh.png", recent, reviews=("defect",))
    metrics = DaemonMetrics(engine)
    retention = Retention(engine, RetentionSettings(maps_days=30, rows_days=365, archive_days=14, pause_ms=0),
                          archive, clock=lambda: NOW, on_pass=metrics.retained)
    with caplog.at_level("INFO", logger="inspectd.retention"):
        removed = retention.run_once()

    with Session(engine) as session:
        kept = session.get(InspectionRow, reviewed_id)
        assert kept is not None, "a reviewed row survives rows_days"
        reviews = session.scalars(select(ReviewRow).where(ReviewRow.inspection_id == reviewed_id)
                                  .order_by(ReviewRow.id)).all()
        assert [(r.label, r.note) for r in reviews] == [("defect", "review 0"), ("good", "review 1")]
        assert session.get(InspectionRow, plain_id) is None, "an unreviewed old row is deleted as before"
        assert (kept.camera, kept.verdict, kept.score, kept.source_path) == ("c1", "anomalous", 0.9,
                                                                             str(tmp_path / "drop" / "reviewed.png"))
        assert kept.tombstoned_at == NOW and kept.photo_removed_at == NOW
        assert kept.raw_reply is None and kept.reasoning is None
        assert session.get(ArtifactRow, reviewed_id) is None
        assert not session.scalars(select(AlertRow).where(AlertRow.inspection_id == reviewed_id)).all()
        assert session.get(InspectionRow, fresh_id).tombstoned_at is None
    assert not reviewed_photo.exists() and not plain_photo.exists() and fresh_photo.is_file()
    assert (removed.rows, removed.tombstoned) == (1, 1)
    assert "1 reviewed inspection(s) kept as tombstones with their reviews" in caplog.text
    assert metrics.registry.get_sample_value("inspectd_retention_removed_total", {"what": "tombstoned"}) == 1
    assert metrics.registry.get_sample_value("inspectd_retention_removed_total", {"what": "rows"}) == 1

    again = retention.run_once()
    assert (again.rows, again.tombstoned) == (0, 0), "a tombstone is made once"
    assert _count(engine, ReviewRow) == 3

    # The tombstone's photo is gone: the export and the console say so instead of failing.
    roots = PhotoRoots((archive.folder, archive.failed_folder), 10**7)
    record = {"archived_path": str(reviewed_photo), "photo_removed_at": NOW, "source_path": "x"}
    assert roots.path_of(record) is None and roots.read(record) is None
    done = export_reviewed(engine, roots, tmp_path / "labels")
    assert done.missing == (reviewed_id,) and done.defect == 1  # the fresh row's photo is still there


def test_the_store_refuses_to_delete_a_reviewed_row(store_url):
    """Defence in depth: reviews.inspection_id is ON DELETE RESTRICT (migration 0005), not CASCADE."""
    from sqlalchemy.exc import IntegrityError

    engine = open_engine(store_url)
    migrate(engine)
    _fill(engine, [1])
    with Session(engine) as session, session.begin():
        session.add(ReviewRow(inspection_id=1, label="good", reviewer="ana", created_at=NOW))
    with pytest.raises(IntegrityError):
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM alerts"))
            connection.execute(text("DELETE FROM artifacts"))
            connection.execute(text("DELETE FROM inspections"))
    assert _count(engine, ReviewRow) == 1


def test_migration_0005_upgrades_and_downgrades_with_data(store_url):
    from alembic import command

    from inspectd.store.database import _alembic_config, current_revision

    engine = open_engine(store_url)
    migrate(engine)
    _fill(engine, [1, 2])
    with Session(engine) as session, session.begin():
        session.add(ReviewRow(inspection_id=1, label="defect", reviewer="ana", created_at=NOW))
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert current_revision(engine) == "0004"
    assert _count(engine, ReviewRow) == 1 and _count(engine, InspectionRow) == 2
    assert migrate(engine) == head_revision() == current_revision(engine)
    assert _count(engine, ReviewRow) == 1


@pytest.mark.slow
def test_the_console_and_the_export_show_a_tombstone_without_failing(tmp_path):
    """A tombstoned row whose photo retention removed: its page says so, its photo is a clear 404, the
    history lists it without a thumbnail, and ``export-reviewed`` reports it skipped."""
    import subprocess
    import sys

    import yaml

    from tests.console_harness import ConsoleProcess, request

    config = tmp_path / "inspectd.yaml"
    config.write_text(yaml.safe_dump({"model": {"bundle": "bundle"}, "store": {"url": "sqlite:///var/inspectd.db"},
                                      "archive": {"folder": "archive", "failed_folder": "failed"}}))
    engine = open_engine(f"sqlite:///{tmp_path / 'var' / 'inspectd.db'}")
    migrate(engine)
    archive = _archive(tmp_path)
    kept_id, photo = _recorded(engine, Archiver(archive), "old.png", NOW - timedelta(days=400), reviews=("defect",))
    Retention(engine, RetentionSettings(rows_days=365, archive_days=14, pause_ms=0), archive,
              clock=lambda: NOW).run_once()
    engine.dispose()
    assert not photo.exists()

    console = ConsoleProcess(config)
    try:
        console.wait_ready()
        status, _, body = request(f"{console.url}/inspections/{kept_id}")
        assert status == 200
        page = body.decode()
        assert "The photo was removed by retention on" in page and "kept for its reviews since" in page
        assert "reviewed: defect" in page
        status, _, body = request(f"{console.url}/inspections/{kept_id}/photo.jpg")
        assert status == 404 and b"not in the archive" in body
        status, _, body = request(f"{console.url}/history")
        assert status == 200 and f"/inspections/{kept_id}/thumb.jpg".encode() not in body
    finally:
        console.stop()
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(config), "export-reviewed",
                           str(tmp_path / "labels")], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert f"1 reviewed rows skipped, their photo is no longer in the archive (ids {kept_id})" in done.stdout


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

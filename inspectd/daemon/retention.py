"""Retention: keep the store and the archive inside their budgets, in the background, without stalling the writer.

Runs at start and every ``retention.interval_s``. Old map/mask blobs go
first (``maps_days``), then whole inspections with their alerts
(``rows_days``), then archived and failed files by age (``archive_days``)
and the oldest archive days while the archive is over ``archive_max_gb``
(today's folder is never removed). Rows are deleted ``batch_rows`` at a time,
each batch its own short transaction with a pause after it, so the daemon's
writer waits at most one batch. SQLite files made by inspectd use
``auto_vacuum=INCREMENTAL``; after deleting, freed pages are given back to
the file system so the file really shrinks. What was removed is logged and
returned.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session

from inspectd.config import ArchiveSettings, RetentionSettings
from inspectd.store.clock import utcnow
from inspectd.store.schema import AlertRow, ArtifactRow, InspectionRow
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.retention")

_VACUUM_PAGES = 256  # 1 MB of 4 KB pages per incremental vacuum step


@dataclass
class Removed:
    maps: int = 0
    rows: int = 0
    files: int = 0
    bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.maps or self.rows or self.files)

    def describe(self) -> str:
        return (f"{self.maps} map(s), {self.rows} inspection(s) with their alerts, {self.files} archived file(s) "
                f"({self.bytes / 2**20:.1f} MiB)")


class Retention(LoopThread):
    def __init__(self, engine: Engine, settings: RetentionSettings, archive: ArchiveSettings,
                 clock=utcnow) -> None:
        super().__init__("inspectd-retention")
        self.engine = engine
        self.settings = settings
        self.archive = archive
        self.clock = clock
        self._vacuum_warned = False

    def active(self) -> bool:
        s = self.settings
        return any(v is not None for v in (s.maps_days, s.rows_days, s.archive_days, s.archive_max_gb))

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # a locked or unreachable store: try again next interval
                log.exception("retention pass failed; retrying in %.0f s", self.settings.interval_s)
            if self._stop.wait(self.settings.interval_s):
                return

    def run_once(self) -> Removed:
        removed = Removed()
        if not self.active():
            return removed
        now = self.clock()
        s = self.settings
        if s.maps_days is not None:
            removed.maps += self._delete_maps(now - timedelta(days=s.maps_days))
        if s.rows_days is not None:
            removed.rows += self._delete_rows(now - timedelta(days=s.rows_days))
        if self.archive.mode == "move":
            if s.archive_days is not None:
                self._delete_old_files(now - timedelta(days=s.archive_days), removed)
            if s.archive_max_gb is not None:
                self._fit_archive(int(s.archive_max_gb * 2**30), now, removed)
        if removed.maps or removed.rows:
            self._give_back_pages()
        if removed:
            log.info("retention removed %s", removed.describe())
        return removed

    def _batches(self, pick, remove) -> int:
        """Repeat: pick up to ``batch_rows`` ids, remove them in one transaction, pause; until none is left."""
        count = 0
        while not self._stop.is_set():
            with Session(self.engine) as session, session.begin():
                ids = list(session.scalars(pick.limit(self.settings.batch_rows)))
                if not ids:
                    return count
                remove(session, ids)
            count += len(ids)
            time.sleep(self.settings.pause_ms / 1000)
        return count

    def _delete_maps(self, cutoff: datetime) -> int:
        pick = (select(ArtifactRow.inspection_id).join(InspectionRow, InspectionRow.id == ArtifactRow.inspection_id)
                .where(InspectionRow.created_at < cutoff).order_by(ArtifactRow.inspection_id))
        return self._batches(pick, lambda session, ids: session.execute(
            delete(ArtifactRow).where(ArtifactRow.inspection_id.in_(ids))))

    def _delete_rows(self, cutoff: datetime) -> int:
        pick = select(InspectionRow.id).where(InspectionRow.created_at < cutoff).order_by(InspectionRow.created_at)

        def remove(session: Session, ids: list[int]) -> None:
            session.execute(delete(AlertRow).where(AlertRow.inspection_id.in_(ids)))
            session.execute(delete(ArtifactRow).where(ArtifactRow.inspection_id.in_(ids)))
            session.execute(delete(InspectionRow).where(InspectionRow.id.in_(ids)))

        return self._batches(pick, remove)

    def _delete_old_files(self, cutoff: datetime, removed: Removed) -> None:
        oldest_kept = cutoff.date().isoformat()
        for day in _day_folders(self.archive.folder):
            if day.name < oldest_kept:
                _remove_tree(day, removed)
        limit = cutoff.timestamp() if cutoff.tzinfo else (cutoff - datetime(1970, 1, 1)).total_seconds()
        for path in _files(self.archive.failed_folder):
            try:
                if path.lstat().st_mtime < limit:
                    size = path.lstat().st_size
                    path.unlink()
                    removed.files += 1
                    removed.bytes += size
            except OSError as exc:
                log.warning("retention: cannot remove %s: %s", path, exc)

    def _fit_archive(self, budget: int, now: datetime, removed: Removed) -> None:
        days = [(day, _tree_stats(day)) for day in _day_folders(self.archive.folder)]
        total = sum(size for _, (_, size) in days)
        today = now.date().isoformat()
        for day, stats in days:  # oldest first
            if total <= budget:
                return
            if day.name >= today:
                log.warning("retention: the archive is %.1f GiB, over archive_max_gb, but only today's files are "
                            "left", total / 2**30)
                return
            _remove_tree(day, removed, stats)
            total -= stats[1]

    def _give_back_pages(self) -> None:
        if self.engine.url.get_backend_name() != "sqlite":
            return  # PostgreSQL's autovacuum reuses the space
        with self.engine.connect() as connection:
            mode = connection.execute(text("PRAGMA auto_vacuum")).scalar()
            if mode != 2:  # not incremental
                if not self._vacuum_warned:
                    self._vacuum_warned = True
                    log.warning("retention: this SQLite file was created without auto_vacuum, so deleted rows leave "
                                "free pages inside it instead of shrinking it; to convert it once, stop the daemon "
                                "and run: sqlite3 %s 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'",
                                self.engine.url.database)
                return
            raw = connection.connection.driver_connection
            # A few thousand pages per transaction, pausing between them: the writer waits for one chunk at most.
            # Each step of the statement frees one page; the sqlite3 module's execute() takes only the first step,
            # executescript() runs it to the end.
            while not self._stop.is_set() and connection.execute(text("PRAGMA freelist_count")).scalar() > 0:
                raw.executescript(f"PRAGMA incremental_vacuum({_VACUUM_PAGES});")
                time.sleep(self.settings.pause_ms / 1000)


def _day_folders(archive: Path) -> list[Path]:
    """``<archive>/<YYYY-MM-DD>`` folders, oldest first; anything else there is left alone."""
    try:
        entries = [p for p in archive.iterdir() if p.is_dir() and not p.is_symlink() and _is_day(p.name)]
    except OSError:
        return []
    return sorted(entries, key=lambda p: p.name)


def _is_day(name: str) -> bool:
    try:
        return datetime.strptime(name, "%Y-%m-%d").strftime("%Y-%m-%d") == name
    except ValueError:
        return False


def _files(folder: Path):
    for root, _, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


def _tree_stats(folder: Path) -> tuple[int, int]:
    """(files, bytes) below ``folder``, in one walk."""
    files = size = 0
    for path in _files(folder):
        try:
            size += path.lstat().st_size
            files += 1
        except OSError:
            pass
    return files, size


def _remove_tree(folder: Path, removed: Removed, stats: tuple[int, int] | None = None) -> None:
    files, size = stats if stats is not None else _tree_stats(folder)
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        log.warning("retention: cannot remove %s: %s", folder, exc)
        return
    removed.files += files
    removed.bytes += size

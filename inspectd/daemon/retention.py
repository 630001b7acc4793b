"""Retention: keep the store and the archive inside their budgets, in the background, without stalling the writer.

Runs at start and every ``retention.interval_s``. Old map/mask blobs go
first (``maps_days``), then inspections with their alerts (``rows_days``),
then archived and failed files (``archive_days``, then the oldest days while
inspectd's files are over ``archive_max_gb``; today's are never removed).

Only files the store names are ever deleted: a row's ``archived_path`` (and a
failed file's ``.error.json``), or an ``archive_files`` record (a duplicate
archived without a row, or the photo of a row deleted before its file). A
file someone else put in the archive or the failed folder is left alone,
whatever its mtime (``cp -p`` and FTP uploads keep old ones), and logged once.
A removed file's row keeps its path and gets ``photo_removed_at``.

Reviews outlive retention: a reviewed row past ``rows_days`` is not deleted
but kept as a tombstone (its facts, its reviews; its maps, alerts and reply
deleted, ``tombstoned_at`` set), and the store refuses to delete a reviewed
row at all (ON DELETE RESTRICT).

Rows are handled ``batch_rows`` at a time, each batch its own short
transaction with a pause after it, so the daemon's writer waits at most one
batch. SQLite files made by inspectd use ``auto_vacuum=INCREMENTAL``; after
deleting, freed pages are given back to the file system so the file really
shrinks. What was removed is logged, counted in the metrics and returned.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from sqlalchemy import Engine, delete, exists, func, insert, select, text, true, update
from sqlalchemy.orm import Session

from inspectd.config import ArchiveSettings, RetentionSettings
from inspectd.verdict import Verdict
from inspectd.store.clock import utcnow
from inspectd.store.schema import (AlertRow, ArchiveFileRow, ArtifactRow, ChallengerResultRow, InspectionRow,
                                   ReviewRow)
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.retention")

_VACUUM_PAGES = 256  # 1 MB of 4 KB pages per incremental vacuum step
_SIDECAR = ".error.json"  # archive.py writes one beside each failed file
_QUERY_CHUNK = 500  # paths per IN (...) when asking the store which files it knows
_FOREIGN_SHOWN = 20  # paths named in one "left alone" line


@dataclass
class Removed:
    maps: int = 0
    rows: int = 0
    tombstoned: int = 0
    files: int = 0
    bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.maps or self.rows or self.tombstoned or self.files)

    def describe(self) -> str:
        return (f"{self.maps} map(s), {self.rows} inspection(s) with their alerts, {self.tombstoned} reviewed "
                f"inspection(s) kept as tombstones with their reviews, {self.files} archived file(s) "
                f"({self.bytes / 2**20:.1f} MiB)")


@dataclass(frozen=True)
class _File:
    """One file retention may delete: where, and which record names it (a row, or an archive_files entry)."""

    record: int
    path: Path
    failed: bool = False  # a row's failed file: its sidecar goes with it


class Retention(LoopThread):
    def __init__(self, engine: Engine, settings: RetentionSettings, archive: ArchiveSettings, clock=utcnow,
                 on_pass: Callable[[Removed], None] | None = None, cameras: Iterable[str] | None = None) -> None:
        """``on_pass``: told what each pass removed (the daemon's metrics). ``cameras``: this box's cameras,
        whose files are on this box's disk (several boxes may share one PostgreSQL store); None = every camera in
        the store (one box)."""
        super().__init__("inspectd-retention")
        self.engine = engine
        self.settings = settings
        self.archive = archive
        self.clock = clock
        self.on_pass = on_pass
        self.cameras = None if cameras is None else tuple(cameras)
        self._vacuum_warned = False
        self._reported: set[str] = set()  # foreign files already logged (once each)

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
            cutoff = now - timedelta(days=s.rows_days)
            removed.rows += self._delete_rows(cutoff)
            removed.tombstoned += self._tombstone_reviewed(cutoff, now)
        if self.archive.mode == "move":
            if s.archive_days is not None:
                cutoff = now - timedelta(days=s.archive_days)
                self._remove_files_before(cutoff, now, removed)
                self._report_foreign(cutoff)
            if s.archive_max_gb is not None:
                self._fit_archive(int(s.archive_max_gb * 2**30), now, removed)
            if removed.files:
                _drop_empty_days(self.archive.folder, (now - timedelta(days=1)).date().isoformat())
        if removed.maps or removed.rows or removed.tombstoned:
            self._give_back_pages()
        if removed:
            log.info("retention removed %s", removed.describe())
        if self.on_pass is not None:
            self.on_pass(removed)
        return removed

    # --- rows -------------------------------------------------------------------------------------------------

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
        """The champion's maps of rows older than ``cutoff`` (counted), then a challenger's maps of the same rows
        (its verdict, score and reasoning stay: the comparison needs them)."""
        pick = (select(ArtifactRow.inspection_id).join(InspectionRow, InspectionRow.id == ArtifactRow.inspection_id)
                .where(InspectionRow.created_at < cutoff).order_by(ArtifactRow.inspection_id))
        count = self._batches(pick, lambda session, ids: session.execute(
            delete(ArtifactRow).where(ArtifactRow.inspection_id.in_(ids))))
        challenger = (select(ChallengerResultRow.id)
                      .join(InspectionRow, InspectionRow.id == ChallengerResultRow.inspection_id)
                      .where(InspectionRow.created_at < cutoff, ChallengerResultRow.map_png.is_not(None))
                      .order_by(ChallengerResultRow.id))
        self._batches(challenger, lambda session, ids: session.execute(
            update(ChallengerResultRow).where(ChallengerResultRow.id.in_(ids)).values(map_png=None, mask_png=None)))
        return count

    def _delete_rows(self, cutoff: datetime) -> int:
        """Unreviewed rows older than ``cutoff`` with their maps and alerts. A photo still in the archive stays
        (the archive has budgets of its own) and is named in ``archive_files``, so retention still knows it."""
        unreviewed = ~exists().where(ReviewRow.inspection_id == InspectionRow.id)
        pick = select(InspectionRow.id).where(InspectionRow.created_at < cutoff, unreviewed) \
            .order_by(InspectionRow.created_at)

        def remove(session: Session, ids: list[int]) -> None:
            chosen = [InspectionRow.id.in_(ids), unreviewed]  # a review written since the pick keeps its row
            _remember_files(session, chosen)
            session.execute(delete(AlertRow).where(AlertRow.inspection_id.in_(ids)))
            session.execute(delete(ArtifactRow).where(ArtifactRow.inspection_id.in_(ids)))
            session.execute(delete(InspectionRow).where(*chosen))

        return self._batches(pick, remove)

    def _tombstone_reviewed(self, cutoff: datetime, now: datetime) -> int:
        """Reviewed rows older than ``cutoff``: kept for their reviews, without maps, alerts, reply and ReAL
        parameters. Their facts stay (time, camera, file, sha256, verdict, score, bundle); the photo goes by the
        archive's budgets like every photo."""
        pick = (select(InspectionRow.id)
                .where(InspectionRow.created_at < cutoff, InspectionRow.tombstoned_at.is_(None),
                       exists().where(ReviewRow.inspection_id == InspectionRow.id))
                .order_by(InspectionRow.created_at))

        def reduce(session: Session, ids: list[int]) -> None:
            session.execute(delete(AlertRow).where(AlertRow.inspection_id.in_(ids)))
            session.execute(delete(ArtifactRow).where(ArtifactRow.inspection_id.in_(ids)))
            session.execute(update(InspectionRow).where(InspectionRow.id.in_(ids)).values(
                tombstoned_at=now, reasoning=None, raw_reply=None, real_params=None))

        count = self._batches(pick, reduce)
        if count:
            log.info("retention: %d reviewed inspection(s) past rows_days kept as tombstones: their reviews stay, "
                     "their maps, alerts and reply were deleted", count)
        return count

    # --- files ------------------------------------------------------------------------------------------------

    def _ours(self, column):
        """Only this box's cameras: another box's files are on another disk. Compared as an expression
        (``camera || ''``) so that no planner trades the live-photo index for the camera index, which would walk
        every row of the camera, photo removed or not, on every batch."""
        return true() if self.cameras is None else (column + "").in_(self.cameras)

    def _remove_files_before(self, cutoff: datetime, now: datetime, removed: Removed) -> None:
        """Every file the store names that was archived before ``cutoff``: rows' photos, then archive_files."""
        live = [InspectionRow.archived_path.is_not(None), InspectionRow.photo_removed_at.is_(None)]
        rows = (select(InspectionRow.id, InspectionRow.archived_path, InspectionRow.verdict)
                .where(*live, InspectionRow.created_at < cutoff, self._ours(InspectionRow.camera))
                .order_by(InspectionRow.created_at))
        self._file_batches(rows, InspectionRow.id, lambda row: _File(row.id, Path(row.archived_path),
                                                                     row.verdict == Verdict.FAILED.value),
                           lambda session, ids: session.execute(update(InspectionRow).where(
                               InspectionRow.id.in_(ids)).values(photo_removed_at=now)), removed)
        entries = (select(ArchiveFileRow.id, ArchiveFileRow.path)
                   .where(ArchiveFileRow.created_at < cutoff, self._ours(ArchiveFileRow.camera))
                   .order_by(ArchiveFileRow.created_at))
        self._file_batches(entries, ArchiveFileRow.id, lambda entry: _File(entry.id, Path(entry.path)),
                           lambda session, ids: session.execute(delete(ArchiveFileRow).where(
                               ArchiveFileRow.id.in_(ids))), removed)

    def _file_batches(self, pick, key, as_file: Callable[[object], _File], forget, removed: Removed) -> None:
        """Repeat: pick up to ``batch_rows`` records, delete their files, then mark them (``forget``) in one
        transaction, pause. A file that cannot be deleted keeps its record (tried again next pass) and is skipped
        for the rest of this one; a batch none of whose files could be deleted ends the pass (a read-only disk).

        Files go before their records: a crash in between leaves a record of a file already gone, which the
        next pass finds gone and forgets, never a file nobody knows."""
        stuck: set[int] = set()
        while not self._stop.is_set():
            query = pick.where(key.not_in(stuck)) if stuck else pick
            with Session(self.engine) as session, session.begin():
                files = [as_file(row) for row in session.execute(query.limit(self.settings.batch_rows))]
                if not files:
                    return
                gone = [f.record for f in files if self._delete_file(f, removed)]
                if gone:
                    forget(session, gone)
            stuck.update(f.record for f in files if f.record not in gone)
            if not gone:
                log.warning("retention: none of %d file(s) could be deleted; stopping until the next pass",
                            len(files))
                return
            time.sleep(self.settings.pause_ms / 1000)

    def _delete_file(self, file: _File, removed: Removed) -> bool:
        """Delete one named file (and a failed file's sidecar) if it lies in this box's archive or failed
        folder; True when it is gone. A path outside them (the folders were moved in the config) is forgotten
        without touching it, so nothing outside the configured folders is ever deleted."""
        roots = (self.archive.folder.resolve(), self.archive.failed_folder.resolve())
        parent = file.path.parent.resolve()  # a folder swapped for a link must not lead the deletion elsewhere
        if not any(parent.is_relative_to(root) for root in roots):
            log.warning("retention: %s is outside archive.folder and archive.failed_folder; not deleted, its "
                        "record forgotten", file.path)
            return True
        path = parent / file.path.name
        paths = [path, path.with_name(path.name + _SIDECAR)] if file.failed else [path]
        return all([_unlink(each, removed) for each in paths])

    def _fit_archive(self, budget: int, now: datetime, removed: Removed) -> None:
        """While inspectd's files (rows' photos and archive_files, by their recorded sizes) exceed ``budget``,
        delete the oldest day of them; today's are kept. Files others put there are not counted or deleted."""
        today = datetime(now.year, now.month, now.day)
        while not self._stop.is_set():
            total, oldest = self._archive_size()
            if total <= budget or oldest is None:
                return
            if oldest >= today:
                log.warning("retention: inspectd's files in the archive are %.1f GiB, over archive_max_gb, but "
                            "only today's are left", total / 2**30)
                return
            day_after = datetime(oldest.year, oldest.month, oldest.day) + timedelta(days=1)
            before = removed.files
            self._remove_files_before(min(day_after, today), now, removed)
            if removed.files == before and self._archive_size() == (total, oldest):
                return  # nothing could be deleted (logged): do not spin

    def _archive_size(self) -> tuple[int, datetime | None]:
        """(bytes, oldest time) of the files the store knows in this box's archive and failed folder."""
        live = [InspectionRow.archived_path.is_not(None), InspectionRow.photo_removed_at.is_(None),
                self._ours(InspectionRow.camera)]
        with Session(self.engine) as session:
            row_bytes, row_oldest = session.execute(
                select(func.coalesce(func.sum(InspectionRow.size_bytes), 0), func.min(InspectionRow.created_at))
                .where(*live)).one()
            file_bytes, file_oldest = session.execute(
                select(func.coalesce(func.sum(ArchiveFileRow.size_bytes), 0), func.min(ArchiveFileRow.created_at))
                .where(self._ours(ArchiveFileRow.camera))).one()
        oldest = min((t for t in (row_oldest, file_oldest) if t is not None), default=None)
        return int(row_bytes) + int(file_bytes), oldest

    def _report_foreign(self, cutoff: datetime) -> None:
        """Log once each file that the old retention would have deleted (in an archive day older than the
        cutoff, or in the failed folder with an older mtime) but that the store does not name: it stays."""
        oldest_kept = (cutoff - timedelta(days=1)).date().isoformat()  # a file's day may precede its row's
        limit = (cutoff - datetime(1970, 1, 1)).total_seconds()
        archived = [p for day in _day_folders(self.archive.folder) if day.name < oldest_kept for p in _files(day)]
        failed = [p for p in _files(self.archive.failed_folder) if _mtime(p) < limit]
        foreign = self._unknown(archived, failed_only=False) + self._unknown(failed, failed_only=True)
        if not foreign:
            return
        self._reported.update(str(p) for p in foreign)
        shown = ", ".join(str(p) for p in foreign[:_FOREIGN_SHOWN])
        more = f" and {len(foreign) - _FOREIGN_SHOWN} more" if len(foreign) > _FOREIGN_SHOWN else ""
        log.warning("retention: left alone %d old file(s) that inspectd did not archive (the store names none of "
                    "them); they are never deleted, remove them by hand if unwanted: %s%s", len(foreign), shown, more)

    def _unknown(self, paths: list[Path], failed_only: bool) -> list[Path]:
        """Those of ``paths`` not reported yet that no row (live photo or its sidecar) or archive_files entry
        names. ``failed_only``: the failed folder holds failed rows' files only (found over the verdict index)."""
        fresh = [p for p in paths if str(p) not in self._reported]
        unknown = []
        for start in range(0, len(fresh), _QUERY_CHUNK):
            chunk = fresh[start:start + _QUERY_CHUNK]
            names = {str(p) for p in chunk} | {str(p)[:-len(_SIDECAR)] for p in chunk if p.name.endswith(_SIDECAR)}
            rows = select(InspectionRow.archived_path).where(InspectionRow.archived_path.in_(names),
                                                              InspectionRow.photo_removed_at.is_(None))
            if failed_only:
                rows = rows.where(InspectionRow.verdict == Verdict.FAILED.value)
            with Session(self.engine) as session:
                known = set(session.scalars(rows))
                known |= set(session.scalars(select(ArchiveFileRow.path).where(ArchiveFileRow.path.in_(names))))
            unknown += [p for p in chunk if str(p) not in known
                        and not (p.name.endswith(_SIDECAR) and str(p)[:-len(_SIDECAR)] in known)]
        return unknown

    # --- the SQLite file --------------------------------------------------------------------------------------

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


def _remember_files(session: Session, chosen: list) -> None:
    """Name in ``archive_files`` the files still in the archive of the rows about to be deleted (``chosen``),
    in the same transaction: a file is never left without a record, so retention can still delete it later."""
    rows = session.execute(select(InspectionRow.id, InspectionRow.camera, InspectionRow.archived_path,
                                  InspectionRow.size_bytes, InspectionRow.created_at, InspectionRow.verdict)
                           .where(*chosen, InspectionRow.archived_path.is_not(None),
                                  InspectionRow.photo_removed_at.is_(None))).all()
    entries = []
    for row in rows:
        common = dict(camera=row.camera, created_at=row.created_at, inspection_id=row.id)
        entries.append(dict(path=row.archived_path, size_bytes=row.size_bytes, **common))
        if row.verdict == Verdict.FAILED.value:
            entries.append(dict(path=row.archived_path + _SIDECAR, size_bytes=0, **common))
    if entries:
        session.execute(insert(ArchiveFileRow), entries)


def record_archived_file(engine: Engine, path: Path, camera: str, inspection_id: int | None) -> None:
    """Name a file inspectd archived without a row of its own (a duplicate), so retention can delete it later."""
    with Session(engine) as session, session.begin():
        session.add(ArchiveFileRow(path=str(path), camera=camera, size_bytes=path.lstat().st_size,
                                   created_at=utcnow(), inspection_id=inspection_id))


def _unlink(path: Path, removed: Removed) -> bool:
    """Delete one file (never a folder, never through a link); True when it is gone, now or already."""
    try:
        size = path.lstat().st_size
        path.unlink()
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("retention: cannot remove %s: %s (tried again next pass)", path, exc)
        return False
    removed.files += 1
    removed.bytes += size
    return True


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return float("inf")  # gone meanwhile: not old


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


def _drop_empty_days(archive: Path, before: str) -> None:
    """Remove the folders retention emptied: empty camera and day folders of days before ``before`` (not
    yesterday's or today's, which the archiver may still be filling). rmdir never removes a folder with a file."""
    for day in _day_folders(archive):
        if day.name >= before:
            return
        for root, _, _ in os.walk(day, topdown=False):
            try:
                os.rmdir(root)
            except OSError:
                pass  # not empty: someone's file is still there

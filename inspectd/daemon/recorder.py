"""Commit results (a batch at a time) with their maps and alerts in one transaction, then archive.

Nothing is moved before its row is committed. A crash after the commit but
before the move leaves the file in the drop folder with a row whose
``archived_path`` is empty; the next pass finds the row by sha256 and only
finishes the move.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inspectd.alerts.outbox import add_inspection_alerts
from inspectd.config import AlertSettings
from inspectd.daemon.archive import Archiver
from inspectd.daemon.file_names import as_text
from inspectd.daemon.metrics import DaemonMetrics
from inspectd.daemon.retention import record_archived_file
from inspectd.daemon.items import ReadyFile
from inspectd.inspection.render import map_image, mask_image, png_bytes
from inspectd.inspection.result import InspectionResult
from inspectd.verdict import Verdict
from inspectd.real.params import RealParams

if TYPE_CHECKING:  # the daemon's main process never imports the model's loader (transformers)
    from inspectd.bundle.load import LoadedBundle
from inspectd.store import token_maps
from inspectd.store.clock import from_timestamp, utcnow
from inspectd.store.schema import ArtifactRow, BundleRow, InspectionRow

log = logging.getLogger("inspectd.recorder")


@dataclass(frozen=True)
class Processed:
    """A file after the model (or after failing before it)."""

    ready: ReadyFile
    sha256: str
    size_bytes: int
    result: InspectionResult
    batch_started_at: float


@dataclass(frozen=True)
class Existing:
    id: int
    source_path: str
    archived_path: str | None
    verdict: str
    error: str | None


def model_said(result: InspectionResult) -> dict:
    """The columns of what a model said about an image, shared by the champion's row (``inspections``) and a
    challenger's (``challenger_results``): verdict, score and threshold, reasoning and reply, the mirror views'
    scores, which one is shown and whether they disagree, ReAL's fallback, the model's time and the error."""
    timings = result.timings
    model_s = sum(timings.get(k, 0.0) for k in ("preprocess", "generate", "decode"))
    return dict(
        verdict=result.verdict.value,
        score=result.score,
        threshold=result.threshold,
        reasoning=result.reasoning,
        raw_reply=result.reply,
        parse_status=result.parse_status,
        view_scores=result.view_scores,
        shown_view=result.shown_view if result.views and result.shown_tile is None else None,  # a tile's: not a view
        views_disagree=result.views_disagree,
        real_fallback=result.real_fallback,
        model_ms=model_s * 1000 if timings else None,
        error=result.error,
    )


def register_bundle(engine: Engine, bundle: LoadedBundle) -> int:
    with Session(engine) as session, session.begin():
        row = session.scalar(select(BundleRow).where(BundleRow.sha256 == bundle.digest))
        if row is None:
            row = BundleRow(
                sha256=bundle.digest,
                name=bundle.manifest.name,
                base_model=bundle.manifest.base_model,
                quantization=bundle.manifest.quantization,
                path=str(bundle.path),
                first_seen=utcnow(),
            )
            session.add(row)
            session.flush()
        return row.id


class InspectionRecorder:
    """The daemon's end of an inspection: its row, maps and alerts in the store, then its file in the archive.

    (Not to be confused with the model's ``AttentionRecorder`` and ``AnswerLogitsRecorder``, which record
    tensors during generation.)"""

    def __init__(
        self,
        engine: Engine,
        bundle_id: int,
        real: RealParams,
        archiver: Archiver,
        alerts: AlertSettings,
        save_maps: bool,
        on_alerts=None,
        metrics: DaemonMetrics | None = None,
        on_recorded: Callable[[int, str, str, str | None], None] | None = None,
    ) -> None:
        self.engine = engine
        # (inspection id, sha256, source path, archived path or None) of each part inspected, after its row is
        # committed and its photo archived: the challenger's shadow queue (it must not fail or wait)
        self.on_recorded = on_recorded
        self.bundle_id = bundle_id
        self.real = real.model_dump(mode="json")
        self.archiver = archiver
        self.alerts = alerts
        self.save_maps = save_maps
        self.on_alerts = on_alerts
        self.metrics = metrics

    def use_model(self, bundle_id: int, real: RealParams, alerts: AlertSettings) -> None:
        """Rows from now on name this bundle and these ReAL parameters and are judged by these alert rules (called
        by the record stage where the worker swapped models: one config file's model and rules go together)."""
        self.bundle_id = bundle_id
        self.real = real.model_dump(mode="json")
        self.alerts = alerts

    def lookup(self, sha256: str) -> Existing | None:
        return self.lookup_many([sha256]).get(sha256)

    def lookup_many(self, shas: list[str]) -> dict[str, Existing]:
        """The rows already holding these bytes, by sha256 (one query for a batch)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    InspectionRow.sha256, InspectionRow.id, InspectionRow.source_path, InspectionRow.archived_path,
                    InspectionRow.verdict, InspectionRow.error,
                ).where(InspectionRow.sha256.in_(shas))
            ).all()
        return {sha: Existing(*rest) for sha, *rest in rows}

    def record(self, item: Processed) -> int | None:
        """Commit one result; returns its id, or None when the bytes were already recorded."""
        return self.record_many([item])[0]

    def record_many(self, items: list[Processed]) -> list[int | None]:
        """Commit the results of a batch in one transaction, then archive them; an id per item, None where
        the bytes were already recorded (that file is archived as a duplicate or its interrupted move finished).

        One transaction and one archived-path UPDATE per batch instead of per row: the record stage's SQLAlchemy
        time holds the GIL the model thread needs. A failure rolls the whole batch back; the caller then records
        its files one by one."""
        now = utcnow()
        rows = [self._row_values(item, now) for item in items]
        artifacts = [self._artifacts(item.result) for item in items]
        shas = [item.sha256 for item in items]
        store_started = time.perf_counter()
        first = {sha: i for i, sha in reversed(list(enumerate(shas)))}
        fresh = sorted(first.values())  # a file whose bytes came twice in one batch is a duplicate of the first
        try:
            # Core, not the ORM's unit of work: ~1.4 -> ~0.4 ms of GIL-held Python a row (profiled)
            with self.engine.begin() as connection:
                inserted = connection.execute(insert(InspectionRow).returning(InspectionRow.sha256, InspectionRow.id),
                                              [rows[i] for i in fresh])
                ids: dict[str, int] = {sha: inspection_id for sha, inspection_id in inserted}
                blobs = [{"inspection_id": ids[shas[i]], "map_png": artifacts[i][0], "mask_png": artifacts[i][1],
                          "token_maps": artifacts[i][2]} for i in fresh if artifacts[i] is not None]
                if blobs:
                    connection.execute(insert(ArtifactRow), blobs)
                alerts_added = 0
                if self.alerts.rules:
                    with Session(bind=connection) as session:  # inside the connection's transaction
                        for i in fresh:
                            alerts_added += add_inspection_alerts(
                                session, self.alerts.rules, InspectionRow(id=ids[shas[i]], **rows[i]), now)
                        session.flush()
        except IntegrityError:
            # Bytes recorded already (a camera dropped the same image again): rare, so found by the unique index
            # rather than a query for every batch. Alone, the file is finished as a duplicate; in a batch, the
            # caller records its files one by one.
            if len(items) > 1:
                raise
            existing = self.lookup(items[0].sha256)
            if existing is None:
                raise
            self.finish_recorded(items[0].ready, existing)
            return [None]
        store_s = time.perf_counter() - store_started
        archived: list[tuple[int, Path]] = []
        for i in fresh:
            item, result, inspection_id = items[i], items[i].result, ids[shas[i]]
            log.info(
                "#%d %s %s %s score=%s%s",
                inspection_id, item.ready.camera, as_text(item.ready.path.name), result.verdict.value,
                "n/a" if result.score is None else f"{result.score:.3f}",
                f" error={result.error}" if result.error else "",
            )
            if self.metrics is not None:
                self.metrics.inspection(item.ready.camera, result.verdict.value, result.timings, store_s, time.time())
            archive_started = time.perf_counter()
            target = self._move(inspection_id, item.ready, result.verdict.value, result.error)
            if self.metrics is not None:
                self.metrics.archived(time.perf_counter() - archive_started)
            if target is not None:
                archived.append((inspection_id, target))
        self._set_archived(archived)
        if self.on_recorded is not None:
            self._hand_over(items, fresh, ids, dict(archived))
        for i, sha in enumerate(shas):
            if first[sha] != i:
                self.finish_recorded(items[i].ready, self.lookup(sha))
        if alerts_added and self.on_alerts is not None:
            self.on_alerts()
        return [ids[sha] if first[sha] == i else None for i, sha in enumerate(shas)]

    def _hand_over(self, items: list[Processed], fresh: list[int], ids: dict[str, int],
                   archived: dict[int, Path]) -> None:
        """The parts the model inspected (not those it failed on: nothing to compare) to ``on_recorded``."""
        for i in fresh:
            item = items[i]
            if item.result.verdict is Verdict.FAILED:
                continue
            inspection_id = ids[item.sha256]
            target = archived.get(inspection_id)
            try:
                self.on_recorded(inspection_id, item.sha256, as_text(item.ready.path),
                                 None if target is None else str(target))
            except Exception:  # the shadow never breaks the champion's recording
                log.exception("#%d could not be handed to the challenger", inspection_id)

    def _row_values(self, item: Processed, now) -> dict:
        result = item.result
        timings = result.timings
        load_s = timings.get("load", 0.0)
        return dict(
            **model_said(result),
            created_at=now,
            camera=item.ready.camera,
            source_path=as_text(item.ready.path),
            sha256=item.sha256,
            size_bytes=item.size_bytes,
            bundle_id=self.bundle_id,
            real_params=self.real if result.anomaly_map is not None else None,
            reasoning_tokens=result.reasoning_tokens,
            tokens_used=result.tokens_used,
            image_width=result.image_size[0] if result.image_size else None,
            image_height=result.image_size[1] if result.image_size else None,
            # The read stage reads and decodes a file while it waits for the model: that time is load, not queue.
            queue_ms=max(0.0, (item.batch_started_at - item.ready.ready_at - load_s) * 1000),
            load_ms=load_s * 1000 if timings else None,
            real_ms=timings.get("real", 0.0) * 1000 if timings else None,
            latency_ms=max(0.0, (now - from_timestamp(item.ready.ready_at)).total_seconds() * 1000),
        )

    def _artifacts(self, result: InspectionResult) -> tuple[bytes, bytes, bytes | None] | None:
        """Map and mask PNGs and the token maps (PNG encoding runs outside the GIL)."""
        if not self.save_maps or result.anomaly_map is None:
            return None
        evidence = result.evidence
        tokens = None if evidence is None or evidence.spans is None or result.kept_tokens is None else \
            token_maps.pack(evidence.maps, evidence.spans, result.kept_tokens)
        return png_bytes(map_image(result.anomaly_map)), png_bytes(mask_image(result.mask)), tokens

    def _move(self, inspection_id: int, ready: ReadyFile, verdict: str, error: str | None) -> Path | None:
        """The file into the archive (or the failed folder); None when it stays (keep mode, or the move failed)."""
        try:
            if verdict == Verdict.FAILED.value:
                return self.archiver.fail(ready.path, ready.camera, error or "failed", inspection_id)
            return self.archiver.archive(ready.path, ready.camera, from_timestamp(ready.ready_at))
        except OSError as exc:
            log.error("#%d recorded but %s could not be moved: %s (will retry)", inspection_id, as_text(ready.path),
                      exc)
            return None

    def _set_archived(self, archived: list[tuple[int, Path]]) -> None:
        # Core, not an ORM session, and one executemany for the batch: no unit of work (profiled: 1.5 -> 0.5 ms
        # a row on the record thread, whose Python time competes with the model thread for the GIL)
        if not archived:
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(InspectionRow).where(InspectionRow.id == bindparam("row_id"))
                .values(archived_path=bindparam("target")),
                [{"row_id": inspection_id, "target": str(target)} for inspection_id, target in archived],
            )

    def finish_recorded(self, ready: ReadyFile, existing: Existing) -> None:
        """The bytes are in the store already: finish an interrupted archive, or archive a duplicate."""
        if existing.source_path == as_text(ready.path) and existing.archived_path is None:
            if self.archiver.settings.mode == "keep":
                return
            log.info("#%d was recorded before a restart; archiving %s now", existing.id, as_text(ready.path.name))
            target = self._move(existing.id, ready, existing.verdict, existing.error)
            if target is not None:
                self._set_archived([(existing.id, target)])
            return
        if self.archiver.settings.mode == "keep":
            return
        log.warning("%s is a duplicate of inspection #%d (%s); archived without inspecting",
                    as_text(ready.path), existing.id, existing.source_path)
        try:
            target = self.archiver.archive(ready.path, ready.camera, from_timestamp(ready.ready_at))
        except OSError as exc:
            log.error("cannot archive duplicate %s: %s", as_text(ready.path), exc)
            return
        self._remember_duplicate(target, ready.camera, existing.id)

    def _remember_duplicate(self, target: Path | None, camera: str, inspection_id: int) -> None:
        """Name the duplicate in the store: retention deletes only files the store names, and it has no row."""
        if target is None:
            return
        try:
            record_archived_file(self.engine, target, camera, inspection_id)
        except Exception as exc:  # the file is archived; unnamed, retention leaves it alone and logs it
            log.error("duplicate %s archived but not recorded (%s: %s); retention will leave it in place",
                      target, type(exc).__name__, exc)

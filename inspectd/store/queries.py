"""Read side of the store for engineers: history, one inspection, alerts (the stats: ``stats.py``)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from inspectd.store.token_maps import TokenMaps

from inspectd.store.schema import OPEN_ALERT_STATUSES, AlertRow, AlertStatus, ArtifactRow, BundleRow, InspectionRow

HISTORY_COLUMNS = ("id", "created_at", "camera", "verdict", "score", "source_path", "reasoning", "latency_ms")
# Where the photo is now: the archive (or failed) copy, the drop folder in keep mode, or removed by retention.
PHOTO_COLUMNS = ("archived_path", "photo_removed_at")


@dataclass(frozen=True)
class HistoryFilter:
    since: datetime | None = None
    until: datetime | None = None
    camera: str | None = None
    verdict: str | None = None
    min_score: float | None = None
    limit: int = 50


def where_inspections(query, since=None, until=None, camera=None, verdict=None, min_score=None, max_score=None):
    """The history filters (CLI and console); each rides an index (time, camera+time, verdict+time)."""
    row = InspectionRow
    for column, test, value in ((row.created_at, operator.ge, since), (row.created_at, operator.lt, until),
                                (row.camera, operator.eq, camera), (row.verdict, operator.eq, verdict),
                                (row.score, operator.ge, min_score), (row.score, operator.le, max_score)):
        if value is not None:
            query = query.where(test(column, value))
    return query


def history(engine: Engine, filters: HistoryFilter) -> list[dict]:
    """Newest first."""
    query = where_inspections(select(*(getattr(InspectionRow, c) for c in HISTORY_COLUMNS + PHOTO_COLUMNS)),
                              filters.since,
                              filters.until, filters.camera, filters.verdict, filters.min_score)
    query = query.order_by(InspectionRow.created_at.desc(), InspectionRow.id.desc()).limit(filters.limit)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def inspection(engine: Engine, inspection_id: int) -> dict | None:
    with Session(engine) as session:
        row = session.get(InspectionRow, inspection_id)
        if row is None:
            return None
        record = {c.name: getattr(row, c.name) for c in InspectionRow.__table__.columns}
        bundle = session.get(BundleRow, row.bundle_id) if row.bundle_id else None
        record["bundle"] = None if bundle is None else {"name": bundle.name, "sha256": bundle.sha256,
                                                       "quantization": bundle.quantization}
        record["has_maps"] = session.scalar(  # the key only: the row's blobs are not needed to know they exist
            select(ArtifactRow.inspection_id).where(ArtifactRow.inspection_id == inspection_id)) is not None
        record["alerts"] = [
            {"id": a.id, "rule": a.rule, "channel": a.channel, "status": a.status, "attempts": a.attempts,
             "idempotency_key": a.idempotency_key, "last_error": a.last_error}
            for a in session.scalars(select(AlertRow).where(AlertRow.inspection_id == inspection_id))
        ]
        return record


def artifacts(engine: Engine, inspection_id: int) -> tuple[bytes, bytes] | None:
    with Session(engine) as session:
        row = session.get(ArtifactRow, inspection_id)
        return None if row is None else (row.map_png, row.mask_png)


def token_maps(engine: Engine, inspection_id: int) -> TokenMaps | None:
    from inspectd.store.token_maps import unpack  # numpy: for the console's word maps, not the reader commands

    """Each reasoning token's map and whether ReAL kept it (rows recorded since migration 0004)."""
    with engine.connect() as connection:
        blob = connection.execute(select(ArtifactRow.token_maps).where(ArtifactRow.inspection_id == inspection_id)
                                  ).scalar_one_or_none()
    return None if blob is None else unpack(blob)


def alerts(engine: Engine, status: tuple[str, ...] = OPEN_ALERT_STATUSES, limit: int = 100) -> list[dict]:
    query = (
        select(AlertRow.id, AlertRow.created_at, AlertRow.rule, AlertRow.channel, AlertRow.camera, AlertRow.status,
               AlertRow.attempts, AlertRow.next_attempt_at, AlertRow.last_error, AlertRow.inspection_id)
        .where(AlertRow.status.in_(status))
        .order_by(AlertRow.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def suppressed_alerts(engine: Engine, since: datetime) -> list[dict]:
    """Per rule, channel and camera: how many alerts the cooldown held back since ``since``, the newest, and the
    cooldown then in force (read from that newest one's payload)."""
    newest = func.max(AlertRow.id).label("newest")
    query = (select(AlertRow.rule, AlertRow.channel, AlertRow.camera, func.count().label("suppressed"), newest)
             .where(AlertRow.status == AlertStatus.SUPPRESSED.value, AlertRow.created_at >= since)
             .group_by(AlertRow.rule, AlertRow.channel, AlertRow.camera)
             .order_by(AlertRow.rule, AlertRow.channel, AlertRow.camera))
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
        newest_ids = [r["newest"] for r in rows]
        newest = {alert_id: (created, payload) for alert_id, created, payload in connection.execute(
            select(AlertRow.id, AlertRow.created_at, AlertRow.payload).where(AlertRow.id.in_(newest_ids)))}
    for row in rows:
        created, payload = newest[row.pop("newest")]
        row["last_suppressed_at"] = created
        row["cooldown_s"] = (payload or {}).get("cooldown_s")
    return rows


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(InspectionRow)).scalar_one()

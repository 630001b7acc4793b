"""Read side of the store for engineers: history, one inspection, alerts (the stats: ``stats.py``).

SQLAlchemy Core on the tables of ``tables.py``, no ORM: the reader commands start without importing it."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select

if TYPE_CHECKING:
    from inspectd.store.token_maps import TokenMaps

from inspectd.store.tables import OPEN_ALERT_STATUSES, AlertStatus
from inspectd.store.tables import alerts as alert_table
from inspectd.store.tables import artifacts as artifact_table
from inspectd.store.tables import bundles, inspections

HISTORY_COLUMNS = ("id", "created_at", "camera", "verdict", "score", "views_disagree", "source_path", "reasoning",
                   "latency_ms")
# Where the photo is now: the archive (or failed) copy, the drop folder in keep mode, or removed by retention.
PHOTO_COLUMNS = ("archived_path", "photo_removed_at")


@dataclass(frozen=True)
class HistoryFilter:
    since: datetime | None = None
    until: datetime | None = None
    camera: str | None = None
    verdict: str | None = None
    min_score: float | None = None
    views_disagree: bool | None = None
    limit: int = 50


def where_inspections(query, since=None, until=None, camera=None, verdict=None, min_score=None, max_score=None,
                      views_disagree=None):
    """The history filters (CLI and console); time, camera and verdict ride an index (time, camera+time,
    verdict+time), the others are checked on the rows those leave."""
    row = inspections.c
    for column, test, value in ((row.created_at, operator.ge, since), (row.created_at, operator.lt, until),
                                (row.camera, operator.eq, camera), (row.verdict, operator.eq, verdict),
                                (row.score, operator.ge, min_score), (row.score, operator.le, max_score),
                                (row.views_disagree, operator.eq, views_disagree)):
        if value is not None:
            query = query.where(test(column, value))
    return query


def history(engine: Engine, filters: HistoryFilter) -> list[dict]:
    """Newest first."""
    row = inspections.c
    query = where_inspections(select(*(row[c] for c in HISTORY_COLUMNS + PHOTO_COLUMNS)), filters.since,
                              filters.until, filters.camera, filters.verdict, filters.min_score,
                              views_disagree=filters.views_disagree)
    query = query.order_by(row.created_at.desc(), row.id.desc()).limit(filters.limit)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def inspection(engine: Engine, inspection_id: int) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(select(inspections).where(inspections.c.id == inspection_id)).one_or_none()
        if row is None:
            return None
        record = dict(row._mapping)
        bundle = connection.execute(select(bundles.c.name, bundles.c.sha256, bundles.c.quantization)
                                    .where(bundles.c.id == row.bundle_id)).one_or_none() if row.bundle_id else None
        record["bundle"] = None if bundle is None else dict(bundle._mapping)
        record["has_maps"] = connection.scalar(  # the key only: the row's blobs are not needed to know they exist
            select(artifact_table.c.inspection_id).where(artifact_table.c.inspection_id == inspection_id)) is not None
        a = alert_table.c
        record["alerts"] = [dict(alert._mapping) for alert in connection.execute(
            select(a.id, a.rule, a.channel, a.status, a.attempts, a.idempotency_key, a.last_error)
            .where(a.inspection_id == inspection_id).order_by(a.id))]
        return record


def artifacts(engine: Engine, inspection_id: int) -> tuple[bytes, bytes] | None:
    with engine.connect() as connection:
        row = connection.execute(select(artifact_table.c.map_png, artifact_table.c.mask_png)
                                 .where(artifact_table.c.inspection_id == inspection_id)).one_or_none()
    return None if row is None else (row.map_png, row.mask_png)


def token_maps(engine: Engine, inspection_id: int) -> TokenMaps | None:
    from inspectd.store.token_maps import unpack  # numpy: for the console's word maps, not the reader commands

    """Each reasoning token's map and whether ReAL kept it (rows recorded since migration 0004)."""
    with engine.connect() as connection:
        blob = connection.execute(select(artifact_table.c.token_maps)
                                  .where(artifact_table.c.inspection_id == inspection_id)).scalar_one_or_none()
    return None if blob is None else unpack(blob)


def alerts(engine: Engine, status: tuple[str, ...] = OPEN_ALERT_STATUSES, limit: int = 100) -> list[dict]:
    a = alert_table.c
    query = (
        select(a.id, a.created_at, a.rule, a.channel, a.camera, a.status,
               a.attempts, a.next_attempt_at, a.last_error, a.inspection_id)
        .where(a.status.in_(status))
        .order_by(a.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def suppressed_alerts(engine: Engine, since: datetime) -> list[dict]:
    """Per rule, channel and camera: how many alerts the cooldown held back since ``since``, the newest, and the
    cooldown then in force (read from that newest one's payload)."""
    a = alert_table.c
    newest = func.max(a.id).label("newest")
    query = (select(a.rule, a.channel, a.camera, func.count().label("suppressed"), newest)
             .where(a.status == AlertStatus.SUPPRESSED.value, a.created_at >= since)
             .group_by(a.rule, a.channel, a.camera)
             .order_by(a.rule, a.channel, a.camera))
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
        newest_ids = [r["newest"] for r in rows]
        newest = {alert_id: (created, payload) for alert_id, created, payload in connection.execute(
            select(a.id, a.created_at, a.payload).where(a.id.in_(newest_ids)))}
    for row in rows:
        created, payload = newest[row.pop("newest")]
        row["last_suppressed_at"] = created
        row["cooldown_s"] = (payload or {}).get("cooldown_s")
    return rows


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(inspections)).scalar_one()

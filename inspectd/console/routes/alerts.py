"""The alerts page: the outbox's alerts (newest 200, by status) and what each rule's cooldown held back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from inspectd.console.context import ConsoleContext
from inspectd.console.pages import Pages, query_values, route
from inspectd.store import queries
from inspectd.store.schema import AlertRow, AlertStatus


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    return [route("/alerts", alerts_page, pages)]


async def alerts_page(pages: Pages, request: Request) -> Response:
    """An unknown status is a 400 naming the known ones (not an empty list); a suppressed alert links to the one
    in force, and the last 24 hours' suppressed count says how much the cooldowns kept quiet."""
    reader = pages.gate.reader
    wanted = query_values(request, {"status"}).get("status", "").strip()
    statuses = tuple(s.value for s in AlertStatus)
    if wanted and wanted not in statuses:
        raise HTTPException(400, f"status: {wanted!r} is not one of {', '.join(statuses)}")
    rows = queries.alerts(reader, (wanted,) if wanted else statuses, limit=200)
    held = _held_by(reader, [a["id"] for a in rows if a["status"] == AlertStatus.SUPPRESSED.value])
    for row in rows:
        row["held"] = held.get(row["id"])
    since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=24)
    return pages.page(request, "alerts.html", rows=rows, status=wanted, statuses=statuses,
                      suppressed=queries.suppressed_alerts(reader, since))


def _held_by(reader: Engine, ids: list[int]) -> dict[int, dict]:
    """For suppressed alerts: the alert whose cooldown held each back (id, status, inspection) and the cooldown."""
    if not ids:
        return {}
    with reader.connect() as connection:
        payloads = dict(connection.execute(select(AlertRow.id, AlertRow.payload).where(AlertRow.id.in_(ids))).all())
        by = {int(p["suppressed_by"]) for p in payloads.values() if isinstance((p or {}).get("suppressed_by"), int)}
        in_force = {i: (status, inspection) for i, status, inspection in connection.execute(
            select(AlertRow.id, AlertRow.status, AlertRow.inspection_id).where(AlertRow.id.in_(by)))} if by else {}
    held = {}
    for alert_id, payload in payloads.items():
        payload = payload or {}
        by_id = payload.get("suppressed_by")
        status, inspection = in_force.get(by_id, (None, None))
        held[alert_id] = {"by": by_id, "status": status, "inspection": inspection,
                          "cooldown_s": payload.get("cooldown_s")}
    return held

"""The stats page: days, shifts, scores and review agreement over the last N days (``store/stats.py``)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from inspectd.console import history
from inspectd.console.context import ConsoleContext
from inspectd.console.pages import Pages, query_values, route
from inspectd.store.stats import collect


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    return [route("/stats", stats_page, context, pages)]


async def stats_page(context: ConsoleContext, pages: Pages, request: Request) -> Response:
    """Days counted in ``console.time_zone`` (the plant's days, as ``inspectd stats``); 1 to 366 of them, anything
    else a 400 naming the parameter."""
    try:
        days = history.integer("days", query_values(request, {"days"}).get("days", "").strip() or "14", 1, 366,
                               "a number of days")
    except history.BadFilter as exc:
        raise HTTPException(400, str(exc)) from None
    stats = collect(pages.gate.reader, days, context.settings.time_zone, context.settings.shifts)
    return pages.page(request, "stats.html", stats=stats, days=days)

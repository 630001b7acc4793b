"""The history page: inspections newest first, filtered, in keyset pages (the query: ``console/history.py``)."""

from __future__ import annotations

import dataclasses

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from inspectd.console import history as history_query
from inspectd.console.context import ConsoleContext
from inspectd.console.pages import Pages, route
from inspectd.store.reviews import agrees, reviews_of
from inspectd.verdict import Verdict


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    return [route("/history", history_page, context, pages)]


async def history_page(context: ConsoleContext, pages: Pages, request: Request) -> Response:
    """A filter the page cannot parse is a 400 naming it (not an empty page that looks like no defects); each row
    shows its latest review and whether it agrees with the verdict, read for the page's rows in one query."""
    reader = pages.gate.reader
    try:
        query = history_query.parse_query(request.query_params.multi_items(), context.settings.page_size * 10,
                                          pages.zone)
    except history_query.BadFilter as exc:
        raise HTTPException(400, str(exc)) from None
    if "size" not in request.query_params:
        query = dataclasses.replace(query, size=context.settings.page_size)
    rows, following = history_query.page(reader, query)
    reviews = reviews_of(reader, [r["id"] for r in rows])
    for row in rows:
        latest = reviews.get(row["id"], [None])[-1]
        row["review"] = latest
        row["agrees"] = None if latest is None else agrees(row["verdict"], latest.label)
    return pages.page(request, "history.html", rows=rows, query=query, following=following,
                      cameras=history_query.cameras(reader), verdicts=[v.value for v in Verdict])

"""What every page handler shares: the templates and their filters, the ``page`` renderer, the store gate,
the row of an inspection, and the request helpers (the user, the inspection id, the query parameters).

Built once per app (``Pages``) and handed to each resource's ``routes`` (``routes/``): one gate, so every
handler and the wait-for-store middleware see the same readiness, and one Jinja2 environment.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from inspectd.console import history
from inspectd.console.context import ConsoleContext
from inspectd.store import queries

HERE = Path(__file__).resolve().parent
log = logging.getLogger("inspectd.console")

NUMBER = "{inspection_id:int}"  # the inspection id in a route's path (``id_of`` reads it back)


class Pages:
    """The page renderer and the store gate that every handler of one app uses."""

    def __init__(self, context: ConsoleContext) -> None:
        self.gate = context.gate()  # once: without ``context.store`` each call would build a new gate
        self.csrf = context.csrf
        self.zone = ZoneInfo(context.settings.time_zone)
        self.templates = templates_for(self.zone)

    def page(self, request: Request, name: str, http_status: int = 200, **values) -> Response:
        """A template with the user and their CSRF token: every page's header shows the one, forms post the other."""
        user = user_of(request)
        values.update(user=user, csrf=self.csrf.token(user or "local"))
        return self.templates.TemplateResponse(request, name, values, status_code=http_status)

    def record_of(self, inspection_id: int) -> dict:
        """The inspection's row, or a 404 naming it (pages and pictures alike start from the row)."""
        record = queries.inspection(self.gate.reader, inspection_id)
        if record is None:
            raise HTTPException(404, f"inspection {inspection_id} does not exist")
        return record


def templates_for(zone: ZoneInfo) -> Jinja2Templates:
    """The console's templates (``.html`` autoescaped) with times shown in ``console.time_zone``: the store keeps
    naive UTC, the engineers read their plant's clock."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["local"] = functools.partial(_local, zone)
    templates.env.filters["local_input"] = functools.partial(_local_input, zone)
    templates.env.globals["zone"] = zone.key
    return templates


def _local(zone: ZoneInfo, value: datetime | None) -> str:
    if value is None:
        return ""
    return value.replace(tzinfo=timezone.utc).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _local_input(zone: ZoneInfo, value: datetime | None) -> str:
    """A UTC time as a datetime-local input's value in the console's zone."""
    return "" if value is None else value.replace(tzinfo=timezone.utc).astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def route(path: str, handler: Callable, *bound, methods: list[str] | None = None) -> Route:
    """``handler(*bound, request)`` served at ``path``: handlers are plain module functions that are given what
    they use (context, pages, ...) instead of closing over it; the route keeps the handler's name."""
    return Route(path, functools.partial(handler, *bound), methods=methods, name=handler.__name__)


def user_of(request: Request) -> str | None:
    """The logged-in user (``middleware.Authenticated`` puts it in the scope); None without a users file."""
    return request.scope.get("inspectd.user")


def id_of(request: Request) -> int:
    """The path's inspection id; one past SQLite's integers is a 404 like any id that is not there (not a 500)."""
    value = request.path_params["inspection_id"]
    if value > 2**62:
        raise HTTPException(404, f"inspection {value} does not exist")
    return value


def query_values(request: Request, known: set[str]) -> dict[str, str]:
    """One value per known query parameter; a repeated or unknown one is a 400 naming it."""
    try:
        return history.single_values(request.query_params.multi_items(), known)
    except history.BadFilter as exc:
        raise HTTPException(400, str(exc)) from None

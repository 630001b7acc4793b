"""``inspectd serve``: the engineers' web console (Starlette, server-side Jinja2 pages, no JS build, no CDN).

Read-only over the store except for reviews (``store/reviews.py``). Every
request is authenticated when a users file is set; without one the console
refuses to listen anywhere but loopback (``serve.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from inspectd.config import ConsoleSettings
from inspectd.console import history, photos
from inspectd.console.auth import CsrfTokens, Users
from inspectd.console.stats import collect
from inspectd.data.archived_photos import PhotoRoots
from inspectd.inspection.result import Verdict
from inspectd.store import queries, token_maps
from inspectd.store.database import StoreError
from inspectd.store.reviews import add_review, agrees, reviews_of
from inspectd.store.schema import AlertStatus, ReviewLabel

HERE = Path(__file__).resolve().parent
log = logging.getLogger("inspectd.console")


@dataclass(frozen=True)
class ConsoleContext:
    """What the pages need; built once by ``serve``."""

    reader: Engine  # read-only
    writer: Engine  # may write reviews and nothing else
    settings: ConsoleSettings
    roots: PhotoRoots
    users: Users | None
    csrf: CsrfTokens


def _user(request: Request) -> str | None:
    return request.scope.get("inspectd.user")


def _id(request: Request) -> int:
    value = request.path_params["inspection_id"]
    if value > 2**62:
        raise HTTPException(404, f"inspection {value} does not exist")
    return value


def create_app(context: ConsoleContext) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescapes .html
    zone = ZoneInfo(context.settings.time_zone)

    def local(value: datetime | None) -> str:
        if value is None:
            return ""
        return value.replace(tzinfo=timezone.utc).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    def local_input(value: datetime | None) -> str:
        """A UTC time as a datetime-local input's value in the console's zone."""
        return "" if value is None else value.replace(tzinfo=timezone.utc).astimezone(zone).strftime("%Y-%m-%dT%H:%M")

    templates.env.filters["local"] = local
    templates.env.filters["local_input"] = local_input
    templates.env.globals["zone"] = context.settings.time_zone

    def page(request: Request, name: str, http_status: int = 200, **values) -> Response:
        user = _user(request)
        values.update(user=user, csrf=context.csrf.token(user or "local"))
        return templates.TemplateResponse(request, name, values, status_code=http_status)

    def record_of(inspection_id: int) -> dict:
        record = queries.inspection(context.reader, inspection_id)
        if record is None:
            raise HTTPException(404, f"inspection {inspection_id} does not exist")
        return record

    async def history_page(request: Request) -> Response:
        try:
            query = history.parse_query(dict(request.query_params), context.settings.page_size * 10, zone)
        except history.BadFilter as exc:
            raise HTTPException(400, str(exc)) from None
        if "size" not in request.query_params:
            query = dataclasses.replace(query, size=context.settings.page_size)
        rows, following = history.page(context.reader, query)
        reviews = reviews_of(context.reader, [r["id"] for r in rows])
        for row in rows:
            latest = reviews.get(row["id"], [None])[-1]
            row["review"] = latest
            row["agrees"] = None if latest is None else agrees(row["verdict"], latest.label)
        return page(request, "history.html", rows=rows, query=query, following=following,
                    cameras=history.cameras(context.reader), verdicts=[v.value for v in Verdict])

    async def inspection_page(request: Request) -> Response:
        inspection_id = _id(request)
        record = record_of(inspection_id)
        tokens = queries.token_maps(context.reader, inspection_id)
        segments = _reasoning_segments(record.get("reasoning") or "", tokens)
        return page(request, "inspection.html", r=record, has_maps=record["has_maps"],
                    has_photo=context.roots.path_of(record) is not None, segments=segments,
                    reviews=reviews_of(context.reader, [inspection_id]).get(inspection_id, []),
                    labels=[label.value for label in ReviewLabel])

    async def review(request: Request) -> Response:
        inspection_id = _id(request)
        _same_origin(request)
        form = await request.form()
        user = _user(request)
        if not context.csrf.valid(user or "local", form.get("csrf")):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and submit again")
        label = str(form.get("label", ""))
        if label not in {lab.value for lab in ReviewLabel}:
            raise HTTPException(400, f"label: {label!r} is not good or defect")
        reviewer = user or str(form.get("reviewer", "")).strip()[:200]
        if not reviewer:
            raise HTTPException(400, "reviewer: say who you are (no users file: the form asks for a name)")
        note = str(form.get("note", ""))
        if len(note) > 2000:
            raise HTTPException(400, "note: longer than 2000 characters")
        try:
            add_review(context.writer, inspection_id, label, note, reviewer)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None
        log.info("review of #%d by %s: %s", inspection_id, reviewer, label)
        return RedirectResponse(f"/inspections/{inspection_id}", status_code=303)

    def picture(kind: str):
        async def endpoint(request: Request) -> Response:
            inspection_id = _id(request)
            record = record_of(inspection_id)
            if kind in ("photo", "thumb"):
                image = context.roots.photo(record)
                if image is None:
                    raise HTTPException(404, f"the photo of inspection {inspection_id} is not in the archive")
                body = photos.jpeg(image, 160 if kind == "thumb" else None)
                return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
            maps = queries.artifacts(context.reader, inspection_id)
            if maps is None:
                raise HTTPException(404, f"inspection {inspection_id} has no anomaly map")
            if kind == "heat":
                body = photos.heat_png(maps[0])
            elif kind == "outline":
                body = photos.outline_png(maps[1])
            else:
                body = _token_picture(context, inspection_id, record, request.path_params["token"])
            return Response(body, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
        return endpoint

    async def alerts_page(request: Request) -> Response:
        wanted = request.query_params.get("status", "")
        statuses = tuple(s.value for s in AlertStatus)
        if wanted and wanted not in statuses:
            raise HTTPException(400, f"status: {wanted!r} is not one of {', '.join(statuses)}")
        rows = queries.alerts(context.reader, (wanted,) if wanted else statuses, limit=200)
        return page(request, "alerts.html", rows=rows, status=wanted, statuses=statuses)

    async def stats_page(request: Request) -> Response:
        days = request.query_params.get("days", "14")
        if not days.isdigit() or not 1 <= int(days) <= 366:
            raise HTTPException(400, f"days: {days!r} is not a number of days from 1 to 366")
        stats = collect(context.reader, int(days), context.settings.time_zone, context.settings.shifts)
        return page(request, "stats.html", stats=stats, days=int(days))

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def home(_request: Request) -> Response:
        return RedirectResponse("/history", status_code=307)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.endswith((".png", ".jpg")) or exc.status_code == 401:
            headers = {"WWW-Authenticate": 'Basic realm="inspectd", charset="UTF-8"'} if exc.status_code == 401 else None
            return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=headers)
        return page(request, "error.html", http_status=exc.status_code, code=exc.status_code, message=exc.detail)

    number = "{inspection_id:int}"
    routes = [
        Route("/", home),
        Route("/history", history_page),
        Route(f"/inspections/{number}", inspection_page),
        Route(f"/inspections/{number}/review", review, methods=["POST"]),
        Route(f"/inspections/{number}/photo.jpg", picture("photo")),
        Route(f"/inspections/{number}/thumb.jpg", picture("thumb")),
        Route(f"/inspections/{number}/heat.png", picture("heat")),
        Route(f"/inspections/{number}/outline.png", picture("outline")),
        Route(f"/inspections/{number}/tokens/{{token:int}}.png", picture("token")),
        Route("/alerts", alerts_page),
        Route("/stats", stats_page),
        Route("/healthz", healthz),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return _Authenticated(app, context.users)


def _same_origin(request: Request) -> None:
    """A browser names the page that posts; a form from another site is refused even before the token check."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-site request refused (from {origin})")


def _token_picture(context: ConsoleContext, inspection_id: int, record: dict, token: int) -> bytes:
    tokens = queries.token_maps(context.reader, inspection_id)
    if tokens is None or not 0 <= token < tokens.maps.shape[0]:
        raise HTTPException(404, f"inspection {inspection_id} has no reasoning token {token}")
    size = (record.get("image_width") or 256, record.get("image_height") or 256)
    return photos.token_png(tokens.maps[token], size)


def _reasoning_segments(reasoning: str, tokens: token_maps.TokenMaps | None) -> list[dict]:
    """The reasoning cut at token boundaries: text, token index (None between tokens), kept by ReAL."""
    if tokens is None:
        return [{"text": reasoning, "token": None, "kept": False}] if reasoning else []
    segments, position = [], 0
    for index, (start, end) in enumerate(tokens.spans.tolist()):
        if start < position or end <= start:
            continue
        if start > position:
            segments.append({"text": reasoning[position:start], "token": None, "kept": False})
        segments.append({"text": reasoning[start:end], "token": index, "kept": bool(tokens.kept[index])})
        position = end
    if position < len(reasoning):
        segments.append({"text": reasoning[position:], "token": None, "kept": False})
    return segments


class _Authenticated:
    """ASGI wrapper: with users, every HTTP request needs valid Basic credentials (401 otherwise)."""

    def __init__(self, app, users: Users | None) -> None:
        self.app, self.users = app, users

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.users is not None and scope["path"] != "/healthz":
            headers = dict(scope["headers"])
            user = self.users.check(headers.get(b"authorization", b"").decode("latin-1"))
            if user is None:
                body = b"authentication required\n"
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Basic realm="inspectd", charset="UTF-8"')]})
                await send({"type": "http.response.body", "body": body})
                return
            scope = {**scope, "inspectd.user": user}
        await self.app(scope, receive, send)


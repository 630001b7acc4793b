"""``inspectd serve``: the engineers' web console (Starlette, server-side Jinja2 pages, no JS build, no CDN).

Read-only over the store except for reviews (``store/reviews.py``). Every
request is authenticated when a users file is set; without one the console
refuses to listen anywhere but loopback (``serve.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from inspectd.config import ConsoleSettings
from inspectd.console import history, photos
from inspectd.console.auth import CsrfTokens, LoginThrottle, Users
from inspectd.console.guards import SecurityHeaders, host_allowed, hosts_of
from inspectd.console.render_cache import RenderCache
from inspectd.console.store_gate import StoreGate
from inspectd.data.archived_photos import PhotoChanged, PhotoRoots
from inspectd.errors import InspectdError
from inspectd.verdict import Verdict
from inspectd.store import queries, token_maps
from inspectd.store.database import StoreError
from inspectd.store.reviews import add_review, agrees, reviews_of
from inspectd.store.schema import AlertRow, AlertStatus, ReviewLabel
from inspectd.store.stats import collect

HERE = Path(__file__).resolve().parent
log = logging.getLogger("inspectd.console")


@dataclass(frozen=True)
class ConsoleContext:
    """What the pages need; built once by ``serve``."""

    reader: Engine | None  # read-only (None: ``store`` opens it once the store is ready)
    writer: Engine | None  # may write reviews and nothing else
    settings: ConsoleSettings
    roots: PhotoRoots
    users: Users | None
    csrf: CsrfTokens
    store: StoreGate | None = None  # ``serve``: the store may not exist yet when the console starts

    def gate(self) -> StoreGate:
        return self.store if self.store is not None else StoreGate.of(self.reader, self.writer)


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
    hosts = hosts_of(context.settings)
    gate = context.gate()

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
        record = queries.inspection(gate.reader, inspection_id)
        if record is None:
            raise HTTPException(404, f"inspection {inspection_id} does not exist")
        return record

    async def history_page(request: Request) -> Response:
        try:
            query = history.parse_query(request.query_params.multi_items(), context.settings.page_size * 10, zone)
        except history.BadFilter as exc:
            raise HTTPException(400, str(exc)) from None
        if "size" not in request.query_params:
            query = dataclasses.replace(query, size=context.settings.page_size)
        rows, following = history.page(gate.reader, query)
        reviews = reviews_of(gate.reader, [r["id"] for r in rows])
        for row in rows:
            latest = reviews.get(row["id"], [None])[-1]
            row["review"] = latest
            row["agrees"] = None if latest is None else agrees(row["verdict"], latest.label)
        return page(request, "history.html", rows=rows, query=query, following=following,
                    cameras=history.cameras(gate.reader), verdicts=[v.value for v in Verdict])

    async def inspection_page(request: Request) -> Response:
        inspection_id = _id(request)
        record = record_of(inspection_id)
        tokens = queries.token_maps(gate.reader, inspection_id)
        segments = _reasoning_segments(record.get("reasoning") or "", tokens)
        return page(request, "inspection.html", r=record, has_maps=record["has_maps"],
                    has_photo=context.roots.path_of(record) is not None, segments=segments, photo=_photo_now(record),
                    reviews=reviews_of(gate.reader, [inspection_id]).get(inspection_id, []),
                    labels=[label.value for label in ReviewLabel])

    async def review(request: Request) -> Response:
        """A form field must be text (a multipart file is refused, naming the field); the reviewer's name is
        refused with control characters (it reaches logs and CSV), the note's are dropped (newline, tab kept)."""
        inspection_id = _id(request)
        _same_origin(request, hosts)
        form = await request.form()
        seen = set()
        for name, value in form.multi_items():
            if isinstance(value, UploadFile) or not isinstance(value, str):
                raise HTTPException(400, f"{name[:40]}: a file upload is not accepted here, only text")
            if name in seen:
                raise HTTPException(400, f"{name[:40]}: given more than once")
            seen.add(name)
        user = _user(request)
        if not context.csrf.valid(user or "local", form.get("csrf")):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and submit again")
        label = str(form.get("label", ""))
        if label not in {lab.value for lab in ReviewLabel}:
            raise HTTPException(400, f"label: {label[:40]!r} is not good or defect")
        reviewer = user or str(form.get("reviewer", "")).strip()
        if not reviewer:
            raise HTTPException(400, "reviewer: say who you are (no users file: the form asks for a name)")
        if len(reviewer) > 200:
            raise HTTPException(400, "reviewer: longer than 200 characters")
        if _NAME_CONTROLS.search(reviewer):
            raise HTTPException(400, "reviewer: control characters (a newline, CR, escape...) are not part of a name")
        note = _NOTE_CONTROLS.sub("", str(form.get("note", "")).replace("\r\n", "\n"))
        if len(note) > 2000:
            raise HTTPException(400, "note: longer than 2000 characters")
        try:
            add_review(gate.writer, inspection_id, label, note, reviewer)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None
        log.info("review of #%d by %r: %s", inspection_id, reviewer, label)  # %r: a name never forges a line
        return RedirectResponse(f"/inspections/{inspection_id}", status_code=303)

    renders = RenderCache()  # one pool and cache for every picture route of this app

    def picture(kind: str):
        """Rendered off the event loop and cached (``render_cache.py``): a camera photo took seconds on the loop,
        and every other request of every user waited for it. Only the row is read here (a key lookup)."""
        media = "image/jpeg" if kind in ("photo", "thumb") else "image/png"

        async def endpoint(request: Request) -> Response:
            inspection_id = _id(request)
            record = record_of(inspection_id)
            token = request.path_params.get("token")
            if media == "image/jpeg" and context.roots.path_of(record) is None:  # retention removed it, say
                raise HTTPException(404, f"the photo of inspection {inspection_id} is not in the archive")
            if media == "image/png" and not record["has_maps"]:
                raise HTTPException(404, f"inspection {inspection_id} has no anomaly map")
            key = (inspection_id, record.get("sha256"), kind, token)
            try:
                body = await renders.get(key, functools.partial(_picture_body, context, gate.reader, record, kind, token))
            except PhotoChanged as exc:
                raise HTTPException(409, str(exc)) from None
            return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=3600"})
        return endpoint

    async def alerts_page(request: Request) -> Response:
        wanted = _query(request, {"status"}).get("status", "").strip()
        statuses = tuple(s.value for s in AlertStatus)
        if wanted and wanted not in statuses:
            raise HTTPException(400, f"status: {wanted!r} is not one of {', '.join(statuses)}")
        rows = queries.alerts(gate.reader, (wanted,) if wanted else statuses, limit=200)
        held = _held_by(gate.reader, [a["id"] for a in rows if a["status"] == AlertStatus.SUPPRESSED.value])
        for row in rows:
            row["held"] = held.get(row["id"])
        since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=24)
        return page(request, "alerts.html", rows=rows, status=wanted, statuses=statuses,
                    suppressed=queries.suppressed_alerts(gate.reader, since))

    async def stats_page(request: Request) -> Response:
        try:
            days = history.integer("days", _query(request, {"days"}).get("days", "").strip() or "14", 1, 366,
                                   "a number of days")
        except history.BadFilter as exc:
            raise HTTPException(400, str(exc)) from None
        stats = collect(gate.reader, days, context.settings.time_zone, context.settings.shifts)
        return page(request, "stats.html", stats=stats, days=days)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")  # while the store is not ready, _WaitForStore answers 503 "starting"

    async def favicon(_request: Request) -> Response:
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

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
        Route("/favicon.ico", favicon),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, max_body_size=64 * 1024)
    settings = context.settings
    waiting = _WaitForStore(app, gate, templates)
    guarded = _Authenticated(waiting, context.users, LoginThrottle(settings.login_failures, settings.login_window_s))
    # Outermost first: headers on every answer (400 and 401 too); the Host before any login check or page; the
    # store's readiness after them (a console waiting for its store shows nothing to a stranger either).
    return SecurityHeaders(TrustedHostMiddleware(guarded, allowed_hosts=list(hosts), www_redirect=False))


_NAME_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NOTE_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def _query(request: Request, known: set[str]) -> dict[str, str]:
    """One value per known query parameter; a repeated or unknown one is a 400 naming it."""
    try:
        return history.single_values(request.query_params.multi_items(), known)
    except history.BadFilter as exc:
        raise HTTPException(400, str(exc)) from None


def _same_origin(request: Request, hosts: tuple[str, ...]) -> None:
    """A browser names the page that posts; a form from another site is refused even before the token check.

    The origin must be this very Host and one of the allowed names: a rebinding name is refused here too."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return
    try:
        parts = urlsplit(origin)
        host = parts.hostname or ""
    except ValueError:
        host, parts = "", None
    host = f"[{host}]" if ":" in host else host
    if parts is None or parts.netloc != request.headers.get("host") or not host_allowed(host, hosts):
        raise HTTPException(403, f"cross-site request refused (from {origin[:200]!r})")


def _picture_body(context: ConsoleContext, reader: Engine, record: dict, kind: str, token: int | None) -> bytes:
    """One picture's bytes, in a worker thread: reads the file or the row's blobs and renders at most
    ``photos.LONGEST_SIDE`` px (the photo's layers at the photo's served size, so that they line up with it)."""
    inspection_id = record["id"]
    if kind in ("photo", "thumb"):
        data = context.roots.read(record)  # PhotoChanged when the file is not the one inspected
        if data is not None:
            try:
                return photos.photo_jpeg(data, str(record.get("archived_path") or record.get("source_path")),
                                         context.roots.max_pixels,
                                         photos.THUMB_SIDE if kind == "thumb" else photos.LONGEST_SIDE)
            except InspectdError:
                pass
        raise HTTPException(404, f"the photo of inspection {inspection_id} is not in the archive")
    if kind == "token":
        return _token_picture(reader, inspection_id, record, token)
    maps = queries.artifacts(reader, inspection_id)
    if maps is None:
        raise HTTPException(404, f"inspection {inspection_id} has no anomaly map")
    return photos.heat_png(maps[0]) if kind == "heat" else photos.outline_png(maps[1])


def _token_picture(reader: Engine, inspection_id: int, record: dict, token: int) -> bytes:
    tokens = queries.token_maps(reader, inspection_id)
    if tokens is None or not 0 <= token < tokens.maps.shape[0]:
        raise HTTPException(404, f"inspection {inspection_id} has no reasoning token {token}")
    # the photo's own size: the layer is fitted to it exactly as the photo is (same aspect, same pixels)
    size = (record.get("image_width") or 256, record.get("image_height") or 256)
    return photos.token_png(tokens.maps[token], size)


def _photo_now(record: dict) -> dict:
    """Where the row's photo is now: the archive (or the failed folder), still the drop path (keep mode, or not
    moved yet), or removed by retention (the row keeps its last path)."""
    if record.get("photo_removed_at") is not None:
        return {"state": "removed", "path": record.get("archived_path") or record.get("source_path"),
                "at": record["photo_removed_at"]}
    if record.get("archived_path"):
        return {"state": "archived", "path": record["archived_path"]}
    return {"state": "dropped", "path": record.get("source_path")}


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
    """ASGI wrapper: with users, every HTTP request needs valid Basic credentials (401 otherwise).

    A client address out of login tries gets 429 with Retry-After before anything is checked (its correct
    password included: a remembered success must not become a free oracle). The scrypt check runs in a worker
    thread, at most ``checks`` at a time, so a guesser does not stall the event loop that serves logged-in users;
    a remembered success is answered on the loop at once.
    """

    # Concurrent scrypt checks (16 MiB and one core each): half the cores, so the event loop keeps one for itself.
    checks = max(1, min(4, len(os.sched_getaffinity(0)) // 2))

    def __init__(self, app, users: Users | None, throttle: LoginThrottle) -> None:
        self.app, self.users, self.throttle = app, users, throttle
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.users is not None and scope["path"] != "/healthz":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            client = (scope.get("client") or ("unknown",))[0]
            wait = self.throttle.retry_after(client)
            if wait:
                await _plain(send, 429, b"too many failed logins from this address: try again later\n",
                             [(b"retry-after", str(wait).encode())])
                return
            user = self.users.cached(header)
            if user is None and header:
                if self._limiter is None:
                    self._limiter = anyio.CapacityLimiter(self.checks)
                if not self.throttle.take(client):  # spent meanwhile by a concurrent try
                    await _plain(send, 429, b"too many failed logins from this address: try again later\n",
                                 [(b"retry-after", str(self.throttle.retry_after(client)).encode())])
                    return
                user = await anyio.to_thread.run_sync(self.users.check, header, limiter=self._limiter)
                if user is not None:
                    self.throttle.give_back(client)
                elif self.throttle.retry_after(client):  # once per empty bucket, not once per refused request
                    log.warning("too many failed logins from %s: answered 429 for %d s", client,
                                self.throttle.retry_after(client))
            if user is None:
                await _plain(send, 401, b"authentication required\n",
                             [(b"www-authenticate", b'Basic realm="inspectd", charset="UTF-8"')])
                return
            scope = {**scope, "inspectd.user": user}
        await self.app(scope, receive, send)


class _WaitForStore:
    """ASGI wrapper: until the store is ready every page is a 503 "daemon starting" page that reloads itself
    (``<meta http-equiv="refresh">``: no script, so the CSP holds), /healthz a 503 "starting", a picture a plain
    503; the static files are served (the page's style sheet and icon). Readiness is a flag the gate's thread
    sets: no request waits on the database."""

    refresh_s = 3

    def __init__(self, app, gate: StoreGate, templates: Jinja2Templates) -> None:
        self.app, self.gate, self.templates = app, gate, templates

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or self.gate.ready or path.startswith("/static/") or path == "/favicon.ico":
            await self.app(scope, receive, send)
            return
        why = self.gate.why
        retry = [(b"retry-after", str(self.refresh_s).encode()), (b"cache-control", b"no-store")]
        if path == "/healthz" or path.endswith((".png", ".jpg")):
            await _plain(send, 503, f"starting: waiting for the store ({why})\n".encode(), retry)
            return
        request = Request(scope, receive)
        response = self.templates.TemplateResponse(
            request, "starting.html", {"why": why, "refresh_s": self.refresh_s, "user": _user(request)},
            status_code=503, headers={"Retry-After": str(self.refresh_s), "Cache-Control": "no-store"})
        await response(scope, receive, send)


async def _plain(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})

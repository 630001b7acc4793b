"""The console's own ASGI wrappers around its pages: login (``Authenticated``) and the store's readiness
(``WaitForStore``). ``app.create_app`` puts them inside ``guards.SecurityHeaders`` and the Host check."""

from __future__ import annotations

import logging
import os

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from inspectd.console.auth import LoginThrottle, Users
from inspectd.console.pages import user_of
from inspectd.console.store_gate import StoreGate

log = logging.getLogger("inspectd.console")


class Authenticated:
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
                await _too_many(send, wait)
                return
            user = self.users.cached(header)
            if user is None and header:
                if not self.throttle.take(client):  # spent meanwhile by a concurrent try
                    await _too_many(send, self.throttle.retry_after(client))
                    return
                user = await self._check(header, client)
            if user is None:
                await _plain(send, 401, b"authentication required\n",
                             [(b"www-authenticate", b'Basic realm="inspectd", charset="UTF-8"')])
                return
            scope = {**scope, "inspectd.user": user}
        await self.app(scope, receive, send)

    async def _check(self, header: str, client: str) -> str | None:
        """The scrypt check off the loop (one of the client's tries already taken): a success gives it back."""
        if self._limiter is None:  # created on first use: it belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self.checks)
        user = await anyio.to_thread.run_sync(self.users.check, header, limiter=self._limiter)
        if user is not None:
            self.throttle.give_back(client)
        elif self.throttle.retry_after(client):  # once per empty bucket, not once per refused request
            log.warning("too many failed logins from %s: answered 429 for %d s", client,
                        self.throttle.retry_after(client))
        return user


class WaitForStore:
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
            request, "starting.html", {"why": why, "refresh_s": self.refresh_s, "user": user_of(request)},
            status_code=503, headers={"Retry-After": str(self.refresh_s), "Cache-Control": "no-store"})
        await response(scope, receive, send)


async def _too_many(send, wait: int) -> None:
    await _plain(send, 429, b"too many failed logins from this address: try again later\n",
                 [(b"retry-after", str(wait).encode())])


async def _plain(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A plain-text answer sent straight from a wrapper (no route, no template: before login, before the store)."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})

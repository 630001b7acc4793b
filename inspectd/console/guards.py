"""What stands between the plant network and the console's pages: Host names, security headers, slow clients.

* ``hosts_of``: the Host names the console answers to; ``AllowedHosts``
  refuses the others with 400 naming the setting that adds one. Without it a
  page on any site whose name resolves to 127.0.0.1 (DNS rebinding) is "same
  origin" with the console and can read it and post reviews.
* ``SecurityHeaders``: a Content-Security-Policy and friends on every response,
  so the console cannot be framed (clickjacking a review), a picture is never
  sniffed as HTML, and no script but the console's own static files runs.
* ``guarded_protocol``: uvicorn's h11 protocol with a request deadline and a
  cap on open connections; uvicorn 0.55 has neither a header timeout (its
  keep-alive timer starts only after a first response and any byte cancels it)
  nor a cap on idle sockets (``limit_concurrency`` answers 503 only once a
  request's headers arrived), so 1,100 idle sockets exhausted the descriptors.
"""

from __future__ import annotations

import ipaddress
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

from inspectd.config import ConsoleSettings
from inspectd.safe_text import escape_controls

log = logging.getLogger("inspectd.console")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
POLICY = ("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
HEADERS = (
    (b"content-security-policy", POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def hosts_of(settings: ConsoleSettings, address: str | None = None) -> tuple[str, ...]:
    """The loopback names, the listen address (unless a wildcard) and ``console.allowed_hosts``."""
    hosts = list(LOOPBACK_HOSTS)
    address = (address or settings.address).strip().lower()
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        ip = None
    if ip is None or not ip.is_unspecified:  # 0.0.0.0 and :: are not names a browser sends
        hosts.append(f"[{ip}]" if ip is not None and ip.version == 6 else str(ip or address))
    hosts += settings.allowed_hosts
    return tuple(dict.fromkeys(hosts))


def host_allowed(host: str, hosts: tuple[str, ...]) -> bool:
    """``host`` (no port) matches a name or a ``*.domain`` pattern."""
    host = host.lower()
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in hosts)


def host_name(header: str) -> str:
    """The name of a Host header without its port: ``[::1]:8780`` -> ``[::1]``, ``a.b:8780`` -> ``a.b``."""
    header = header.strip()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.split(":", 1)[0]


class AllowedHosts:
    """ASGI middleware: a request whose Host is not one of ``hosts`` gets 400 before any login or page, saying
    which setting serves a name (starlette's TrustedHostMiddleware says only "Invalid host header", which leaves
    an operator who just moved the console behind a name guessing). The list itself is not shown: a rebinding
    page could read it."""

    def __init__(self, app, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan; the console has no websocket routes
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host_name(raw)
        if host_allowed(name, self.hosts):
            await self.app(scope, receive, send)
            return
        shown = escape_controls(name[:100]) or "(none)"
        body = (f"400 Bad Request: this console does not serve the host name {shown!r}. An operator adds the name "
                "engineers type to console.allowed_hosts in the configuration (DNS rebinding protection: only "
                "loopback names, the listen address and those names are served).\n").encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (pages, pictures, errors, 401/429, 400)."""

    _names = {name for name, _ in HEADERS}

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._names]
                message = {**message, "headers": headers + list(HEADERS)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request deadline and at most ``limit_concurrency`` open connections.

    A connection has ``request_timeout_s`` from its opening (and from the end of
    each response, for the next request on a kept-alive connection) to send a
    complete request: headers and body. One that has not is closed, however
    slowly it keeps dribbling bytes. A connection that would go past the cap
    closes the longest idle one (no request in flight); when every connection is
    busy it is answered 503 and closed. Pass the class as ``uvicorn.Config(http=...)``.
    """

    request_timeout_s: float = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = None
        self._arm()
        limit = self.limit_concurrency
        if limit is None or len(self.connections) < limit:
            return
        idle = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol) and c._idle()]
        if idle:
            min(idle, key=lambda c: c._idle_since)._drop()
        else:
            body = b"the console is busy: try again in a moment\n"
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
                            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self._drop()

    def connection_lost(self, exc) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        finished = self.cycle
        super().on_response_complete()
        if self.cycle is finished and not self.transport.is_closing():
            self._arm()  # the next request on this kept-alive connection gets its own deadline

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._awaited, self._idle_since = self.cycle, self.loop.time()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._too_slow)

    def _idle(self) -> bool:
        return not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete)

    def _too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is self._awaited or (cycle.more_body and not cycle.response_complete):
            log.debug("closed a connection from %s: no complete request within %.0f s", self.client,
                      self.request_timeout_s)
            self._drop()

    def _drop(self) -> None:
        self.connections.discard(self)  # counted free at once; uvicorn's connection_lost discards it again
        self.transport.close()


def guarded_protocol(settings: ConsoleSettings) -> type[GuardedH11Protocol]:
    """The protocol class with this console's request deadline (uvicorn builds one instance per connection)."""
    return type("ConsoleH11Protocol", (GuardedH11Protocol,), {"request_timeout_s": settings.request_timeout_s})

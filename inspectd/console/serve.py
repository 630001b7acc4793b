"""Start the console: check where it may listen, serve with uvicorn at once, open the store once it is ready.

The daemon creates and migrates the store when it starts; a console started
beside it answers from the first second, with a 503 "daemon starting" page until
the store is there at the head schema (``store_gate.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from inspectd.config import Settings
from inspectd.console.app import ConsoleContext, create_app
from inspectd.console.auth import CsrfTokens, Users, is_loopback
from inspectd.console.guards import guarded_protocol, hosts_of
from inspectd.data.archived_photos import PhotoRoots
from inspectd.console.store_gate import StoreGate
from inspectd.errors import InspectdError

log = logging.getLogger("inspectd.console")


def build_context(settings: Settings, address: str) -> ConsoleContext:
    """The console's context; its store is looked at once here, then once a second until ready (``watch``)."""
    console = settings.console
    users = Users.load(Path(console.users_file)) if console.users_file else None
    if users is None and not is_loopback(address):
        raise InspectdError(f"console: listening on {address} needs console.users_file (users and password hashes; "
                            "write lines with 'inspectd console-user NAME'); without one it binds loopback only")
    console = console.model_copy(update={"allowed_hosts": hosts_of(console, address)})  # --address included
    return ConsoleContext(reader=None, writer=None, settings=console, roots=PhotoRoots.of(settings), users=users,
                          csrf=CsrfTokens(), store=StoreGate(settings.store.url), config=settings)


def serve(settings: Settings, address: str | None = None, port: int | None = None) -> int:
    import uvicorn

    address = address or settings.console.address
    port = port or settings.console.port
    context = build_context(settings, address)
    gate = context.gate()
    gate.watch()
    host = f"[{address}]" if ":" in address else address
    print(f"inspectd console: http://{host}:{port}/ "
          f"({'login required' if context.users else 'no login: loopback only'})", flush=True)
    if not gate.ready:
        print(f"inspectd console: the store is not ready yet ({gate.why}): pages answer 503 \"daemon starting\" "
              "and reload themselves until it is", flush=True)
    console = context.settings
    if address in ("0.0.0.0", "::") and not settings.console.allowed_hosts:
        print("inspectd console: console.allowed_hosts is empty, so only requests to a loopback name are served "
              "(400 otherwise); list the names engineers type", flush=True)
    # A slow or idle client is disconnected after request_timeout_s; at most max_connections are open (the
    # unit's LimitNOFILE is 1024); a kept-alive connection waits timeout_keep_alive for its next request. The
    # backlog is also how many connections asyncio accepts in one go before any is handled: at uvicorn's 2048,
    # a burst of 1,100 sockets ran out of descriptors before the oldest idle ones could be closed.
    config = uvicorn.Config(create_app(context), host=address, port=port, log_level="warning", access_log=False,
                            server_header=False, proxy_headers=False, http=guarded_protocol(console),
                            limit_concurrency=console.max_connections, timeout_keep_alive=5,
                            backlog=console.max_connections)
    try:
        uvicorn.Server(config).run()
    finally:
        gate.close()
    return 0

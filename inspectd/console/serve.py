"""Start the console: check where it may listen, open the store, serve with uvicorn."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from inspectd.config import Settings
from inspectd.console.app import ConsoleContext, create_app
from inspectd.console.auth import CsrfTokens, Users, is_loopback
from inspectd.console.guards import guarded_protocol, hosts_of
from inspectd.data.archived_photos import PhotoRoots
from inspectd.errors import InspectdError
from inspectd.store.database import StoreError, current_revision, head_revision, open_engine
from inspectd.store.reviews import review_engine

log = logging.getLogger("inspectd.console")


def _wait_for_store(url: str, give_up_s: float | None):
    """The daemon creates and migrates the store; a console started beside it waits for that."""
    started, said = time.monotonic(), 0.0
    while True:
        try:
            engine = open_engine(url, create=False)
            if current_revision(engine) == head_revision():
                return engine
            engine.dispose()
            why = f"at an older schema than {head_revision()} (the daemon migrates it when it starts)"
        except StoreError as exc:
            why = str(exc)
        waited = time.monotonic() - started
        if give_up_s is not None and waited >= give_up_s:
            raise InspectdError(f"the store is not ready after {waited:.0f} s: {why}")
        if waited >= said:
            log.info("waiting for the store: %s", why)
            said = waited + 30
        time.sleep(0.5)


def build_context(settings: Settings, address: str, wait_s: float | None = None) -> ConsoleContext:
    console = settings.console
    users = Users.load(Path(console.users_file)) if console.users_file else None
    if users is None and not is_loopback(address):
        raise InspectdError(f"console: listening on {address} needs console.users_file (users and password hashes; "
                            "write lines with 'inspectd console-user NAME'); without one it binds loopback only")
    reader = _wait_for_store(settings.store.url, wait_s)
    console = console.model_copy(update={"allowed_hosts": hosts_of(console, address)})  # --address included
    return ConsoleContext(reader=reader, writer=review_engine(settings.store.url), settings=console,
                          roots=PhotoRoots.of(settings), users=users, csrf=CsrfTokens())


def serve(settings: Settings, address: str | None = None, port: int | None = None) -> int:
    import uvicorn

    address = address or settings.console.address
    port = port or settings.console.port
    context = build_context(settings, address)
    host = f"[{address}]" if ":" in address else address
    print(f"inspectd console: http://{host}:{port}/ "
          f"({'login required' if context.users else 'no login: loopback only'})", flush=True)
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
    uvicorn.Server(config).run()
    return 0

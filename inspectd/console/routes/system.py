"""The console's own routes: home, the health check, the icon and the static files (CSS, JS, no build step)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from inspectd.console.context import ConsoleContext
from inspectd.console.pages import HERE, Pages, route


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    return [
        route("/", home),
        route("/healthz", healthz),
        route("/favicon.ico", favicon),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]


async def home(_request: Request) -> Response:
    """The history is where engineers start; 307 so that a bookmark of / keeps working if that changes."""
    return RedirectResponse("/history", status_code=307)


async def healthz(_request: Request) -> Response:
    """Needs no login (``middleware.Authenticated``) so a probe needs no password."""
    return PlainTextResponse("ok\n")  # while the store is not ready, WaitForStore answers 503 "starting"


async def favicon(_request: Request) -> Response:
    """Browsers ask for /favicon.ico whatever the page says; served (and cached a day) before the store is ready."""
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})

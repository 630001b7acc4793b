"""``inspectd serve``: the engineers' web console (Starlette, server-side Jinja2 pages, no JS build, no CDN).

Read-only over the store except for reviews and, for a user with the ``promote`` right, a requested promotion or
rollback (``routes/models.py``; both through ``store/reviews.py``'s writer). Every
request is authenticated when a users file is set; without one the console
refuses to listen anywhere but loopback (``serve.py``).

Here only the assembly: the pages of each resource are in ``routes/`` (one module each), what they share in
``pages.py``, the login and wait-for-store wrappers in ``middleware.py``, the Host and header guards in
``guards.py``.
"""

from __future__ import annotations

import functools

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from inspectd.console.auth import LoginThrottle
from inspectd.console.context import ConsoleContext
from inspectd.console.guards import AllowedHosts, SecurityHeaders, hosts_of
from inspectd.console.middleware import Authenticated, WaitForStore
from inspectd.console.pages import Pages
from inspectd.console.routes import alerts, history, inspections, models, pictures, stats, system

__all__ = ["ConsoleContext", "create_app"]  # ConsoleContext is defined in context.py (the routes name it too)

RESOURCES = (system, history, inspections, pictures, alerts, stats, models)


def create_app(context: ConsoleContext) -> SecurityHeaders:
    """The console's ASGI app: every resource's routes behind the middleware stack, one ``Pages`` (one store
    gate, one template environment) shared by them all."""
    pages = Pages(context)
    routes = [route for resource in RESOURCES for route in resource.routes(context, pages)]
    app = Starlette(routes=routes, exception_handlers={HTTPException: functools.partial(_http_error, pages)},
                    max_body_size=64 * 1024)
    settings = context.settings
    waiting = WaitForStore(app, pages.gate, pages.templates)
    guarded = Authenticated(waiting, context.users, LoginThrottle(settings.login_failures, settings.login_window_s))
    # Outermost first: headers on every answer (400 and 401 too); the Host before any login check or page; the
    # store's readiness after them (a console waiting for its store shows nothing to a stranger either).
    return SecurityHeaders(AllowedHosts(guarded, hosts_of(settings)))


async def _http_error(pages: Pages, request: Request, exc: HTTPException) -> Response:
    """A picture's error is plain text (an <img> shows no page), a 401 asks for Basic credentials; any other is
    the error page, in the console's frame."""
    if request.url.path.endswith((".png", ".jpg")) or exc.status_code == 401:
        headers = {"WWW-Authenticate": 'Basic realm="inspectd", charset="UTF-8"'} if exc.status_code == 401 else None
        return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=headers)
    return pages.page(request, "error.html", http_status=exc.status_code, code=exc.status_code, message=exc.detail)

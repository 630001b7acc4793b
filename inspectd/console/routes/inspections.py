"""One inspection: its page (verdict, reasoning cut at its tokens, where the photo is now, reviews) and the
review form's POST (``store/reviews.py``; the console's other write is a promotion or rollback,
``routes/models.py``, which reuses the origin and form checks here)."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from inspectd.console.context import ConsoleContext
from inspectd.console.guards import host_allowed, hosts_of
from inspectd.console.pages import NUMBER, Pages, id_of, route, user_of
from inspectd.inspection.view_votes import view_votes
from inspectd.store import queries, token_maps
from inspectd.store.database import StoreError
from inspectd.store.reviews import add_review, reviews_of
from inspectd.store.schema import ReviewLabel

log = logging.getLogger("inspectd.console")

_NAME_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NOTE_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    hosts = hosts_of(context.settings)  # once per app: a review's origin must be one of them
    return [
        route(f"/inspections/{NUMBER}", inspection_page, context, pages),
        route(f"/inspections/{NUMBER}/review", review, context, pages, hosts, methods=["POST"]),
    ]


async def inspection_page(context: ConsoleContext, pages: Pages, request: Request) -> Response:
    """The photo's link only when the archive still has it (retention removes photos, the row stays)."""
    inspection_id = id_of(request)
    record = pages.record_of(inspection_id)
    tokens = queries.token_maps(pages.gate.reader, inspection_id)
    segments = _reasoning_segments(record.get("reasoning") or "", tokens)
    return pages.page(request, "inspection.html", r=record, has_maps=record["has_maps"],
                      has_photo=context.roots.path_of(record) is not None, segments=segments,
                      photo=_photo_now(record), views=view_votes(record),
                      reviews=reviews_of(pages.gate.reader, [inspection_id]).get(inspection_id, []),
                      labels=[label.value for label in ReviewLabel])


async def review(context: ConsoleContext, pages: Pages, hosts: tuple[str, ...], request: Request) -> Response:
    """Checked in the order that refuses a forged post soonest: same origin, text-only form, CSRF token; then the
    label, the reviewer and the note (``_reviewer``, ``_note``). 303 back to the page, so a reload does not post
    again."""
    inspection_id = id_of(request)
    _same_origin(request, hosts)
    form = await request.form()
    _text_only(form)
    user = user_of(request)
    if not context.csrf.valid(user or "local", form.get("csrf")):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and submit again")
    label = str(form.get("label", ""))
    if label not in {lab.value for lab in ReviewLabel}:
        raise HTTPException(400, f"label: {label[:40]!r} is not good or defect")
    reviewer = _reviewer(user, form)
    note = _note(form)
    try:
        add_review(pages.gate.writer, inspection_id, label, note, reviewer)
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from None
    log.info("review of #%d by %r: %s", inspection_id, reviewer, label)  # %r: a name never forges a line
    return RedirectResponse(f"/inspections/{inspection_id}", status_code=303)


def _text_only(form: FormData) -> None:
    """A form field must be text (a multipart file is refused, naming the field) and given once: a second value
    must not decide what is stored while the first was checked."""
    seen = set()
    for name, value in form.multi_items():
        if isinstance(value, UploadFile) or not isinstance(value, str):
            raise HTTPException(400, f"{name[:40]}: a file upload is not accepted here, only text")
        if name in seen:
            raise HTTPException(400, f"{name[:40]}: given more than once")
        seen.add(name)


def _reviewer(user: str | None, form: FormData) -> str:
    """The logged-in user, else the form's name; refused with control characters (it reaches logs and CSV)."""
    reviewer = user or str(form.get("reviewer", "")).strip()
    if not reviewer:
        raise HTTPException(400, "reviewer: say who you are (no users file: the form asks for a name)")
    if len(reviewer) > 200:
        raise HTTPException(400, "reviewer: longer than 200 characters")
    if _NAME_CONTROLS.search(reviewer):
        raise HTTPException(400, "reviewer: control characters (a newline, CR, escape...) are not part of a name")
    return reviewer


def _note(form: FormData) -> str:
    """The note's control characters are dropped (newline and tab kept: a note may have lines)."""
    note = _NOTE_CONTROLS.sub("", str(form.get("note", "")).replace("\r\n", "\n"))
    if len(note) > 2000:
        raise HTTPException(400, "note: longer than 2000 characters")
    return note


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


def _photo_now(record: dict) -> dict:
    """Where the row's photo is now: the archive (or the failed folder), still the drop path (keep mode, or not
    moved yet), or removed by retention (the row keeps its last path)."""
    if record.get("photo_removed_at") is not None:
        return {"state": "removed", "path": record.get("archived_path") or record.get("source_path"),
                "at": record["photo_removed_at"]}
    if record.get("archived_path"):
        return {"state": "archived", "path": record["archived_path"]}
    return {"state": "dropped", "path": record.get("source_path")}


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

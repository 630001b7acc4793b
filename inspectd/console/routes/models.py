"""The models page: champion against challenger (``store/model_comparison.py``), and one image side by side.

``/models`` lists every (champion bundle, challenger bundle) pair with results over the last N plant days
(``days``, as ``/stats`` counts them; optionally one camera): images compared, verdict agreement, and on the
reviewed images each model's miss rate, false-alarm rate and AUROC with their 95 % intervals and the difference.
The figures are ``compare()``'s own (run in a worker thread: its bootstrap is numpy work, not the event loop's);
this module only formats them.

Above the comparison, the pair the daemon runs (``promotion/selection.py``: the configuration file's, or the
newest applied promotion or rollback recorded against it), the recent changes with their status, and for a user
whose users-file line grants ``promote`` (``auth.py``) the Promote and Rollback forms. Their POSTs
(``/models/promote``, ``/models/rollback``) are checked like a review (same origin, text-only form, CSRF token)
and go through ``promotion/requests.request_change``, the CLI's own check, with the logged-in user as the actor:
refused, the page comes back (409) with every reason and nothing recorded; accepted, a ``requested`` row (the
console's writer may INSERT into ``model_changes`` and nothing more, ``store/reviews.py``) and a 303 to
``/models``, where the change waits for the daemon, which applies it through its reload path and marks it
applied or failed. While one waits, ``static/model_changes.js`` asks ``/models/changes/N`` every 2 s and
reloads the page once it is decided.

``/models/disagreements/N``: inspection N as the champion saw it (the photo with its heat map and mask outline,
``routes/pictures.py``) next to each challenger's result on the same photo (its layers at
``/inspections/N/challenger/B/heat.png`` and ``outline.png``, also ``routes/pictures.py``), each model's verdict,
score, threshold and reasoning, and the engineers' reviews.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import anyio.to_thread
from sqlalchemy import Engine, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from inspectd.config import Settings, load_settings
from inspectd.console import history
from inspectd.console.auth import PROMOTE
from inspectd.console.context import ConsoleContext
from inspectd.console.guards import hosts_of
from inspectd.console.pages import NUMBER, Pages, id_of, query_values, route, user_of
from inspectd.console.routes.inspections import _NAME_CONTROLS, _same_origin, _text_only
from inspectd.errors import InspectdError
from inspectd.inspection.view_votes import view_votes
from inspectd.promotion.rule import LABELS, recorded_figures
from inspectd.store.model_changes import ModelChange, change, newest_requested_id, recent_changes
from inspectd.store.model_comparison import Estimate, PairComparison, compare
from inspectd.store.reviews import reviews_of
from inspectd.store.schema import BundleRow, ChallengerResultRow
from inspectd.store.stats import day_start

log = logging.getLogger("inspectd.console")

DISAGREEMENTS = 20  # listed per pair, newest first (the total is counted apart)
CHANGES = 20  # promotions and rollbacks listed, newest first
REASON_MAX = 2000
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_ROW_ID_MAX = 2**62
# what each metric's difference means for the challenger: rates are better lower, AUROC higher
_LOWER_IS_BETTER = {"miss_rate": True, "false_alarm_rate": True, "auroc": False}
_WHAT = {"miss_rate": "reviewed defects called normal; lower is better",
         "false_alarm_rate": "reviewed good parts called anomalous; lower is better",
         "auroc": "how well the score ranks defects above good parts; higher is better"}


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    # compare()'s bootstrap is a second or so of numpy on many reviewed rows: one at a time per app, off the loop,
    # so that reloads of the page do not pile up beside the daemon's model on a small box
    limiter = anyio.CapacityLimiter(1)
    hosts = hosts_of(context.settings)  # once per app: a promotion's origin must be one of them
    return [
        route("/models", models_page, context, pages, limiter),
        route("/models/promote", promote, context, pages, limiter, hosts, methods=["POST"]),
        route("/models/rollback", rollback, context, pages, limiter, hosts, methods=["POST"]),
        route("/models/changes/{change_id:int}", change_status, pages),
        route(f"/models/disagreements/{NUMBER}", side_by_side, context, pages),
    ]


async def models_page(context: ConsoleContext, pages: Pages, limiter: anyio.CapacityLimiter,
                      request: Request) -> Response:
    """``days`` 1-366 (default 14, plant days, today included), ``camera`` optional; anything else a 400 naming
    the parameter."""
    values = {k: v.strip() for k, v in query_values(request, {"days", "camera"}).items()}
    try:
        days = history.integer("days", values.get("days") or "14", 1, 366, "a number of days")
    except history.BadFilter as exc:
        raise HTTPException(400, str(exc)) from None
    camera = values.get("camera") or None
    if camera is not None and len(camera) > 200:
        raise HTTPException(400, "camera: longer than 200 characters")
    if camera is not None and _CONTROLS.search(camera):
        raise HTTPException(400, "camera: control characters are not part of a camera name")
    return await _models(context, pages, limiter, request, days, camera)


async def _models(context: ConsoleContext, pages: Pages, limiter: anyio.CapacityLimiter, request: Request,
                  days: int = 14, camera: str | None = None, http_status: int = 200,
                  refused: dict | None = None) -> Response:
    """The page: the pair that runs, the changes, the forms (for a user with the right), the comparison."""
    reader = pages.gate.reader
    zone = context.settings.time_zone
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    since = day_start(now - timedelta(days=days - 1), zone)
    comparison = await anyio.to_thread.run_sync(functools.partial(
        compare, reader, since=since, camera=camera, disagreements=DISAGREEMENTS), limiter=limiter)
    running = await anyio.to_thread.run_sync(running_pair, context.config, reader)
    changes = [_change_view(c, running.config_key) for c in recent_changes(reader, CHANGES)]
    ever = bool(comparison.pairs) or _any_challenger_result(reader)  # one key read
    user = user_of(request)
    return pages.page(request, "models.html", http_status=http_status, comparison=comparison,
                      pairs=[_pair_view(p) for p in comparison.pairs], days=days, camera=camera, since=since,
                      ever=ever, cameras=history.cameras(reader), confidence=round(comparison.confidence * 100),
                      running=running, changes=changes, refused=refused, logins=context.users is not None,
                      may_promote=context.users is not None and context.users.may(user, PROMOTE))


# --- promotion and rollback -----------------------------------------------------------------------------------

@dataclass
class RunningPair:
    """What the page says about the pair the daemon runs (``known`` False: the console has no configuration)."""

    known: bool = False
    source: str | None = None  # the configuration file
    config_key: str | None = None  # as changes are recorded against it
    champion: str | None = None
    challenger: str | None = None
    champion_digest: str | None = None
    challenger_digest: str | None = None
    change: ModelChange | None = None  # the applied change that chose the pair (None: the file's own)
    waiting: ModelChange | None = None  # the newest change of this config the daemon has not decided yet
    rollback_to: tuple[str, str | None] | None = None
    daemon_running: bool | None = None
    rule: object = None  # model.promotion
    problems: list[str] = field(default_factory=list)
    error: str | None = None  # the configuration or a bundle cannot be read now


def current_config(config: Settings | None) -> Settings | None:
    """The configuration as its file says now (the CLI reads it afresh too; a daemon reloaded on an edited file
    runs the new pair); the one the console started with when it has no file. ConfigError when unreadable."""
    if config is None or config.source is None:
        return config
    return load_settings(Path(config.source), require_paths=False)


def _digest(path: Path | None) -> str | None:
    from inspectd.bundle.files import manifest_digest

    if path is None:
        return None
    try:
        return manifest_digest(path)
    except (InspectdError, OSError):
        return None


def running_pair(config: Settings | None, reader: Engine) -> RunningPair:
    """The pair the daemon of ``config`` runs (applied changes only), the change waiting for it, and what a
    rollback brings back; file reads and a few store reads (a worker thread)."""
    from inspectd.daemon.ready_file import read_ready, ready_file_path
    from inspectd.promotion.requests import current_selection
    from inspectd.promotion.selection import config_key, pair_before

    if config is None:
        return RunningPair()
    view = RunningPair(known=True, source=str(config.source) if config.source else None)
    try:
        settings = current_config(config)
        view.config_key, view.rule = config_key(settings.source), settings.model.promotion
        selection = current_selection(reader, settings)
    except InspectdError as exc:
        view.error = str(exc)
        return view
    pair = selection.pair
    view.champion, view.challenger = str(pair.champion), None if pair.challenger is None else str(pair.challenger)
    view.champion_digest, view.challenger_digest = _digest(pair.champion), _digest(pair.challenger)
    view.change, view.problems = selection.change, list(selection.problems)
    if selection.change is not None:
        before = pair_before(selection.change)
        view.rollback_to = (str(before.champion), None if before.challenger is None else str(before.challenger))
    waiting = newest_requested_id(reader, view.config_key)
    view.waiting = None if waiting is None else change(reader, waiting)
    view.daemon_running = read_ready(ready_file_path(settings)).ready
    return view


def _change_view(change: ModelChange, config_key: str | None) -> dict:
    """A change as the list shows it: the figures the rule saw, champion → challenger, on reviewed parts."""
    figures = change.comparison or {}
    shown = []
    for name, champion, challenger in recorded_figures(figures):
        fmt = (lambda v: "–" if v is None else f"{v:.3f}") if name == "auroc" else share
        shown.append({"label": LABELS[name], "champion": fmt(champion), "challenger": fmt(challenger)})
    return {"c": change, "figures": shown, "reviewed": figures.get("reviewed_decided") or 0,
            "rule": figures.get("rule"), "problems": figures.get("problems") or [],
            "elsewhere": config_key is not None and change.config_path != config_key}


async def promote(context: ConsoleContext, pages: Pages, limiter: anyio.CapacityLimiter, hosts: tuple[str, ...],
                  request: Request) -> Response:
    return await _ask("promote", context, pages, limiter, hosts, request)


async def rollback(context: ConsoleContext, pages: Pages, limiter: anyio.CapacityLimiter, hosts: tuple[str, ...],
                   request: Request) -> Response:
    return await _ask("rollback", context, pages, limiter, hosts, request)


async def _ask(action: str, context: ConsoleContext, pages: Pages, limiter: anyio.CapacityLimiter,
               hosts: tuple[str, ...], request: Request) -> Response:
    """The right first (403, nothing read), then as a review: same origin, a text-only form, the CSRF token; then
    ``request_change`` with the logged-in user as the actor. Refused: the page with every reason (409), nothing
    recorded. Recorded: 303 to the page, where the change waits for the daemon."""
    from inspectd.promotion.requests import ChangeRefused, Request as ChangeRequest, request_change

    user = user_of(request)
    if context.users is None:
        raise HTTPException(403, f"{action} from the console needs console.users_file with the promote right on "
                                 "your line (inspectd console-user NAME --right promote); meanwhile use "
                                 f"inspectd models {action} on the daemon's host")
    if not context.users.may(user, PROMOTE):
        raise HTTPException(403, f"{action}: {user} has no promote right (the users file gives it: "
                                 f"'{user}:scrypt$...:promote')")
    _same_origin(request, hosts)
    form = await request.form()
    _text_only(form)
    if not context.csrf.valid(user, form.get("csrf")):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and submit again")
    reason = _reason(form)
    force = _force(form) if action == "promote" else False
    if context.config is None:
        raise HTTPException(409, f"{action}: this console was started without the daemon's configuration; use "
                                 f"inspectd models {action}")
    asked = ChangeRequest(action, user, force, reason)

    def record() -> ModelChange:
        settings = current_config(context.config)
        return request_change(pages.gate.writer, settings, asked)

    try:
        recorded = await anyio.to_thread.run_sync(record, limiter=limiter)  # one at a time, beside compare()
    except ChangeRefused as exc:
        problems, forcible = list(exc.problems), exc.forcible
    except InspectdError as exc:  # the configuration or a bundle cannot be read
        problems, forcible = [str(exc)], False
    else:
        log.info("%s requested from the console by %r: change %d%s", action, user, recorded.id,
                 " (forced past the promotion rule)" if recorded.forced else "")
        return RedirectResponse("/models", status_code=303)
    log.info("%s by %r refused: %s", action, user, "; ".join(problems))
    refused = {"action": action, "problems": problems, "forcible": forcible, "reason": reason or "", "force": force}
    return await _models(context, pages, limiter, request, http_status=409, refused=refused)


def _reason(form) -> str | None:
    """The person's words, one line: control characters (a newline, CR, bidi overrides) become spaces."""
    reason = re.sub(r"\s+", " ", _NAME_CONTROLS.sub(" ", str(form.get("reason", "")))).strip()
    if len(reason) > REASON_MAX:
        raise HTTPException(400, f"reason: longer than {REASON_MAX} characters")
    return reason or None


def _force(form) -> bool:
    value = form.get("force")
    if value not in (None, "", "yes"):
        raise HTTPException(400, f"force: {str(value)[:40]!r} is not yes (a checkbox)")
    return value == "yes"


async def change_status(pages: Pages, request: Request) -> Response:
    """One change's status as JSON, for the page's script while the change waits for the daemon."""
    change_id = request.path_params["change_id"]
    found = change(pages.gate.reader, change_id) if change_id <= _ROW_ID_MAX else None
    if found is None:
        raise HTTPException(404, f"change {change_id} does not exist")
    return JSONResponse({"id": found.id, "status": found.status, "detail": found.detail},
                        headers={"Cache-Control": "no-store"})


async def side_by_side(context: ConsoleContext, pages: Pages, request: Request) -> Response:
    """Every challenger's result on the inspection (``challenger=B``: only bundle B's); 404 when it has none."""
    inspection_id = id_of(request)
    values = {k: v.strip() for k, v in query_values(request, {"challenger"}).items()}
    bundle_id = None
    if values.get("challenger"):
        try:
            bundle_id = history.integer("challenger", values["challenger"], 1, _ROW_ID_MAX, "a bundle id")
        except history.BadFilter as exc:
            raise HTTPException(400, str(exc)) from None
    record = pages.record_of(inspection_id)
    results = challenger_results(pages.gate.reader, inspection_id, bundle_id)
    if not results:
        if bundle_id is not None:
            raise HTTPException(404, f"inspection {inspection_id} has no result of challenger bundle {bundle_id}")
        raise HTTPException(404, f"inspection {inspection_id} has no challenger result (no challenger inspected it "
                                 f"in the shadow)")
    return pages.page(request, "model_disagreement.html", r=record, results=results, views=view_votes(record),
                      has_maps=record["has_maps"],
                      has_photo=context.roots.path_of(record) is not None,
                      reviews=reviews_of(pages.gate.reader, [inspection_id]).get(inspection_id, []))


def challenger_results(reader: Engine, inspection_id: int, bundle_id: int | None = None) -> list[dict]:
    """The challenger rows of one inspection with their bundle, without the map blobs (whether they are there)."""
    ch = ChallengerResultRow
    query = (select(ch.id, ch.bundle_id, ch.created_at, ch.verdict, ch.score, ch.threshold, ch.reasoning,
                    ch.raw_reply, ch.parse_status, ch.real_fallback, ch.model_ms, ch.error, ch.view_scores,
                    ch.shown_view, (ch.map_png.is_not(None) & ch.mask_png.is_not(None)).label("has_maps"),
                    BundleRow.name.label("bundle_name"), BundleRow.sha256.label("bundle_sha256"),
                    BundleRow.quantization.label("bundle_quantization"))
             .outerjoin(BundleRow, BundleRow.id == ch.bundle_id)
             .where(ch.inspection_id == inspection_id).order_by(ch.bundle_id))
    if bundle_id is not None:
        query = query.where(ch.bundle_id == bundle_id)
    with reader.connect() as connection:
        return [{**row._mapping, "has_maps": bool(row.has_maps), "views": view_votes(row._mapping)}
                for row in connection.execute(query)]


def _any_challenger_result(reader: Engine) -> bool:
    with reader.connect() as connection:
        return connection.execute(select(ChallengerResultRow.id).limit(1)).first() is not None


# --- formatting: compare()'s figures as the page shows them ------------------------------------------------------

def share(value: float | None) -> str:
    """A rate as a percentage with one decimal; '–' where undefined."""
    return "–" if value is None else f"{value * 100:.1f} %"


def figure(name: str, estimate: Estimate, signed: bool = False) -> dict:
    """A value and its interval as text: rates in %, AUROC as a number (3 decimals); differences signed."""
    def text(value: float | None) -> str:
        if value is None:
            return "–"
        if name == "auroc":
            return f"{value:+.3f}" if signed else f"{value:.3f}"
        return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"

    unit = "" if name == "auroc" else " %"
    value = "–" if estimate.value is None else text(estimate.value) + unit
    interval = "" if estimate.low is None else f"[{text(estimate.low)}, {text(estimate.high)}]{unit}"
    return {"value": value, "interval": interval}


def _verdict(name: str, difference: Estimate) -> tuple[str, str]:
    """Whether the interval of the difference leaves out 0: (css class, words)."""
    if difference.low is None:
        return "unclear", "no interval"
    if difference.low <= 0 <= difference.high:
        return "unclear", "no clear difference"
    better = (difference.high < 0) == _LOWER_IS_BETTER[name]
    return ("better", "challenger better") if better else ("worse", "challenger worse")


def _pair_view(pair: PairComparison) -> dict:
    metrics = []
    for metric in (pair.miss_rate, pair.false_alarm_rate, pair.auroc):
        css, words = _verdict(metric.name, metric.difference)
        metrics.append({"name": metric.name, "label": LABELS[metric.name], "what": _WHAT[metric.name],
                        "champion": figure(metric.name, metric.champion),
                        "challenger": figure(metric.name, metric.challenger),
                        "difference": figure(metric.name, metric.difference, signed=True),
                        "n": metric.n, "positives": metric.positives, "negatives": metric.negatives,
                        "css": css, "reading": words})
    return {"pair": pair, "agreement": share(pair.agreement_rate), "metrics": metrics}

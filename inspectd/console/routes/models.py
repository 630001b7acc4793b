"""The models page: champion against challenger (``store/model_comparison.py``), and one image side by side.

``/models`` lists every (champion bundle, challenger bundle) pair with results over the last N plant days
(``days``, as ``/stats`` counts them; optionally one camera): images compared, verdict agreement, and on the
reviewed images each model's miss rate, false-alarm rate and AUROC with their 95 % intervals and the difference.
The figures are ``compare()``'s own (run in a worker thread: its bootstrap is numpy work, not the event loop's);
this module only formats them.

``/models/disagreements/N``: inspection N as the champion saw it (the photo with its heat map and mask outline,
``routes/pictures.py``) next to each challenger's result on the same photo (its layers at
``/inspections/N/challenger/B/heat.png`` and ``outline.png``, also ``routes/pictures.py``), each model's verdict,
score, threshold and reasoning, and the engineers' reviews.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone

import anyio
import anyio.to_thread
from sqlalchemy import Engine, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from inspectd.console import history
from inspectd.console.context import ConsoleContext
from inspectd.console.pages import NUMBER, Pages, id_of, query_values, route
from inspectd.store.model_comparison import Estimate, PairComparison, compare
from inspectd.store.reviews import reviews_of
from inspectd.store.schema import BundleRow, ChallengerResultRow
from inspectd.store.stats import day_start

DISAGREEMENTS = 20  # listed per pair, newest first (the total is counted apart)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_ROW_ID_MAX = 2**62
# what each metric's difference means for the challenger: rates are better lower, AUROC higher
_LOWER_IS_BETTER = {"miss_rate": True, "false_alarm_rate": True, "auroc": False}
_LABELS = {"miss_rate": "miss rate", "false_alarm_rate": "false-alarm rate", "auroc": "AUROC"}
_WHAT = {"miss_rate": "reviewed defects called normal; lower is better",
         "false_alarm_rate": "reviewed good parts called anomalous; lower is better",
         "auroc": "how well the score ranks defects above good parts; higher is better"}


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    # compare()'s bootstrap is a second or so of numpy on many reviewed rows: one at a time per app, off the loop,
    # so that reloads of the page do not pile up beside the daemon's model on a small box
    limiter = anyio.CapacityLimiter(1)
    return [
        route("/models", models_page, context, pages, limiter),
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
    reader = pages.gate.reader
    zone = context.settings.time_zone
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    since = day_start(now - timedelta(days=days - 1), zone)
    comparison = await anyio.to_thread.run_sync(functools.partial(
        compare, reader, since=since, camera=camera, disagreements=DISAGREEMENTS), limiter=limiter)
    ever = bool(comparison.pairs) or _any_challenger_result(reader)  # one key read
    return pages.page(request, "models.html", comparison=comparison, pairs=[_pair_view(p) for p in comparison.pairs],
                      days=days, camera=camera, since=since, ever=ever, cameras=history.cameras(reader),
                      confidence=round(comparison.confidence * 100))


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
    return pages.page(request, "model_disagreement.html", r=record, results=results, has_maps=record["has_maps"],
                      has_photo=context.roots.path_of(record) is not None,
                      reviews=reviews_of(pages.gate.reader, [inspection_id]).get(inspection_id, []))


def challenger_results(reader: Engine, inspection_id: int, bundle_id: int | None = None) -> list[dict]:
    """The challenger rows of one inspection with their bundle, without the map blobs (whether they are there)."""
    ch = ChallengerResultRow
    query = (select(ch.id, ch.bundle_id, ch.created_at, ch.verdict, ch.score, ch.threshold, ch.reasoning,
                    ch.raw_reply, ch.parse_status, ch.real_fallback, ch.model_ms, ch.error,
                    (ch.map_png.is_not(None) & ch.mask_png.is_not(None)).label("has_maps"),
                    BundleRow.name.label("bundle_name"), BundleRow.sha256.label("bundle_sha256"),
                    BundleRow.quantization.label("bundle_quantization"))
             .outerjoin(BundleRow, BundleRow.id == ch.bundle_id)
             .where(ch.inspection_id == inspection_id).order_by(ch.bundle_id))
    if bundle_id is not None:
        query = query.where(ch.bundle_id == bundle_id)
    with reader.connect() as connection:
        return [{**row._mapping, "has_maps": bool(row.has_maps)} for row in connection.execute(query)]


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
        metrics.append({"name": metric.name, "label": _LABELS[metric.name], "what": _WHAT[metric.name],
                        "champion": figure(metric.name, metric.champion),
                        "challenger": figure(metric.name, metric.challenger),
                        "difference": figure(metric.name, metric.difference, signed=True),
                        "n": metric.n, "positives": metric.positives, "negatives": metric.negatives,
                        "css": css, "reading": words})
    return {"pair": pair, "agreement": share(pair.agreement_rate), "metrics": metrics}

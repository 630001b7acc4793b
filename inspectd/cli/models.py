"""``inspectd models``: the bundles in the store, champion against challenger (``compare``), and the changes of
the pair the daemon runs (``promote``, ``rollback``, ``changes``).

``promote`` and ``rollback`` read the config (the pair it names, ``model.promotion``), check the request
(``inspectd/promotion/requests.py``, the same function as the console's action), record it in the store and wait
for the running daemon to apply it through its reload path; they exit 0 once applied, 1 when refused or failed.

A reader command like ``history``: it opens the store as ``history`` does (``_engine``: read-only SQLite,
schema checked) and prints with the same ``render``, so names from the plant have their control characters
escaped in tables and CSV cells cannot run as spreadsheet formulas. numpy is imported only inside the command
(``inspectd.store.model_comparison``), so that importing the CLI stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from inspectd.cli.history import _cell, _engine, parse_time, render
from inspectd.errors import InspectdError
from inspectd.safe_text import escape_controls

# csv/--format: one row per pair, metric and model (long form: a spreadsheet pivots it).
METRIC_COLUMNS = ("champion", "champion_id", "challenger", "challenger_id", "metric", "model", "value", "ci_low",
                  "ci_high", "n", "positives", "negatives")
DISAGREEMENT_COLUMNS = ("inspection_id", "created_at", "camera", "champion_verdict", "champion_score",
                        "challenger_verdict", "challenger_score", "review")
TREATMENT = ("unknown/failed verdicts and null scores are counted apart and left out: agreement covers images "
             "both models decided, miss/false-alarm rates reviewed images both decided, AUROC reviewed images "
             "both scored")


def _positive_or_zero(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def _metric_rows(comparison) -> list[dict]:
    rows = []
    for pair in comparison.pairs:
        head = {"champion": pair.champion.name, "champion_id": pair.champion.id,
                "challenger": pair.challenger.name, "challenger_id": pair.challenger.id}
        rows.append({**head, "metric": "images", "model": "both", "value": pair.images, "n": pair.images})
        rows.append({**head, "metric": "agreement_rate", "model": "both", "value": pair.agreement_rate,
                     "n": pair.decided})
        for metric in (pair.miss_rate, pair.false_alarm_rate, pair.auroc):
            for model in ("champion", "challenger", "difference"):
                estimate = getattr(metric, model)
                rows.append({**head, "metric": metric.name, "model": model, "value": estimate.value,
                             "ci_low": estimate.low, "ci_high": estimate.high, "n": metric.n,
                             "positives": metric.positives, "negatives": metric.negatives})
    return rows


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(estimate) -> str:
    if estimate.low is None:
        return "-"
    return f"[{estimate.low:.3f}, {estimate.high:.3f}]"


def _counts(verdicts: dict[str, int]) -> str:
    return ", ".join(f"{v} {n}" for v, n in verdicts.items()) or "none"


def _bundle(ref) -> str:
    return escape_controls(f"{ref.name} (id {ref.id}{', ' + ref.sha256[:12] if ref.sha256 else ''})")


def _table(comparison) -> str:
    out = []
    for pair in comparison.pairs:
        out.append(f"champion {_bundle(pair.champion)} vs challenger {_bundle(pair.challenger)}")
        out.append(f"  images both inspected: {pair.images}; both decided: {pair.decided}, agreeing "
                   f"{pair.agreeing} (agreement {_share(pair.agreement_rate)}), disagreeing "
                   f"{pair.disagreements_total}; undecided (unknown/failed, left out): {pair.undecided}")
        out.append(f"  champion verdicts: {_counts(pair.champion_verdicts)}; null scores {pair.champion_null_scores}")
        out.append(f"  challenger verdicts: {_counts(pair.challenger_verdicts)}; null scores "
                   f"{pair.challenger_null_scores}")
        out.append(f"  reviewed: {pair.reviewed}; both decided {pair.reviewed_decided} "
                   f"({pair.miss_rate.positives} defect, {pair.miss_rate.negatives} good), both scored "
                   f"{pair.reviewed_scored}")
        rows = [{"metric": m.name, "n": m.n, "champion": _share(m.champion.value),
                 "champion_ci": _interval(m.champion), "challenger": _share(m.challenger.value),
                 "challenger_ci": _interval(m.challenger), "difference": _share(m.difference.value),
                 "difference_ci": _interval(m.difference)}
                for m in (pair.miss_rate, pair.false_alarm_rate, pair.auroc)]
        out.append(render(rows, "table").rstrip("\n"))
        if pair.disagreements:
            out.append(f"  newest disagreements ({len(pair.disagreements)} of {pair.disagreements_total}):")
            rows = [vars(d) for d in pair.disagreements]
            out.append(render(rows, "table", list(DISAGREEMENT_COLUMNS)).rstrip("\n"))
        out.append("")
    confidence = round(comparison.confidence * 100)
    out.append(f"difference = challenger - champion; {confidence} % intervals: paired bootstrap, "
               f"{comparison.resamples} resamples of the reviewed images, seed {comparison.seed}")
    out.append(TREATMENT)
    return "\n".join(out) + "\n"


def _where(args) -> str:
    parts = [f"since {_cell(args.since)}" if args.since else "all time"]
    if args.camera:
        parts.append(f"camera {args.camera}")
    return escape_controls(", ".join(parts))


def cmd_compare(args) -> int:
    import dataclasses

    from inspectd.store.model_comparison import compare

    comparison = compare(_engine(args), since=args.since, camera=args.camera, disagreements=args.disagreements,
                         resamples=args.resamples, seed=args.seed)
    if not comparison.pairs:
        message = (f"no challenger results in the store ({_where(args)}): no challenger bundle has run in the "
                   f"shadow on these inspections, nothing to compare")
        if args.format == "json":  # the message in the document, the data (no pairs) as always
            sys.stdout.write(json.dumps({**dataclasses.asdict(comparison), "message": message}, indent=2,
                                        default=_cell) + "\n")
        elif args.format == "csv":  # the header alone on stdout, the reason on stderr
            sys.stdout.write(render([], "csv", list(METRIC_COLUMNS)))
            print(message, file=sys.stderr)
        else:
            print(message)
        return 0
    if args.format == "json":
        document = {**dataclasses.asdict(comparison), "treatment": TREATMENT}
        sys.stdout.write(json.dumps(document, indent=2, default=_cell) + "\n")
    elif args.format == "csv":
        sys.stdout.write(render(_metric_rows(comparison), "csv", list(METRIC_COLUMNS)))
    else:
        print(_where(args))
        sys.stdout.write(_table(comparison))
    return 0


def _actor(given: str | None) -> str:
    """Who asks: ``--actor``, else the person behind sudo, else the login name."""
    import getpass

    return given or os.environ.get("SUDO_USER") or getpass.getuser()


def _writer(settings):
    """The store of ``settings``, writable, at the head schema (the daemon creates and migrates it)."""
    from inspectd.store.database import open_engine, require_head
    from inspectd.config_folders import sqlite_file

    store = sqlite_file(settings.store.url)
    if store is not None and not store.is_file():
        raise InspectdError(f"store file {store} does not exist (has the daemon run yet?)")
    return require_head(open_engine(settings.store.url))


def _change_lines(change) -> list[str]:
    lines = [f"change {change.id}: {change.action} by {escape_controls(change.actor)} at "
             f"{_cell(change.created_at)} UTC: {change.status}"
             + (f" at {_cell(change.decided_at)} UTC" if change.decided_at else ""),
             f"  champion   {escape_controls(change.champion_path)} ({change.champion_digest[:12]})",
             f"  challenger {escape_controls(change.challenger_path or '(none)')}"
             + (f" ({change.challenger_digest[:12]})" if change.challenger_digest else ""),
             f"  before: champion {escape_controls(change.previous_champion_path)}, challenger "
             f"{escape_controls(change.previous_challenger_path or '(none)')}"]
    if change.forced:
        lines.append("  FORCED past the promotion rule: " + "; ".join(change.comparison.get("problems", [])))
    if change.reason:
        lines.append(f"  reason: {escape_controls(change.reason)}")
    if change.detail:
        lines.append(f"  detail: {escape_controls(change.detail)}")
    return lines


_SHORT = {"miss_rate": "miss rate", "false_alarm_rate": "false alarms", "auroc": "AUROC"}


def _figures_line(comparison: dict | None) -> str | None:
    from inspectd.promotion.rule import recorded_figures

    figures = recorded_figures(comparison)
    if not figures:
        return None
    parts = [f"{_SHORT[name]} {_share(champion)} -> {_share(challenger)}" for name, champion, challenger in figures]
    return f"  on {comparison['reviewed_decided']} reviewed part(s), champion -> challenger: " + ", ".join(parts)


def _change_command(args, action: str) -> int:
    from inspectd.config import config_path, load_settings
    from inspectd.daemon.ready_file import read_ready, ready_file_path
    from inspectd.promotion.requests import ChangeRefused, Request, request_change, wait_for_decision

    settings = load_settings(config_path(args.config))
    engine = _writer(settings)
    try:
        if action == "promote" and settings.threshold is not None:
            print(f"warning: {settings.source} sets threshold: {settings.threshold:g} for every champion; the "
                  "promoted bundle's calibrated threshold is not used while it is set", file=sys.stderr)
        try:
            change = request_change(engine, settings, Request(action, _actor(args.actor),
                                                              getattr(args, "force", False), args.reason))
        except ChangeRefused as exc:  # every reason on a line of its own; nothing was recorded
            print(escape_controls(f"{action} refused (nothing recorded):"), file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {escape_controls(problem)}", file=sys.stderr)
            if exc.forcible:
                print("--force promotes anyway and records that it was forced", file=sys.stderr)
            return 1
        print("\n".join(_change_lines(change)))
        figures = _figures_line(change.comparison)
        if figures:
            print(figures)
        if not read_ready(ready_file_path(settings)).ready:
            print(f"recorded; no daemon of {settings.source} is running: it starts on this pair")
            return 0
        if args.wait <= 0:
            print("recorded; the daemon applies it within a second or two (inspectd models changes)")
            return 0
        print(f"waiting up to {args.wait:g} s for the daemon to load, verify and try it on the canary ...",
              flush=True)
        decided = wait_for_decision(engine, change.id, args.wait)
        if decided.status == "applied":
            print(f"change {change.id} applied: the daemon inspects with {escape_controls(decided.champion_path)}")
            return 0
        if decided.status == "failed":
            print(f"change {change.id} FAILED, the models in use stay: {escape_controls(decided.detail or '')}")
            return 1
        print(f"change {change.id} is not applied yet after {args.wait:g} s; see inspectd models changes")
        return 1
    finally:
        engine.dispose()


def cmd_promote(args) -> int:
    return _change_command(args, "promote")


def cmd_rollback(args) -> int:
    return _change_command(args, "rollback")


def cmd_changes(args) -> int:
    import dataclasses

    from inspectd.store.model_changes import CHANGE_COLUMNS, recent_changes

    changes = recent_changes(_engine(args), args.limit)
    if args.format == "json":
        sys.stdout.write(json.dumps([dataclasses.asdict(c) for c in changes], indent=2, default=_cell) + "\n")
    elif args.format == "csv":
        sys.stdout.write(render([dataclasses.asdict(c) for c in changes], "csv", list(CHANGE_COLUMNS)))
    elif not changes:
        print("no promotion or rollback recorded: the daemon runs the bundles its configuration file names")
    else:
        for change in changes:
            print("\n".join(_change_lines(change)))
            figures = _figures_line(change.comparison)
            if figures:
                print(figures)
    return 0


def _change_arguments(parser, action: str) -> None:
    parser.add_argument("--actor", help="who asks, recorded with the change (default: $SUDO_USER, else your login)")
    parser.add_argument("--reason", help="why, in your words, recorded with the change")
    parser.add_argument("--wait", type=float, default=600, metavar="SECONDS",
                        help="wait this long for the running daemon to apply it (default 600: a 7B loads in "
                             "minutes; 0: do not wait)")
    parser.set_defaults(handler=cmd_promote if action == "promote" else cmd_rollback)


def add_commands(sub) -> None:
    models = sub.add_parser("models", help="the model bundles in the store: compare a challenger run in the "
                                           "shadow with the champion")
    actions = models.add_subparsers(dest="models_command", required=True)

    compare = actions.add_parser(
        "compare", help="per champion/challenger pair: agreement, disagreements, and on reviewed images each "
                        "model's miss and false-alarm rates and AUROC with paired bootstrap intervals",
        description="Per champion/challenger bundle pair over the inspections of the window: images both "
                    "inspected, agreement of the verdicts, the newest disagreements, and on reviewed images (the "
                    "newest review is the truth, defect the positive class) each model's miss rate, false-alarm "
                    "rate and image AUROC with 95 % paired bootstrap intervals, and the difference challenger - "
                    "champion. Unknown/failed verdicts and null scores are counted apart and left out.")
    compare.add_argument("--db", help="SQLAlchemy URL of the store (default: store.url of the config)")
    compare.add_argument("--since", type=parse_time,
                         help="inspections since: ISO time (UTC) or span back from now: 24h, 7d (default: all)")
    compare.add_argument("--camera")
    compare.add_argument("--format", choices=("table", "csv", "json"), default="table",
                         help="csv: one row per pair, metric and model (no disagreement list); json: everything")
    compare.add_argument("--disagreements", type=_positive_or_zero, default=20, metavar="N",
                         help="list the N newest disagreements per pair (default 20; 0: none)")
    compare.add_argument("--resamples", type=_positive_or_zero, default=1000,
                         help="bootstrap resamples of the reviewed images (default 1000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0): same seed, same intervals")
    compare.set_defaults(handler=cmd_compare)

    promote = actions.add_parser(
        "promote", help="make the challenger the champion (the champion becomes the challenger), through the "
                        "daemon's reload path, if it is not worse on reviewed parts",
        description="Checks the challenger against the champion on the line's reviewed parts (model.promotion: "
                    "refused with every reason when fewer than min_reviewed parts were decided by both, when a rate "
                    "cannot be compared, or when its miss rate or false-alarm rate is higher, or its AUROC lower, "
                    "by more than margin), records the change in the store (who, when, both bundles' paths and "
                    "digests, the figures) and waits for the running daemon to apply it: the new champion is "
                    "loaded beside the old one, its hashes verified and the canary tried before it takes the next "
                    "batch; the old champion goes on as the challenger. Exit 0 applied (or recorded while no "
                    "daemon runs: it starts on the new pair), 1 refused or failed.")
    promote.add_argument("--force", action="store_true",
                         help="promote although the rule refuses (recorded as forced, with the rule's reasons)")
    _change_arguments(promote, "promote")

    rollback = actions.add_parser(
        "rollback", help="bring back the pair that ran before the newest applied promotion or rollback",
        description="Records a rollback to the champion/challenger pair before the newest applied change and "
                    "waits for the running daemon to apply it through its reload path (hashes, canary). No rule: "
                    "going back is always allowed, but refused when a bundle of that pair was re-published since. "
                    "Exit 0 applied, 1 refused or failed.")
    _change_arguments(rollback, "rollback")

    changes = actions.add_parser("changes", help="the promotions and rollbacks recorded, newest first, with what "
                                                 "the daemon made of each")
    changes.add_argument("--db", help="SQLAlchemy URL of the store (default: store.url of the config)")
    changes.add_argument("--limit", type=_positive_or_zero, default=50, help="at most this many (default 50)")
    changes.add_argument("--format", choices=("table", "csv", "json"), default="table")
    changes.set_defaults(handler=cmd_changes)

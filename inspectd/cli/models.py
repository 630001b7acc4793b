"""``inspectd models``: the bundles in the store, champion against challenger (``compare``; room for
``promote``/``rollback``).

A reader command like ``history``: it opens the store as ``history`` does (``_engine``: read-only SQLite,
schema checked) and prints with the same ``render``, so names from the plant have their control characters
escaped in tables and CSV cells cannot run as spreadsheet formulas. numpy is imported only inside the command
(``inspectd.store.model_comparison``), so that importing the CLI stays light.
"""

from __future__ import annotations

import argparse
import json
import sys

from inspectd.cli.history import _cell, _engine, parse_time, render
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

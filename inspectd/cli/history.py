"""Engineers' commands on the store: history, show, stats, alerts, export-reviewed.

What they print to a terminal comes from the plant (file names, reviewers, camera names, error texts): every
table cell and ``show`` line has its control characters escaped (``safe_text.escape_controls``), so an ESC or
CR in a name cannot drive the terminal. JSON is exact (its encoder escapes); CSV keeps the data exact but for a
``'`` before a cell that a spreadsheet would run as a formula.

Only ``show`` and ``export-reviewed`` read photos: they import Pillow, numpy and the photo readers themselves,
so that ``history``, ``stats`` and ``alerts`` start in a fraction of a second (``benchmarks/cli_startup.py``). For
the same reason the store is read through SQLAlchemy Core (``store/tables.py``, no ORM), and the settings (pydantic,
PyYAML) are imported only when a command reads the config: not with ``--db``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from inspectd.cli.common import EXIT_SOME_FAILED
from inspectd.errors import InspectdError
from inspectd.inspection.view_votes import view_votes
from inspectd.verdict import Verdict
from inspectd.store.database import open_engine, require_head
from inspectd.store.queries import (HISTORY_COLUMNS, HistoryFilter, alerts, artifacts, history, inspection,
                                    suppressed_alerts)
from inspectd.store.reviews import agrees, reviews_of
from inspectd.safe_text import csv_cell, escape_controls
from inspectd.store.tables import OPEN_ALERT_STATUSES, AlertStatus

_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str) -> datetime:
    """ISO date/time (UTC unless it carries an offset) or a span back from now: 30m, 24h, 7d, 2w."""
    match = _RELATIVE.match(value.strip())
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO time (2026-11-24T08:00) or a span (24h, 7d)") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def render(rows: list[dict], fmt: str, columns: list[str] | None = None, width: dict | None = None) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2, default=_cell) + "\n"
    columns = columns or (list(rows[0]) if rows else [])
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_cell(row.get(c)) if isinstance(row.get(c), str) else _cell(row.get(c))
                             for c in columns])
        return buffer.getvalue()
    if not rows:
        return "(no rows)\n"
    width = width or {}
    cells = [[escape_controls(_cell(row.get(c)))[: width.get(c, 200)] for c in columns] for row in rows]
    sizes = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(sizes[i]) for i, c in enumerate(columns)).rstrip()]
    lines.append("  ".join("-" * s for s in sizes))
    lines += ["  ".join(v.ljust(sizes[i]) for i, v in enumerate(r)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _settings(args):
    """The validated settings of ``--config`` (or the default config); imported here, not at the top, so that a
    command given ``--db`` starts without pydantic and PyYAML."""
    from inspectd.config import config_path, load_settings

    return load_settings(config_path(args.config), require_paths=False)


def _engine(args):
    url = args.db if args.db is not None else _settings(args).store.url
    return require_head(open_engine(url, create=False))


def photo_now(row: dict) -> str:
    """Where the row's photo is now: the archived (or failed) copy, the drop folder while in keep mode, or
    ``removed <time>`` once retention deleted it (the row keeps its old path)."""
    if row.get("photo_removed_at") is not None:
        return f"removed {_cell(row['photo_removed_at'])}"
    return row.get("archived_path") or row.get("source_path") or ""


def fit_columns(rows: list[dict], fixed: list[str], flexible: dict[str, int], total: int) -> list[dict]:
    """Cells cut (with ``…``) so that a table line fits ``total`` columns: ``fixed`` columns whole, then each
    ``flexible`` column (name -> its share, in order) gets what is left, at most its share of it."""
    def shown(value) -> str:
        return escape_controls(_cell(value))

    width = {c: max(len(c), *(len(shown(r.get(c))) for r in rows)) for c in [*fixed, *flexible]}
    left = total - sum(width[c] for c in fixed) - 2 * (len(fixed) + len(flexible) - 1)
    limits, shares = {}, sum(flexible.values())
    for column in sorted(flexible, key=lambda c: width[c] / flexible[c]):  # the narrow ones first: what they
        fair = left * flexible[column] // shares                          # leave goes to the others
        limits[column] = max(len(column), min(width[column], fair))
        left, shares = left - limits[column], shares - flexible[column]
    out = []
    for row in rows:
        row = {**row}
        for column, limit in limits.items():
            text = shown(row.get(column))
            row[column] = text if len(text) <= limit else text[: limit - 1] + "…"
        out.append(row)
    return out


def cmd_history(args) -> int:

    engine = _engine(args)
    rows = history(engine, HistoryFilter(args.since, args.until, args.camera, args.verdict, args.min_score,
                                         views_disagree=True if args.views_disagree else None, limit=args.limit))
    reviews = reviews_of(engine, [row["id"] for row in rows])
    for row in rows:  # the newest review of the row, and whether it confirms the model's verdict
        latest = reviews.get(row["id"], [None])[-1]
        row["review"] = latest.label if latest else None
        agreement = agrees(row["verdict"], latest.label) if latest else None
        row["agrees"] = None if agreement is None else ("yes" if agreement else "no")
        row["photo"] = photo_now(row)
    if args.format != "table" or args.wide:
        columns = [*HISTORY_COLUMNS, "photo", "review", "agrees"]
        sys.stdout.write(render(rows, args.format, columns))
        return 0
    for row in rows:  # a terminal line: the photo's file name; --wide or show ID gives the whole path
        row["photo"] = row["photo"] if row["photo"].startswith("removed") else Path(row["photo"]).name
    fixed = ["id", "created_at", "camera", "verdict", "score", "review", "agrees"]
    fitted = fit_columns(rows, fixed, {"photo": 2, "reasoning": 3}, args.width) if rows else rows
    sys.stdout.write(render(fitted, "table", [*fixed[:5], "photo", "review", "agrees", "reasoning"]))
    return 0


# What a field of `show` means where its name does not say it.
_SHOW_NOTES = {
    "score": "P(yes), by the bundle's score method",
    "reasoning_tokens": "tokens between <think> and </think>",
    "tokens_used": "reasoning tokens ReAL kept (both filters) to build the map",
    "queue_ms": "file complete -> its batch started, less its reading and decoding",
    "load_ms": "reading and decoding this file",
    "model_ms": "this image's share of its batch's model time: batch time / images in the batch",
    "real_ms": "ReAL for this image alone",
    "latency_ms": "file complete -> row written",
    "view_scores": "each mirror view's score; `score` is their mean",
    "shown_view": "whose reasoning is shown: 0 = the photo as it came, 1-3 = a mirror view",
}


def cmd_show(args) -> int:

    engine = _engine(args)
    record = inspection(engine, args.id)
    if record is None:
        raise InspectdError(f"no inspection with id {args.id}")
    if args.json:
        sys.stdout.write(json.dumps(record, indent=2, default=_cell) + "\n")
    else:
        for key, value in record.items():
            if key == "alerts":
                for alert in value:
                    print(escape_controls(
                        f"alert: {alert['rule']} -> {alert['channel']}: {alert['status']} "
                        f"(attempts {alert['attempts']}){' ' + alert['last_error'] if alert['last_error'] else ''}"))
            else:
                note = f"   ({_SHOW_NOTES[key]})" if key in _SHOW_NOTES and value is not None else ""
                shown = _cell(value) if not isinstance(value, dict) else json.dumps(value)
                print(f"{key}: {escape_controls(shown)}{note}")
        votes = view_votes(record)
        if votes is not None:
            print(f"views: {votes.sentence()}")
        print(f"photo: {escape_controls(_photo_check(record))}")
    wanted = {k: getattr(args, k) for k in ("map", "mask", "overlay") if getattr(args, k)}
    if wanted:
        pngs = artifacts(engine, args.id)
        if pngs is None:
            raise InspectdError(f"inspection {args.id} has no stored map (verdict {record['verdict']})")
        if args.map:
            Path(args.map).write_bytes(pngs[0])
        if args.mask:
            Path(args.mask).write_bytes(pngs[1])
        if args.overlay:
            import numpy as np
            from PIL import Image

            from inspectd.inspection.render import overlay_image, verdict_label
            photo = _inspected_photo(record)
            with Image.open(io.BytesIO(pngs[0])) as m, Image.open(io.BytesIO(pngs[1])) as k:
                heat = np.asarray(m, dtype=np.float32) / 255.0
                mask = np.asarray(k) > 127
            overlay_image(photo, heat, mask, verdict_label(record["verdict"], record["score"],
                                                           record["threshold"])).save(args.overlay)
        for kind, path in wanted.items():
            print(f"wrote {kind}: {path}", file=sys.stderr)
    return 0


def _photo_bytes(record: dict) -> tuple[str, bytes]:
    """The row's photo (archive, or the drop folder in keep mode), read without following a link and checked
    against the row's sha256: ``PhotoChanged`` when it is not the one inspected. ``show`` may run with ``--db``
    and no config, so the folders are not checked here (the console's ``PhotoRoots`` does)."""
    from inspectd.data.archived_photos import verify
    from inspectd.inspection.images import read_image_bytes

    source = record["archived_path"] or record["source_path"]
    return source, verify(record, read_image_bytes(Path(source), 10**9, follow_symlinks=False), source)


def _inspected_photo(record: dict):
    from inspectd.inspection.images import decode_image

    source, data = _photo_bytes(record)
    return decode_image(data, source, 10**12)


def _photo_check(record: dict) -> str:
    """What ``show`` says of the photo: where it is and that it is the one inspected, or why not."""
    from inspectd.data.archived_photos import PhotoChanged

    if record.get("photo_removed_at") is not None:
        return f"removed by retention at {_cell(record['photo_removed_at'])}"
    try:
        source, _ = _photo_bytes(record)
    except PhotoChanged as exc:
        return f"CHANGED: {exc}"
    except InspectdError as exc:
        return f"not readable: {exc}"
    return f"{source} (sha256 matches the inspected bytes)"


def _stats_zone(args) -> tuple[str, str]:
    """The zone whose days ``stats`` counts, and where it comes from: --time-zone, else the config's
    console.time_zone (the console's days), else UTC (--db without --config)."""
    if args.time_zone:
        return args.time_zone, "--time-zone"
    if args.db is not None and not args.config:
        return "UTC", "--db without --config; --time-zone to change"
    from inspectd.config import config_path

    return _settings(args).console.time_zone, f"console.time_zone of {config_path(args.config)}"


def cmd_stats(args) -> int:
    from inspectd.store.stats import DAILY_COLUMNS, collect, zone_of

    zone, origin = _stats_zone(args)
    zone_of(zone)  # a wrong name is refused before the store is opened
    stats = collect(_engine(args), None, zone, since=args.since, camera=args.camera)  # days only, no shifts
    rows = stats.daily_rows()
    if args.format == "table":
        print(f"days in {zone} ({escape_controls(origin)})")
    sys.stdout.write(render(rows, args.format, list(DAILY_COLUMNS)))
    return 0


def cmd_alerts(args) -> int:

    engine = _engine(args)
    status = tuple(s.value for s in AlertStatus) if args.all else OPEN_ALERT_STATUSES
    sys.stdout.write(render(alerts(engine, status, args.limit), args.format, width={"last_error": 60}))
    if args.format == "table":  # what the cooldowns held back, so that few alerts for many defects are explained
        since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=24)
        held = suppressed_alerts(engine, since)
        if held:
            print("\nsuppressed by a rule's cooldown in the last 24 h (not sent; --all lists them):")
            sys.stdout.write(render(held, "table", ["rule", "channel", "camera", "suppressed", "cooldown_s",
                                                    "last_suppressed_at"]))
    return 0


def cmd_export_reviewed(args) -> int:
    from inspectd.data.archived_photos import PhotoRoots
    from inspectd.data.reviewed import export_reviewed

    settings = _settings(args)
    done = export_reviewed(_engine(args), PhotoRoots.of(settings), Path(args.out), args.since, args.camera,
                           args.replace)
    print(escape_controls(
        f"wrote {done.folder}: {done.good} good, {done.defect} defect"
        + (f"; {len(done.missing)} reviewed rows skipped, their photo is no longer in the archive "
           f"(ids {', '.join(map(str, done.missing[:10]))}{'...' if len(done.missing) > 10 else ''})"
           if done.missing else "")))
    if done.changed:
        # never exported as training data; exit 1 so that a scheduled export is noticed
        print(f"NOT exported: {len(done.changed)} reviewed row(s) whose archived photo is not the one inspected "
              f"(sha256 differs: rewritten after inspection): ids {', '.join(map(str, done.changed))}",
              file=sys.stderr)
        for reason in done.reasons:
            print(f"  {escape_controls(reason)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def add_commands(sub) -> None:
    def common(parser):
        parser.add_argument("--db", help="SQLAlchemy URL of the store (default: store.url of the config)")

    history = sub.add_parser("history", help="list inspections, newest first")
    common(history)
    history.add_argument("--since", type=parse_time, help="ISO time (UTC) or span back from now: 30m, 24h, 7d")
    history.add_argument("--until", type=parse_time)
    history.add_argument("--camera")
    history.add_argument("--verdict", choices=[v.value for v in Verdict])
    history.add_argument("--min-score", type=float)
    history.add_argument("--views-disagree", action="store_true",
                         help="only verdicts whose mirror views fell on both sides of the threshold (a bundle with "
                              "score.views > 1): they depend on how the part lay, so review them first")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--format", choices=("table", "csv", "json"), default="table")
    history.add_argument("--width", type=int, default=100,
                         help="table: cut the photo name and the reasoning so that a line fits this many columns")
    history.add_argument("--wide", action="store_true",
                         help="table: every column whole (the drop-folder path, where the photo is now, latency)")
    history.set_defaults(handler=cmd_history)

    show = sub.add_parser("show", help="everything about one inspection")
    common(show)
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.add_argument("--map", help="write the anomaly map PNG here")
    show.add_argument("--mask", help="write the mask PNG here")
    show.add_argument("--overlay", help="write a heat overlay on the archived image here")
    show.set_defaults(handler=cmd_show)

    stats = sub.add_parser("stats", help="per day and camera: counts, anomaly rate, mean latency (the console's "
                                          "days: console.time_zone)")
    common(stats)
    stats.add_argument("--since", type=parse_time,
                       help="from the day (in the stats' zone) holding this ISO time (UTC) or span back: 7d, 24h")
    stats.add_argument("--time-zone", metavar="ZONE",
                       help="IANA zone whose days are counted (default: console.time_zone of the config, as the "
                            "console counts; UTC with --db and no --config)")
    stats.add_argument("--camera")
    stats.add_argument("--format", choices=("table", "csv", "json"), default="table")
    stats.set_defaults(handler=cmd_stats)

    alert = sub.add_parser("alerts", help="pending and failed alerts (--all: delivered too)")
    common(alert)
    alert.add_argument("--all", action="store_true")
    alert.add_argument("--limit", type=int, default=100)
    alert.add_argument("--format", choices=("table", "csv", "json"), default="table")
    alert.set_defaults(handler=cmd_alerts)

    reviewed = sub.add_parser("export-reviewed", help="reviewed inspections as a labelled folder (good/, defect/) "
                                                      "for inspectd-train and calibration")
    common(reviewed)
    reviewed.add_argument("out", help="folder to write (good/, defect/, reviews.csv)")
    reviewed.add_argument("--since", type=parse_time, help="only inspections since: ISO time (UTC) or 7d, 24h")
    reviewed.add_argument("--camera")
    reviewed.add_argument("--replace", action="store_true", help="replace OUT when it is not empty")
    reviewed.set_defaults(handler=cmd_export_reviewed)

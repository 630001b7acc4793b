"""The console's history: filters parsed from a query string, keyset pages, newest first.

Keyset paging (``before=<created_at>~<id>``) instead of OFFSET keeps every
page as fast as the first on a million rows; no total is counted for the
same reason. Time, camera and verdict filters ride the store's indexes; the
reviewed filter probes ``ix_reviews_inspection_id`` per row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, exists, select, text, tuple_

from inspectd.verdict import Verdict
from inspectd.store.queries import where_inspections
from inspectd.store.schema import InspectionRow, ReviewRow

COLUMNS = ("id", "created_at", "camera", "verdict", "score", "threshold", "views_disagree", "source_path",
           "reasoning", "archived_path", "photo_removed_at")


_DIGITS = re.compile(r"[0-9]{1,19}")
_ROW_ID_MAX = 2**63 - 1  # a 64-bit row id: a larger cursor made SQLite raise OverflowError (500)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


class BadFilter(ValueError):
    """A query parameter the console cannot use; the message names it (answered with 400)."""


@dataclass(frozen=True)
class HistoryQuery:
    since: datetime | None = None
    until: datetime | None = None
    camera: str | None = None
    verdict: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    reviewed: bool | None = None
    views_disagree: bool | None = None
    before: tuple[datetime, int] | None = None
    size: int = 50

    def link(self, **changes) -> str:
        """This query as a query string, with ``changes`` applied (None drops a parameter)."""
        query = replace(self, **changes)
        params = {}
        for f in fields(query):
            value = getattr(query, f.name)
            if value is None or (f.name == "size" and value == 50):
                continue
            if f.name == "before":
                value = f"{value[0].isoformat()}~{value[1]}"
            elif f.name in ("reviewed", "views_disagree"):
                value = "yes" if value else "no"
            elif isinstance(value, datetime):
                value = value.isoformat() + "+00:00"
            params[f.name] = value
        return "?" + urlencode(params) if params else "?"


def _time(name: str, value: str, zone: ZoneInfo) -> datetime:
    """A time without an offset is the plant's local time (the console's zone); the store keeps UTC."""
    try:
        parsed = datetime.fromisoformat(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(timezone.utc).replace(tzinfo=None)
    except ValueError:
        raise BadFilter(f"{name}: {value!r} is not a date or time (2026-11-24 or 2026-11-24T08:00)") from None
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise BadFilter(f"{name}: {value!r} is out of range once converted to UTC") from None


def integer(name: str, value: str, low: int, high: int, what: str = "a whole number") -> int:
    """ASCII digits only (``str.isdigit`` passes ``²``, which ``int`` refuses), within ``low``-``high``."""
    if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
        raise BadFilter(f"{name}: {value[:40]!r} is not {what} from {low} to {high}")
    return int(value)


def single_values(items: list[tuple[str, str]], known: set[str]) -> dict[str, str]:
    """Query-string pairs -> one value per name; a repeated or unknown name is refused, naming it."""
    values: dict[str, str] = {}
    for name, value in items:
        if name not in known:
            raise BadFilter(f"unknown parameter {name[:40]!r}; known: {', '.join(sorted(known))}")
        if name in values:
            raise BadFilter(f"{name}: given more than once")
        values[name] = value
    return values


def _score(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise BadFilter(f"{name}: {value[:40]!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise BadFilter(f"{name}: {value} is outside 0-1")
    return number


KNOWN = frozenset(f.name for f in fields(HistoryQuery))


def parse_query(params: dict[str, str] | list[tuple[str, str]], max_size: int, zone: ZoneInfo) -> HistoryQuery:
    """Query-string parameters (empty ones ignored) -> a query; unknown and repeated names are refused."""
    if not isinstance(params, dict):
        params = single_values(params, KNOWN)
    known = KNOWN
    unknown = sorted(set(params) - known)
    if unknown:
        raise BadFilter(f"unknown parameter {unknown[0][:40]!r}; known: {', '.join(sorted(known))}")
    values = {k: v.strip() for k, v in params.items() if v.strip()}
    out: dict = {}
    for name in ("since", "until"):
        if name in values:
            out[name] = _time(name, values[name], zone)
    if "camera" in values:
        if len(values["camera"]) > 200:
            raise BadFilter("camera: longer than 200 characters")
        if _CONTROLS.search(values["camera"]):  # PostgreSQL refuses a NUL in a string: a 500, not a filter
            raise BadFilter("camera: control characters are not part of a camera name")
        out["camera"] = values["camera"]
    if "verdict" in values:
        if values["verdict"] not in {v.value for v in Verdict}:
            raise BadFilter(f"verdict: {values['verdict']!r} is not one of {', '.join(v.value for v in Verdict)}")
        out["verdict"] = values["verdict"]
    for name in ("min_score", "max_score"):
        if name in values:
            out[name] = _score(name, values[name])
    for name in ("reviewed", "views_disagree"):
        if name in values:
            if values[name] not in ("yes", "no"):
                raise BadFilter(f"{name}: {values[name]!r} is not yes or no")
            out[name] = values[name] == "yes"
    if "before" in values:
        stamp, _, row = values["before"].rpartition("~")
        if not _DIGITS.fullmatch(row) or int(row) > _ROW_ID_MAX:
            raise BadFilter(f"before: {values['before'][:80]!r} is not a page cursor")
        out["before"] = (_time("before", stamp, zone), int(row))
    if "size" in values:
        out["size"] = integer("size", values["size"], 1, max_size, "a page size")
    return HistoryQuery(**out)


def page(engine: Engine, query: HistoryQuery) -> tuple[list[dict], HistoryQuery | None]:
    """One page of rows and the query of the next page (None on the last)."""
    row = InspectionRow
    statement = where_inspections(select(*(getattr(row, c) for c in COLUMNS)), query.since, query.until,
                                  query.camera, query.verdict, query.min_score, query.max_score, query.views_disagree)
    if query.reviewed is not None:
        has_review = exists().where(ReviewRow.inspection_id == row.id)
        statement = statement.where(has_review if query.reviewed else ~has_review)
    if query.before is not None:
        statement = statement.where(tuple_(row.created_at, row.id) < tuple_(*query.before))
    statement = statement.order_by(row.created_at.desc(), row.id.desc()).limit(query.size + 1)
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(statement)]
    if len(rows) <= query.size:
        return rows, None
    rows = rows[:query.size]
    return rows, replace(query, before=(rows[-1]["created_at"], rows[-1]["id"]))


# A loose index scan: one index seek per camera (ix on camera, created_at) instead of a DISTINCT over every row,
# which cost ~50 ms per history page on a million rows. Standard SQL: SQLite and PostgreSQL.
_CAMERAS = text("""
WITH RECURSIVE names(camera) AS (
    SELECT min(camera) FROM inspections
    UNION ALL
    SELECT (SELECT min(camera) FROM inspections WHERE camera > names.camera) FROM names WHERE camera IS NOT NULL
)
SELECT camera FROM names WHERE camera IS NOT NULL
""")


def cameras(engine: Engine) -> list[str]:
    """Camera names for the filter, in order."""
    with engine.connect() as connection:
        return [r[0] for r in connection.execute(_CAMERAS)]

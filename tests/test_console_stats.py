"""Console stats and history paging on SQLite and PostgreSQL: local days and shifts, bins, agreement, cursors."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from inspectd.console.history import HistoryQuery, cameras, page, parse_query
from inspectd.console.stats import collect
from inspectd.store.database import migrate, open_engine
from inspectd.store.reviews import add_review
from inspectd.store.schema import InspectionRow


def _rows(engine, specs):
    with Session(engine) as session, session.begin():
        for i, (created, camera, verdict, score) in enumerate(specs, 1):
            session.add(InspectionRow(id=i, created_at=created, camera=camera, source_path=f"/d/{i}.png",
                                      sha256=f"{i:064x}", size_bytes=1, verdict=verdict, score=score, threshold=0.5,
                                      reasoning_tokens=0, tokens_used=0))


def test_days_and_shifts_follow_the_plants_zone_and_reviews_are_counted(store_url):
    engine = open_engine(store_url)
    migrate(engine)
    utc = lambda *a: datetime(*a)  # noqa: E731 (naive UTC, as the store keeps it)
    _rows(engine, [
        (utc(2026, 11, 23, 23, 10), "top", "anomalous", 0.97),  # Berlin (UTC+1): 24th 00:10 -> day 24, shift 22-06
        (utc(2026, 11, 24, 4, 10), "top", "normal", 0.02),      # Berlin: 24th 05:10 -> shift 22-06
        (utc(2026, 11, 24, 9, 0), "top", "normal", 0.10),       # Berlin: 10:00 -> shift 06-14
        (utc(2026, 11, 24, 9, 5), "top", "unknown", None),
        (utc(2026, 11, 24, 14, 0), "side", "anomalous", 1.0),   # Berlin: 15:00 -> shift 14-22
    ])
    writer = engine
    add_review(writer, 1, "good", None, "ann")     # overrules the model
    add_review(writer, 1, "defect", "on second look", "bob")  # the newest review counts: agrees
    add_review(writer, 3, "defect", None, "ann")   # overrules
    now = datetime(2026, 11, 25, tzinfo=timezone.utc)
    stats = collect(engine, 7, "Europe/Berlin", (6, 14, 22), now=now)
    assert stats.cameras == ["side", "top"] and stats.days == ["2026-11-24"]
    top = stats.by_day[("2026-11-24", "top")]
    assert (top.anomalous, top.normal, top.other) == (1, 2, 1) and abs(top.rate - 1 / 3) < 1e-9
    assert stats.by_shift[("22-06", "top")].anomalous == 1 and stats.by_shift[("22-06", "top")].normal == 1
    assert stats.by_shift[("06-14", "top")].normal == 1 and ("14-22", "top") not in stats.by_shift
    assert stats.by_shift[("14-22", "side")].anomalous == 1
    assert stats.scores["top"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]  # 0.02, 0.10 (bins start inclusive), 0.97 and stats.scores["side"][9] == 1
    assert stats.reviews == {"top": (2, 1)}
    in_utc = collect(engine, 7, "UTC", (6, 14, 22), now=now)
    assert in_utc.days == ["2026-11-23", "2026-11-24"]


def test_keyset_pages_visit_every_row_once_newest_first_under_filters(store_url):
    engine = open_engine(store_url)
    migrate(engine)
    specs = [(datetime(2026, 11, 24, 8, 0, i % 60, 0), "top" if i % 3 else "side",
              "anomalous" if i % 4 == 0 else "normal", (i % 10) / 10) for i in range(1, 131)]
    specs[40] = (specs[39][0], *specs[40][1:])  # two rows at the same second: the id breaks the tie
    _rows(engine, specs)
    add_review(engine, 8, "defect", None, "ann")
    assert cameras(engine) == ["side", "top"]
    seen, query = [], HistoryQuery(camera="top", size=7)
    while query is not None:
        rows, query = page(engine, query)
        seen += [(r["created_at"], r["id"]) for r in rows]
        assert all(r["camera"] == "top" for r in rows)
    expected = sorted(((c, i) for i, (c, cam, _, _) in enumerate(specs, 1) if cam == "top"), reverse=True)
    assert seen == expected
    rows, _ = page(engine, parse_query({"reviewed": "yes"}, 500, ZoneInfo("UTC")))
    assert [r["id"] for r in rows] == [8]
    rows, _ = page(engine, parse_query({"min_score": "0.85", "verdict": "normal", "size": "500"}, 500, ZoneInfo("UTC")))
    assert rows and all(r["score"] >= 0.85 and r["verdict"] == "normal" for r in rows)
    # A time without an offset is the plant's local time: 09:00 in Berlin is 08:00 UTC.
    local = parse_query({"since": "2026-11-24T09:00:30"}, 500, ZoneInfo("Europe/Berlin"))
    assert local.since == datetime(2026, 11, 24, 8, 0, 30)
    again = parse_query(dict(parse_qsl(local.link()[1:])), 500, ZoneInfo("Europe/Berlin"))
    assert again.since == local.since  # a link keeps the same instant whatever the zone

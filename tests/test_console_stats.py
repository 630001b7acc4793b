"""Console stats and history paging on SQLite and PostgreSQL: local days and shifts, bins, agreement, cursors."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from inspectd.console.history import HistoryQuery, cameras, page, parse_query
from inspectd.store.stats import collect
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


@pytest.mark.slow
def test_the_cli_and_the_console_count_the_same_plant_days(tmp_path):
    """Eight rows around a Berlin midnight: four defects just after it (still the day before in UTC), four good
    parts later that night. In Europe/Berlin both the CLI and the console say one day, 50 %; the CLI on a bare
    --db counts UTC days, and says so."""
    import json
    import re
    import subprocess
    import sys
    from datetime import timedelta

    from tests.console_harness import REPO, ConsoleProcess, request
    from tests.daemon_harness import write_config

    berlin = ZoneInfo("Europe/Berlin")
    day = datetime.now(berlin).date() - timedelta(days=3)
    midnight = datetime(day.year, day.month, day.day, tzinfo=berlin).astimezone(timezone.utc).replace(tzinfo=None)
    specs = [(midnight + timedelta(minutes=10 + 5 * i), "top", "anomalous", 0.9) for i in range(4)]
    specs += [(midnight + timedelta(hours=2, minutes=5 * i), "top", "normal", 0.1) for i in range(4)]
    assert len({c.date() for c, *_ in specs}) == 2  # two UTC days, one Berlin day
    config = write_config(tmp_path, REPO / "models" / "tiny-cgro", console={"time_zone": "Europe/Berlin"})
    url = f"sqlite:///{tmp_path / 'var' / 'inspectd.db'}"
    engine = open_engine(url)
    migrate(engine)
    _rows(engine, specs)
    engine.dispose()

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "inspectd.cli", *args], capture_output=True, text=True,
                              timeout=120, cwd=REPO)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def per_day(*args):
        return {r["day"]: (r["inspections"], r["anomaly_rate"]) for r in json.loads(cli(*args, "--format", "json"))}

    local = per_day("--config", str(config), "stats")
    assert local == {day.isoformat(): (8, 0.5)}
    assert per_day("stats", "--db", url, "--time-zone", "Europe/Berlin") == local
    utc = per_day("stats", "--db", url)
    assert utc == {(day - timedelta(days=1)).isoformat(): (4, 1.0), day.isoformat(): (4, 0.0)}
    assert cli("--config", str(config), "stats").startswith("days in Europe/Berlin (console.time_zone of")
    assert cli("stats", "--db", url).startswith("days in UTC (--db without --config")
    assert per_day("--config", str(config), "stats", "--since", f"{day.isoformat()}T12:00") == local  # whole day

    console = ConsoleProcess(config)
    try:
        console.wait_ready()
        status, _, body = request(console.url + "/stats?days=14")
        assert status == 200 and b"days and shifts in Europe/Berlin" in body
        titles = dict(re.findall(r"<title>(\d{4}-\d\d-\d\d): ([^<]*)</title>", body.decode()))
        assert titles == {day.isoformat(): "50.0% defects (4 of 8 judged)"}, titles
    finally:
        console.stop()

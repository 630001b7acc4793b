"""The store and the engineers' commands, on a real SQLite file."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from inspectd.alerts.relay import backoff_s
from inspectd.config import AlertSettings, ArchiveSettings
from inspectd.daemon.archive import Archiver
from inspectd.daemon.items import ReadyFile
from inspectd.daemon.recorder import Processed, InspectionRecorder
from inspectd.inspection.result import InspectionResult
from inspectd.inspection.views import combine_views
from inspectd.verdict import Verdict
from inspectd.real.params import RealParams
from inspectd.store.database import current_revision, head_revision, migrate, open_engine
from tests.conftest import REPO, noise_image


def _result(source: str, verdict: Verdict, score: float | None, size=(40, 30)) -> InspectionResult:
    anomaly_map = mask = None
    if verdict in (Verdict.ANOMALOUS, Verdict.NORMAL):
        anomaly_map = np.zeros((size[1], size[0]), dtype=np.float32)
        anomaly_map[5:10, 20:30] = 1.0
        mask = anomaly_map >= 0.5
    return InspectionResult(
        source=source, verdict=verdict, threshold=0.5, score=score,
        reasoning="a dark spot near the top" if anomaly_map is not None else None,
        reply="<think>a dark spot near the top</think><answer>yes</answer>", parse_status="ok",
        image_size=size, anomaly_map=anomaly_map, mask=mask, real_fallback=False,
        timings={"load": 0.001, "preprocess": 0.01, "generate": 0.1, "decode": 0.001, "real": 0.002},
        error="not an image" if verdict is Verdict.FAILED else None,
    )


@pytest.fixture()
def store(tmp_path, store_url):
    engine = open_engine(store_url)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO bundles (sha256, name, base_model, quantization, path, first_seen) "
            "VALUES ('ab', 'tiny', 'test', 'none', '/x', '2026-01-01')"))
    alerts = AlertSettings.model_validate({
        "channels": [{"type": "log", "name": "log"}],
        "rules": [{"name": "bad", "verdicts": ["anomalous"], "min_score": 0.8, "channels": ["log"], "cooldown_s": 3600}],
    })
    archiver = Archiver(ArchiveSettings(folder=tmp_path / "archive", failed_folder=tmp_path / "failed"))
    recorder = InspectionRecorder(engine, 1, RealParams(), archiver, alerts, save_maps=True)
    drop = tmp_path / "drop"
    drop.mkdir()
    plan = [("a.png", "cam1", Verdict.ANOMALOUS, 0.95), ("b.png", "cam1", Verdict.NORMAL, 0.1),
            ("c.png", "cam2", Verdict.ANOMALOUS, 0.85), ("d.png", "cam2", Verdict.FAILED, None),
            ("e.png", "cam1", Verdict.ANOMALOUS, 0.99)]
    ids = []
    for i, (name, camera, verdict, score) in enumerate(plan):
        noise_image(40, 30, seed=i).save(drop / name)
        ready = ReadyFile(drop / name, camera, time.time())
        sha256 = hashlib.sha256((drop / name).read_bytes()).hexdigest()  # the photo's own: readers check it
        ids.append(recorder.record(Processed(ready, sha256, 123, _result(str(drop / name), verdict, score), time.time())))
    yield engine, tmp_path, ids, store_url
    engine.dispose()


def _cli(url, *args):
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", *args[:1], "--db", url, *args[1:]],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ})
    return done


def test_migrations_are_idempotent_and_versioned(store_url):
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from inspectd.store.database import _alembic_config

    engine = open_engine(store_url)
    assert current_revision(engine) is None
    assert migrate(engine) == head_revision() == migrate(engine)
    # readers read the revisions without alembic; alembic agrees on both
    assert head_revision() == ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as connection:
        assert current_revision(engine) == MigrationContext.configure(connection).get_current_revision()
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10000
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_mirror_views_scores_and_the_view_shown_are_recorded_and_shown(store, tmp_path):
    """A four-view bundle's row keeps each view's score and which view's reasoning is shown; ``show`` says when
    the views fall on both sides of the threshold. A one-view row leaves both empty."""
    engine, _, ids, url = store
    real = RealParams(map_scaling="score_gated")
    views = [replace(_result("f.png", Verdict.NORMAL, score), reasoning=text, reply=f"<think>{text}</think><answer>x</answer>")
             for score, text in ((0.2, "the tile surface is clean"), (0.9, "there is a crack near the left"),
                                 (0.8, "there is a crack"), (0.7, "there is a crack"))]
    combined = replace(combine_views(views, 0.5, real), source=str(tmp_path / "f.png"))
    noise_image(40, 30, seed=9).save(tmp_path / "f.png")
    archiver = Archiver(ArchiveSettings(folder=tmp_path / "archive2", failed_folder=tmp_path / "failed2"))
    recorder = InspectionRecorder(engine, 1, real, archiver, AlertSettings(), save_maps=True)
    sha256 = hashlib.sha256((tmp_path / "f.png").read_bytes()).hexdigest()
    row_id = recorder.record(Processed(ReadyFile(tmp_path / "f.png", "cam3", time.time()), sha256, 123, combined,
                                       time.time()))
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT score, view_scores, shown_view, reasoning, views_disagree "
                                         "FROM inspections WHERE id = :id"), {"id": row_id}).one()
        single = connection.execute(text("SELECT view_scores, shown_view, views_disagree FROM inspections "
                                         "WHERE id = :id"), {"id": ids[0]}).one()
    view_scores = json.loads(stored[1]) if isinstance(stored[1], str) else stored[1]
    assert stored[0] == pytest.approx(0.65) and view_scores == [0.2, 0.9, 0.8, 0.7] and stored[2] == 1
    assert stored[3] == "there is a crack near the right"  # view 1's words, turned back onto the photo
    assert stored[4] and tuple(single) == (None, None, None)
    listed = json.loads(_cli(url, "history", "--views-disagree", "--format", "json").stdout)
    assert [row["id"] for row in listed] == [row_id] and listed[0]["views_disagree"] is True
    done = _cli(url, "show", str(row_id))
    assert done.returncode == 0, done.stderr
    assert ("views: 0.200 · 0.900 · 0.800 · 0.700; 3 of 4 at or above the threshold 0.500: the views disagree, so "
            "this verdict depends on how the part lay. Reasoning shown: mirrored left-right") in done.stdout
    assert "shown_view: 1   (whose reasoning is shown" in done.stdout
    assert "views:" not in _cli(url, "show", str(ids[0])).stdout


def test_recorded_rows_archive_and_cooldown(store):
    engine, tmp_path, ids, url = store
    assert all(ids)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT verdict, archived_path FROM inspections ORDER BY id")).all()
        alerts = connection.execute(text("SELECT inspection_id, camera, status FROM alerts ORDER BY id")).all()
        held = connection.execute(text("SELECT payload FROM alerts WHERE status = 'suppressed'")).scalar_one()
        first = connection.execute(text("SELECT min(id) FROM alerts")).scalar_one()
        blobs = connection.execute(text("SELECT count(*) FROM artifacts")).scalar()
    assert [Path(r[1]).parent.name for r in rows] == ["cam1", "cam1", "cam2", "cam2", "cam1"]
    assert Path(rows[3][1]).parent.parent == tmp_path / "failed"
    assert Path(rows[3][1] + ".error.json").is_file()
    # a (0.95, cam1) alerts; c (0.85, cam2) alerts; e (cam1) falls in a's cooldown: kept, not sent; b is normal.
    assert alerts == [(ids[0], "cam1", "pending"), (ids[2], "cam2", "pending"), (ids[4], "cam1", "suppressed")]
    held = json.loads(held) if isinstance(held, str) else held
    assert held["suppressed_by"] == first and held["cooldown_s"] == 3600 and held["inspection_id"] == ids[4]
    table = _cli(url, "alerts").stdout  # the engineer sees why 3 defects raised 2 alerts
    assert "suppressed by a rule's cooldown" in table
    assert [line.split()[:5] for line in table.splitlines() if line.startswith("bad ")] == \
        [["bad", "log", "cam1", "1", "3600.000"]]
    assert {a["status"] for a in json.loads(_cli(url, "alerts", "--all", "--format", "json").stdout)} == \
        {"pending", "suppressed"}
    assert blobs == 4  # every inspected image keeps its map; the failed one has none
    assert not list((tmp_path / "drop").iterdir())


def _processed(drop: Path, name: str, camera: str, sha: str, verdict: Verdict, score: float | None, seed: int):
    noise_image(40, 30, seed=seed).save(drop / name)
    return Processed(ReadyFile(drop / name, camera, time.time()), sha, 123,
                     _result(str(drop / name), verdict, score), time.time())


def test_a_batch_shares_one_transaction_and_keeps_duplicates_and_cooldowns(store):
    """The rows of a batch are written together; bytes that came twice in it are archived as a duplicate of the
    first, and an alert rule's cooldown holds between rows of the same batch."""
    engine, tmp_path, _, _ = store
    recorder = InspectionRecorder(engine, 1, RealParams(), Archiver(ArchiveSettings(
        folder=tmp_path / "archive", failed_folder=tmp_path / "failed")), AlertSettings.model_validate({
            "channels": [{"type": "log", "name": "log"}],
            "rules": [{"name": "bad", "verdicts": ["anomalous"], "channels": ["log"], "cooldown_s": 3600}]}),
        save_maps=True)
    drop = tmp_path / "drop"
    batch = [_processed(drop, "x.png", "cam3", "a" * 64, Verdict.ANOMALOUS, 0.9, 10),
             _processed(drop, "y.png", "cam3", "a" * 64, Verdict.ANOMALOUS, 0.9, 10),
             _processed(drop, "z.png", "cam3", "b" * 64, Verdict.ANOMALOUS, 0.95, 11)]
    ids = recorder.record_many(batch)
    assert ids[0] is not None and ids[1] is None and ids[2] == ids[0] + 1
    assert not any((drop / name).exists() for name in ("x.png", "y.png", "z.png"))  # all three archived
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT i.id, i.archived_path, a.map_png IS NOT NULL FROM inspections i "
            "JOIN artifacts a ON a.inspection_id = i.id WHERE i.camera = 'cam3' ORDER BY i.id")).all()
        alerts = connection.execute(text(
            "SELECT inspection_id, status FROM alerts WHERE camera = 'cam3' ORDER BY id")).all()
    assert [r[0] for r in rows] == [ids[0], ids[2]] and all(Path(r[1]).is_file() and r[2] for r in rows)
    # the second anomalous row of the batch is inside the first one's cooldown: kept, not sent
    assert alerts == [(ids[0], "pending"), (ids[2], "suppressed")]


def test_a_row_that_breaks_its_batch_fails_alone(store):
    """Bytes already in the store break the batch's insert (unique sha256): the record stage writes the files one
    by one, so the others are recorded and that one is archived as a duplicate."""
    from inspectd.daemon.items import InFlight
    from inspectd.daemon.record_stage import RecordStage

    engine, tmp_path, ids, _ = store
    recorder = InspectionRecorder(engine, 1, RealParams(), Archiver(ArchiveSettings(
        folder=tmp_path / "archive", failed_folder=tmp_path / "failed")), AlertSettings(), save_maps=True)
    drop = tmp_path / "drop"
    with engine.connect() as connection:  # b.png's bytes, recorded by the fixture
        known = connection.execute(text("SELECT sha256 FROM inspections WHERE source_path LIKE '%b.png'")).scalar_one()
    batch = [_processed(drop, "new1.png", "cam1", "c" * 64, Verdict.NORMAL, 0.1, 20),
             _processed(drop, "again.png", "cam1", known, Verdict.NORMAL, 0.1, 1),
             _processed(drop, "new2.png", "cam1", "d" * 64, Verdict.NORMAL, 0.2, 21)]
    in_flight = InFlight()
    stage = RecordStage(recorder, in_flight, capacity=8)
    for item in batch:
        assert in_flight.claim(item.ready.path)
        stage.record(item)  # all waiting before the stage starts: taken up together
    stage.start()
    stage.stop()
    assert stage.recorded == 2 and len(in_flight) == 0
    with engine.connect() as connection:
        names = connection.execute(text("SELECT source_path FROM inspections WHERE sha256 IN (:c, :d, :k)"),
                                   {"c": "c" * 64, "d": "d" * 64, "k": known}).scalars().all()
    assert sorted(Path(n).name for n in names) == ["b.png", "new1.png", "new2.png"]
    assert not any((drop / item.ready.path.name).exists() for item in batch)  # the duplicate archived too


def test_history_filters_and_formats(store):
    _, tmp_path, ids, url = store
    done = _cli(url, "history", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in json.loads(done.stdout)] == list(reversed(ids))
    done = _cli(url, "history", "--camera", "cam1", "--verdict", "anomalous", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [int(r["id"]) for r in rows] == [ids[4], ids[0]]
    done = _cli(url, "history", "--min-score", "0.9", "--format", "json")
    assert {r["id"] for r in json.loads(done.stdout)} == {ids[0], ids[4]}
    done = _cli(url, "history", "--since", "1h", "--limit", "2")
    assert done.returncode == 0 and done.stdout.count("\n") == 4  # header, rule, two rows
    future = (datetime.utcnow() + timedelta(days=1)).isoformat()
    assert json.loads(_cli(url, "history", "--since", future, "--format", "json").stdout) == []
    bad = _cli(url, "history", "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO time" in bad.stderr


def test_history_fits_a_terminal_and_says_where_the_photo_is_now(store):
    """A newcomer's terminal: 100 columns by default, the photo's name where it lies now (the archive, not the
    drop folder it left); --wide and csv give the whole paths."""
    engine, tmp_path, ids, url = store
    with engine.begin() as connection:  # a long reasoning, as real models write
        connection.execute(text("UPDATE inspections SET reasoning = :r WHERE id = :i"),
                           {"r": "a long thin crack runs from the upper left corner " * 5, "i": ids[0]})
    table = _cli(url, "history")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100 and "…" in table.stdout, table.stdout
    assert lines[0].split() == ["id", "created_at", "camera", "verdict", "score", "photo", "review", "agrees",
                                "reasoning"]
    assert "a.png" in table.stdout and str(tmp_path) not in table.stdout
    assert max(len(line) for line in _cli(url, "history", "--width", "90").stdout.splitlines()) <= 90
    wide = _cli(url, "history", "--wide").stdout
    assert str(tmp_path / "archive") in wide and str(tmp_path / "drop" / "a.png") in wide
    rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(_cli(url, "history", "--format", "csv").stdout))}
    assert Path(rows[ids[0]]["photo"]).parent.parent.parent == tmp_path / "archive"
    assert rows[ids[0]]["source_path"] == str(tmp_path / "drop" / "a.png")


def test_show_writes_pngs_and_stats_and_alerts(store):
    _, tmp_path, ids, url = store
    out = tmp_path / "out"
    out.mkdir()
    done = _cli(url, "show", str(ids[0]), "--mask", str(out / "m.png"), "--overlay", str(out / "o.png"),
                "--map", str(out / "h.png"))
    assert done.returncode == 0, done.stderr
    assert "verdict: anomalous" in done.stdout and "alert: bad -> log: pending" in done.stdout
    assert "model_ms: " in done.stdout and "share of its batch" in done.stdout, "show explains per-batch timings"
    assert "(reasoning tokens ReAL kept" in done.stdout
    with Image.open(out / "m.png") as mask, Image.open(out / "o.png") as overlay:
        assert mask.size == (40, 30)
        assert np.asarray(mask)[7, 25] == 255 and np.asarray(mask)[20, 5] == 0
        band = overlay.height - 30
        assert overlay.width == 40 and band > 0, "the verdict band is added above the photo, covering none of it"
        top = np.asarray(overlay.convert("RGB"))[:band]
        assert (top[..., 0] > top[..., 1] + 60).any(), "an anomalous verdict is written in red"
    failed = _cli(url, "show", str(ids[3]), "--mask", str(out / "x.png"))
    assert failed.returncode == 2 and "has no stored map" in failed.stderr
    assert _cli(url, "show", "999").returncode == 2
    stats = json.loads(_cli(url, "stats", "--format", "json").stdout)
    by_camera = {r["camera"]: r for r in stats}
    assert by_camera["cam1"]["inspections"] == 3 and by_camera["cam1"]["anomaly_rate"] == pytest.approx(2 / 3)
    assert by_camera["cam2"]["failed"] == 1 and by_camera["cam2"]["anomaly_rate"] == 1.0
    table = _cli(url, "stats").stdout  # --db without --config: UTC days, and the table says so
    assert table.startswith("days in UTC (--db without --config") and "cam1" in table and "mean_latency_ms" in table
    berlin = json.loads(_cli(url, "stats", "--time-zone", "Europe/Berlin", "--format", "json").stdout)
    assert sum(r["inspections"] for r in berlin) == 5 and {r["camera"] for r in berlin} == {"cam1", "cam2"}
    wrong = _cli(url, "stats", "--time-zone", "Mars/Olympus")
    assert wrong.returncode == 2 and "not an IANA zone" in wrong.stderr
    pending = json.loads(_cli(url, "alerts", "--format", "json").stdout)
    assert {a["inspection_id"] for a in pending} == {ids[0], ids[2]}


def test_reader_commands_refuse_a_missing_or_unmigrated_store(tmp_path):
    (tmp_path / "var").mkdir()
    url = f"sqlite:///{tmp_path / 'var' / 'store.db'}"
    done = _cli(url, "history")
    assert done.returncode == 2 and "does not exist" in done.stderr
    open_engine(f"sqlite:///{tmp_path / 'var' / 'store.db'}").connect().close()
    done = _cli(url, "history")
    assert done.returncode == 2 and "schema none, expected" in done.stderr


def test_backoff_grows_and_is_capped():
    import random

    rng = random.Random(0)
    delays = [backoff_s(n, 1.0, 30.0, rng) for n in range(1, 12)]
    assert all(0.5 * min(30, 2 ** (n - 1)) <= d <= min(30, 2 ** (n - 1)) for n, d in zip(range(1, 12), delays))
    assert max(delays) <= 30.0


def test_systemd_unit_verifies(tmp_path):
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (.ci/run installs it where apt works)")
    unit = (REPO / "systemd" / "inspectd.service").read_text()
    executable = Path(sys.executable).parent / "inspectd"
    unit = unit.replace("/opt/inspectd/.venv/bin/inspectd", str(executable))
    (tmp_path / "inspectd.service").write_text(unit)
    done = subprocess.run([analyze, "verify", str(tmp_path / "inspectd.service")], capture_output=True, text=True)
    problems = [line for line in done.stderr.splitlines() if "inspectd.service" in line]
    assert done.returncode == 0 and not problems, done.stderr
    for needed in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=", "LoadCredential=",
                   "DeviceAllow=/dev/nvidiactl", "ExecReload=/bin/kill -HUP", "CPUWeight="):
        assert needed in unit
    assert not [l for l in unit.splitlines() if l.startswith("PrivateDevices=")]


def test_console_unit_verifies(tmp_path):
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (.ci/run installs it where apt works)")
    unit = (REPO / "systemd" / "inspectd-console.service").read_text()
    unit = unit.replace("/opt/inspectd/.venv/bin/inspectd", str(Path(sys.executable).parent / "inspectd"))
    (tmp_path / "inspectd-console.service").write_text(unit)
    done = subprocess.run([analyze, "verify", str(tmp_path / "inspectd-console.service")], capture_output=True,
                          text=True)
    problems = [line for line in done.stderr.splitlines() if "inspectd-console.service" in line]
    assert done.returncode == 0 and not problems, done.stderr
    daemon = (REPO / "systemd" / "inspectd.service").read_text()
    hardening = [l for l in daemon.splitlines() if l.startswith(("Protect", "Restrict", "NoNewPrivileges",
                                                                 "CapabilityBoundingSet", "LockPersonality"))]
    assert hardening and all(line in unit.splitlines() for line in hardening)  # the daemon's hardening, at least
    assert "ExecStart=" in unit and " serve" in unit and "LoadCredential=console-users" in unit


def test_a_failed_row_whose_move_was_interrupted_is_finished_into_failed(tmp_path, store_url):
    """A crash after the commit but before the move: the next pass moves it where its verdict says."""
    engine = open_engine(store_url)
    migrate(engine)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "bad.png").write_bytes(b"not an image")
    settings = dict(folder=tmp_path / "archive", failed_folder=tmp_path / "failed")
    alerts = AlertSettings()
    crashed = InspectionRecorder(engine, None, RealParams(), Archiver(ArchiveSettings(mode="keep", **settings)), alerts, True)
    ready = ReadyFile(drop / "bad.png", "cam1", time.time())
    failed = _result(str(drop / "bad.png"), Verdict.FAILED, None)
    assert crashed.record(Processed(ready, "f" * 64, 12, failed, time.time())) is not None
    assert (drop / "bad.png").is_file()
    restarted = InspectionRecorder(engine, None, RealParams(), Archiver(ArchiveSettings(**settings)), alerts, True)
    restarted.finish_recorded(ready, restarted.lookup("f" * 64))
    moved = tmp_path / "failed" / "cam1" / "bad.png"
    assert moved.is_file() and "not an image" in Path(str(moved) + ".error.json").read_text()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT archived_path FROM inspections")).scalar() == str(moved)
    engine.dispose()


def test_the_per_line_template_unit_verifies_and_keeps_each_line_apart(tmp_path):
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (.ci/run installs it where apt works)")
    unit = (REPO / "systemd" / "inspectd@.service").read_text()
    (tmp_path / "inspectd@line1.service").write_text(
        unit.replace("/opt/inspectd/.venv/bin/inspectd", str(Path(sys.executable).parent / "inspectd")))
    done = subprocess.run([analyze, "verify", str(tmp_path / "inspectd@line1.service")], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "inspectd@" not in done.stderr, done.stderr
    for per_line in ("INSPECTD_CONFIG=/etc/inspectd/%i.yaml", "StateDirectory=inspectd/%i",
                     "LoadCredential=webhook-secret:/etc/inspectd/%i-webhook-secret"):
        assert per_line in unit
    single = (REPO / "systemd" / "inspectd.service").read_text()
    per_line_keys = ("#", "Description=", "Environment=INSPECTD_CONFIG=", "StateDirectory=", "LogsDirectory=",
                     "LoadCredential=")
    shared = lambda text: [line for line in text.splitlines() if not line.startswith(per_line_keys)]  # noqa: E731
    assert shared(unit) == shared(single), "the template differs from the single-line unit only per line"


def test_readers_open_the_store_read_only_and_see_what_the_running_writer_committed(tmp_path):
    """Engineers in the service's group have read access only: a reader must never need (or use) more."""
    from sqlalchemy import text

    db = tmp_path / "store.db"
    writer = open_engine(f"sqlite:///{db}")
    migrate(writer)
    held = writer.connect()  # the daemon: WAL and shared-memory files open
    held.execute(text("INSERT INTO bundles (sha256, name, base_model, quantization, path, first_seen) "
                      "VALUES ('a', 'n', 'b', 'nf4', 'p', '2026-01-01')"))
    held.commit()
    assert Path(f"{db}-wal").exists()
    reader = open_engine(f"sqlite:///{db}", create=False)
    with reader.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM bundles")).scalar() == 1
        with pytest.raises(Exception, match="readonly"):
            connection.execute(text("DELETE FROM bundles"))
    held.close()
    writer.dispose()
    assert current_revision(reader) == head_revision()


@pytest.mark.parametrize("name, most", [("inspectd.service", 1.6), ("inspectd@.service", 1.6),
                                        ("inspectd-console.service", 1.0)])
def test_units_carry_limits_and_score_their_exposure(name, most):
    """systemd-analyze's exposure score (0 best, 10 worst) was 3.4 for the daemon and 1.8 for the console before
    the limits; each unit caps open files, tasks and memory and allows only local and private addresses."""
    import re
    import shutil

    unit = (REPO / "systemd" / name).read_text()
    for needed in ("LimitNOFILE=", "TasksMax=", "MemoryMax=", "IPAddressDeny=any", "IPAddressAllow=localhost",
                   "ProtectProc=invisible", "UMask=0027"):
        assert needed in unit, f"{name} lacks {needed}"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (.ci/run installs it where apt works)")
    done = subprocess.run([analyze, "security", "--offline=yes", str(REPO / "systemd" / name)],
                          capture_output=True, text=True)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    assert score is not None, done.stdout + done.stderr
    assert float(score.group(1)) <= most, done.stdout


def test_the_migrations_build_the_schema_the_code_declares(store_url):
    """schema.py (what the code reads and writes) and the migrations (what a store is) cannot drift apart."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from inspectd.store.schema import Base

    engine = open_engine(store_url)
    migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []

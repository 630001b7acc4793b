"""Model hot reload: SIGHUP swaps a verified bundle between batches, and keeps the old one on any failure."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes

pytestmark = pytest.mark.slow

SHIPPED = REPO / "models" / "tiny-cgro"


def _point_at(config: Path, bundle: Path, **model) -> None:
    settings = yaml.safe_load(config.read_text())
    settings["model"].update({"bundle": str(bundle), **model})
    config.write_text(yaml.safe_dump(settings))


def _bundle_of_last_row(db: Path) -> tuple[str, str]:
    return db_rows(db, "SELECT b.name, b.sha256 FROM inspections i JOIN bundles b ON b.id = i.bundle_id "
                       "ORDER BY i.id DESC LIMIT 1")[0]


def _drop_and_wait(tmp_path: Path, db: Path, seed: int, rows: int) -> None:
    (tmp_path / "drop-line1" / f"part-{seed}.png").write_bytes(png_bytes(seed))
    wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == rows, 60, f"{rows} rows")


def test_sighup_swaps_to_a_verified_bundle_and_keeps_the_old_one_on_failure(format_bundle, random_bundle, tmp_path):
    from inspectd.bundle.files import manifest_digest

    config = write_config(tmp_path, format_bundle)
    db = tmp_path / "var" / "inspectd.db"
    tampered = tmp_path / "tampered"
    shutil.copytree(SHIPPED, tampered)
    with open(tampered / "config.json", "a", encoding="utf-8") as handle:
        handle.write(" ")
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        _drop_and_wait(tmp_path, db, 90_001, 1)
        assert _bundle_of_last_row(db) == ("tiny-format", manifest_digest(format_bundle))

        _point_at(config, SHIPPED)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "passed the canary" in daemon.output(), 60, "new bundle accepted")
        assert daemon.notify.seen("RELOADING=1")
        _drop_and_wait(tmp_path, db, 90_002, 2)
        assert _bundle_of_last_row(db) == ("tiny-cgro", manifest_digest(SHIPPED)), "rows name the new bundle"

        _point_at(config, tampered)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.output().count("reload: keeping bundle tiny-cgro") == 1, 60, "tampered refused")
        assert "config.json" in daemon.output().split("reload: keeping bundle tiny-cgro")[1].splitlines()[0]

        _point_at(config, random_bundle)  # intact files, but its replies do not parse: the canary refuses it
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.output().count("reload: keeping bundle tiny-cgro") == 2, 60, "canary refused")
        assert "canary grey canary image: the reply does not parse" in daemon.output()

        _point_at(config, SHIPPED, canary_image=str(tmp_path / "missing.png"))
        daemon.proc.send_signal(signal.SIGHUP)  # same bundle; a canary that cannot be read: nothing changes
        wait_for(lambda: "model settings unchanged" in daemon.output(), 60, "unchanged bundle noticed")

        _drop_and_wait(tmp_path, db, 90_003, 3)
        assert _bundle_of_last_row(db) == ("tiny-cgro", manifest_digest(SHIPPED)), "the old model stayed"
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()


def _all_rows_rule(name: str) -> dict:
    """Alert settings with one rule, named ``name``, for every verdict (so each row says which rule judged it)."""
    return {"channels": [{"type": "log", "name": "file", "path": "var/alerts.jsonl"}],
            "rules": [{"name": name, "verdicts": ["anomalous", "normal", "unknown", "failed"], "channels": ["file"],
                       "cooldown_s": 0}]}


def _rewrite(config: Path, threshold: float, rule: str) -> None:
    settings = yaml.safe_load(config.read_text())
    settings["threshold"] = threshold
    settings["alerts"] = _all_rows_rule(rule)
    config.write_text(yaml.safe_dump(settings))


def test_a_sighup_during_a_reload_is_queued_and_the_newest_file_is_applied_whole(tmp_path):
    """Two config files in quick succession: the second request waits for the first reload and then reads the
    file again, so the daemon ends on the second file whole (its threshold and its alert rules), never a mix."""
    config = write_config(tmp_path, SHIPPED, alerts=_all_rows_rule("initial"))  # its replies pass the canary
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        _rewrite(config, 0.0001, "first")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: loading bundle" in daemon.output(), 30, "first reload under way")
        _rewrite(config, 0.9999, "second")  # while the first reload loads its model process
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.output().count("SIGHUP: reloaded") == 2 and "passed the canary" in daemon.output(),
                 120, "both requests answered, a new model in use")
        for seed in range(3):
            (tmp_path / "drop-line1" / f"after-{seed}.png").write_bytes(png_bytes(91_000 + seed))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 3, 60, "3 rows")
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM alerts")[0][0] == 3, 30, "3 alerts")
    finally:
        assert daemon.stop() == 0
    rows = db_rows(db, "SELECT threshold, score, verdict FROM inspections")
    assert all(threshold == 0.9999 for threshold, _, _ in rows), rows
    assert all(verdict == ("anomalous" if score >= 0.9999 else "normal") for _, score, verdict in rows
               if score is not None), rows
    assert {rule for (rule,) in db_rows(db, "SELECT rule FROM alerts")} == {"second"}
    assert "this request is ignored" not in daemon.output()
    assert "Traceback" not in daemon.output()


def test_a_bundle_changed_in_place_is_rehashed_on_sighup_and_refused(tmp_path):
    """Weights replaced under a running bundle keep bundle.json (and so its digest): SIGHUP hashes every file again
    and refuses the reload naming the file, instead of the next restart refusing to start at an unplanned moment."""
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    config = write_config(tmp_path, bundle)
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        _drop_and_wait(tmp_path, db, 91_001, 1)
        with open(bundle / "config.json", "a", encoding="utf-8") as handle:
            handle.write(" ")  # changed in place; bundle.json untouched
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: keeping bundle tiny-cgro" in daemon.output(), 60, "changed bundle refused")
        assert "config.json" in daemon.output().split("reload: keeping bundle tiny-cgro")[1].splitlines()[0]
        _drop_and_wait(tmp_path, db, 91_002, 2)  # the model in memory goes on inspecting
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()

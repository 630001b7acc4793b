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

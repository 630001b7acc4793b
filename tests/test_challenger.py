"""A challenger bundle inspects the champion's parts in the shadow: its own rows, never an alert, a file moved or an
inspection row changed; idle and sampled modes; SIGHUP restarts, stops or refuses it without touching the
champion; a killed challenger process is restarted while the champion goes on."""

from __future__ import annotations

import hashlib
import os
import signal
import shutil
import time
from pathlib import Path

import pytest
import yaml

from inspectd.bundle.files import verify_bundle
from inspectd.config import challenger_settings, load_settings
from inspectd.daemon.challenger import ShadowItem, ShadowQueue, sampled
from inspectd.errors import ConfigError
from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes

CHAMPION = REPO / "models" / "tiny-cgro"
CHALLENGER = REPO / "models" / "magnetic-tile-cgro"


# --- configuration and the pieces, without a daemon ---------------------------------------------------------------

def _config(tmp_path: Path, challenger) -> Path:
    path = tmp_path / "inspectd.yaml"
    path.write_text(yaml.safe_dump({"model": {"bundle": str(CHAMPION), "device": "cpu", "challenger": challenger}}))
    return path


@pytest.mark.parametrize("challenger, key", [
    ({"bundle": str(CHALLENGER), "mode": "busy"}, "model.challenger.mode"),
    ({"bundle": str(CHALLENGER), "sample_fraction": 0}, "model.challenger.sample_fraction"),
    ({"bundle": str(CHALLENGER), "sample_fraction": 1.5}, "model.challenger.sample_fraction"),
    ({"bundle": str(CHALLENGER), "device": "gpu"}, "model.challenger.device"),
    ({"bundle": str(CHALLENGER), "shadow": True}, "model.challenger.shadow: unknown key"),
    ({"mode": "idle"}, "model.challenger.bundle: required key is missing"),
    ({"bundle": "no-such-bundle"}, "model.challenger.bundle: folder"),
])
def test_invalid_challenger_settings_name_the_key(tmp_path, challenger, key):
    with pytest.raises(ConfigError) as raised:
        load_settings(_config(tmp_path, challenger))
    assert key in str(raised.value)


def test_the_challenger_bundle_resolves_beside_the_config_and_takes_the_champions_device(tmp_path):
    shutil.copytree(CHALLENGER, tmp_path / "candidate")
    settings = load_settings(_config(tmp_path, {"bundle": "candidate", "mode": "sampled"}))
    assert settings.model.challenger.bundle == (tmp_path / "candidate").resolve()
    assert settings.model.challenger.sample_fraction == 0.1
    child = challenger_settings(settings)
    assert (child.model.bundle, child.model.device, child.model.challenger) == (settings.model.challenger.bundle,
                                                                               "cpu", None)
    assert challenger_settings(load_settings(_config(tmp_path, None))) is None


def test_sampling_is_by_sha256_and_takes_about_the_fraction():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    assert all(sampled(sha, 1.0) for sha in shas)
    chosen = [sha for sha in shas if sampled(sha, 0.25)]
    assert 0.22 < len(chosen) / len(shas) < 0.28
    assert chosen == [sha for sha in shas if sampled(sha, 0.25)], "the same parts every time"
    assert set(chosen) >= {sha for sha in shas if sampled(sha, 0.1)}, "a smaller share is inside a larger one"


def test_a_full_shadow_queue_drops_its_oldest_entry_and_counts_it():
    shadow = ShadowQueue(capacity=3)
    for i in range(5):
        shadow.put(ShadowItem(i, "0" * 64, f"/drop/{i}.png", None))
    assert shadow.dropped == 2
    assert [item.inspection_id for item in shadow.take(10, 0)] == [2, 3, 4]
    assert shadow.take(1, 0.01) == []


# --- the real daemon ----------------------------------------------------------------------------------------------

def _alerts() -> dict:
    return {"channels": [{"type": "log", "name": "file", "path": "var/alerts.jsonl"}],
            "rules": [{"name": "anomalies", "verdicts": ["anomalous"], "channels": ["file"], "cooldown_s": 0}]}


def _set_challenger(config: Path, challenger: dict | None) -> None:
    settings = yaml.safe_load(config.read_text())
    if challenger is None:
        settings["model"].pop("challenger", None)
    else:
        settings["model"]["challenger"] = challenger
    config.write_text(yaml.safe_dump(settings))


def _payloads(seeds) -> dict[int, bytes]:
    return {seed: png_bytes(seed) for seed in seeds}


def _drop(tmp_path: Path, payloads: dict[int, bytes]) -> None:
    for seed, data in payloads.items():
        (tmp_path / "drop-line1" / f"part-{seed}.png").write_bytes(data)


def _count(db: Path, table: str) -> int:
    return db_rows(db, f"SELECT count(*) FROM {table}")[0][0]


def _archived(db: Path, rows: int) -> bool:
    return db_rows(db, "SELECT count(*) FROM inspections WHERE archived_path IS NOT NULL")[0][0] == rows


def _inspections(db: Path) -> list[tuple]:
    return db_rows(db, "SELECT * FROM inspections ORDER BY id")


def _shadowed(db: Path) -> dict[str, int]:
    """sha256 of each inspected part -> its challenger rows."""
    return dict(db_rows(db, "SELECT i.sha256, count(c.id) FROM inspections i LEFT JOIN challenger_results c "
                            "ON c.inspection_id = i.id GROUP BY i.id"))


def _reload(daemon: DaemonProcess, marker: str, timeout: float = 60) -> None:
    before = daemon.output().count(marker)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.output().count(marker) > before, timeout, f"{marker!r} after SIGHUP")


@pytest.mark.slow
def test_a_challenger_shadows_the_champion_without_alerting_moving_or_changing_rows(tmp_path):
    config = write_config(tmp_path, CHAMPION, alerts=_alerts())
    _set_challenger(config, {"bundle": str(CHALLENGER)})  # idle mode: the default
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        assert "challenger: bundle" in daemon.output() and "in idle mode" in daemon.output()
        # 1. idle mode: every part the champion inspected gets one challenger row
        _drop(tmp_path, _payloads(range(95_000, 95_004)))
        wait_for(lambda: _archived(db, 4), 60, "the champion's 4 rows, archived")
        wait_for(lambda: _count(db, "challenger_results") == 4, 90, "4 challenger rows")
        champion_rows = _inspections(db)
        (champion_id,) = db_rows(db, "SELECT id FROM bundles WHERE name = 'tiny-cgro'")[0]
        (challenger_id,) = db_rows(db, "SELECT id FROM bundles WHERE name = 'magnetic-tile-cgro'")[0]
        assert {row[0] for row in db_rows(db, "SELECT bundle_id FROM inspections")} == {champion_id}
        rows = db_rows(db, "SELECT inspection_id, bundle_id, verdict, threshold, map_png IS NOT NULL, error "
                           "FROM challenger_results ORDER BY inspection_id")
        assert [r[0] for r in rows] == [r[0] for r in champion_rows]
        assert all(r[1] == challenger_id and r[2] in ("normal", "anomalous") and r[5] is None for r in rows), rows
        assert all(r[4] for r in rows), "maps saved (store.save_maps) as for the champion"
        assert rows[0][3] == pytest.approx(verify_bundle(CHALLENGER).threshold), \
            "the challenger's own calibrated threshold, not the champion's"
        assert "challenger ready: bundle magnetic-tile-cgro" in daemon.output()

        # 2. the challenger's process killed: the champion goes on, the challenger is restarted
        pid = int(daemon.output().split("shadowing the champion (pid ")[1].split(",")[0])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "restarting its model process" in daemon.output(), 30, "the death noticed")
        _drop(tmp_path, _payloads([95_010]))
        wait_for(lambda: _archived(db, 5), 60, "the champion goes on")
        wait_for(lambda: _count(db, "challenger_results") == 5, 90, "the restarted challenger's row")

        # 3. sampled mode, fraction 1.0 (same bundle: no new process), then a small fraction
        _set_challenger(config, {"bundle": str(CHALLENGER), "mode": "sampled", "sample_fraction": 1.0})
        _reload(daemon, "now in sampled mode (1 of the parts)")
        _drop(tmp_path, _payloads(range(95_020, 95_022)))
        wait_for(lambda: _count(db, "challenger_results") == 7, 90, "every part sampled")
        _set_challenger(config, {"bundle": str(CHALLENGER), "mode": "sampled", "sample_fraction": 0.3})
        _reload(daemon, "now in sampled mode (0.3 of the parts)")
        candidates = _payloads(range(95_100, 95_140))
        inside = [s for s, d in candidates.items() if sampled(hashlib.sha256(d).hexdigest(), 0.3)][:2]
        outside = [s for s, d in candidates.items() if not sampled(hashlib.sha256(d).hexdigest(), 0.3)][:3]
        assert len(inside) == 2 and len(outside) == 3
        _drop(tmp_path, {seed: candidates[seed] for seed in outside + inside})
        wait_for(lambda: _archived(db, 12), 60, "the champion inspects all 5")
        wait_for(lambda: _count(db, "challenger_results") == 9, 90, "the 2 sampled parts")
        time.sleep(1.0)
        shadowed = _shadowed(db)
        assert [shadowed[hashlib.sha256(candidates[s]).hexdigest()] for s in inside + outside] == [1, 1, 0, 0, 0]

        # 4. SIGHUP removing model.challenger: its process stops, no new challenger rows
        _set_challenger(config, None)
        _reload(daemon, "challenger stopped: model.challenger removed")
        assert "closed: model.challenger removed" in daemon.output()
        _drop(tmp_path, _payloads([95_200]))
        wait_for(lambda: _archived(db, 13), 60, "the champion alone")

        # 5. a tampered challenger: refused with the reason, the champion's reload stands
        tampered = tmp_path / "tampered"
        shutil.copytree(CHALLENGER, tampered)
        with open(tampered / "config.json", "a", encoding="utf-8") as handle:
            handle.write(" ")
        _set_challenger(config, {"bundle": str(tampered)})
        _reload(daemon, "challenger disabled: bundle")
        assert "config.json" in daemon.output().split("challenger disabled: bundle")[-1].splitlines()[0]
        _drop(tmp_path, _payloads([95_201]))
        wait_for(lambda: _archived(db, 14), 60, "the champion goes on")
        time.sleep(1.0)
        assert _count(db, "challenger_results") == 9
    finally:
        assert daemon.stop() == 0
    output = daemon.output()
    assert "Traceback" not in output
    assert _inspections(db)[:4] == champion_rows, "the challenger never changed an inspection row"
    assert not any((tmp_path / "drop-line1").iterdir()), "the champion emptied the drop folder"
    anomalies = _count(db, "inspections WHERE verdict = 'anomalous'")
    assert _count(db, "alerts") == anomalies, "alerts from the champion's verdicts only"
    assert len((tmp_path / "var" / "alerts.jsonl").read_text().splitlines()) == anomalies

"""Promotion and rollback of the champion/challenger pair: the rule on reviewed parts, the pair a daemon runs
(config file against recorded changes), and the real daemon applying both through its reload path."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from inspectd.bundle.files import manifest_digest
from inspectd.config import load_settings
from inspectd.promotion.selection import ModelPair, select_pair, with_pair
from inspectd.store.model_changes import ModelChange
from inspectd.store.reviews import add_review, review_engine
from tests.conftest import REPO
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes

CHAMPION = REPO / "models" / "tiny-cgro"
CHALLENGER = REPO / "models" / "magnetic-tile-cgro"


# --- which pair runs ----------------------------------------------------------------------------------------------

def _settings(tmp_path: Path):
    config = write_config(tmp_path, CHAMPION)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["challenger"] = {"bundle": str(CHALLENGER), "mode": "sampled", "sample_fraction": 0.5}
    config.write_text(yaml.safe_dump(raw))
    return load_settings(config)


def _change(settings, id_: int, status: str, champion: Path, challenger: Path | None, **over) -> ModelChange:
    digests = {CHAMPION.resolve(): manifest_digest(CHAMPION), CHALLENGER.resolve(): manifest_digest(CHALLENGER)}
    values = dict(
        id=id_, created_at=datetime(2026, 12, 5, 12, id_), action="promote", actor="ann", status=status,
        config_path=str(Path(settings.source).resolve()), config_champion=str(CHAMPION.resolve()),
        config_challenger=str(CHALLENGER.resolve()), champion_path=str(champion), champion_digest=digests[champion],
        challenger_path=str(challenger), challenger_digest=digests.get(challenger),
        previous_champion_path=str(CHAMPION.resolve()), previous_champion_digest=digests[CHAMPION.resolve()],
        previous_challenger_path=str(CHALLENGER.resolve()), previous_challenger_digest=digests[CHALLENGER.resolve()],
        forced=False, reason=None, comparison=None, detail=None, decided_at=None)
    return ModelChange(**{**values, **over})


def test_the_newest_applied_change_against_this_config_and_pair_selects_it(tmp_path):
    settings = _settings(tmp_path)
    own = ModelPair(CHAMPION.resolve(), CHALLENGER.resolve())
    swapped = ModelPair(CHALLENGER.resolve(), CHAMPION.resolve())
    assert select_pair(settings, [], include_requested=False).pair == own
    applied = _change(settings, 1, "applied", swapped.champion, swapped.challenger)
    chosen = select_pair(settings, [applied], include_requested=False)
    assert chosen.pair == swapped and chosen.change == applied
    running = with_pair(settings, chosen.pair)
    assert running.model.bundle == CHALLENGER.resolve() and running.model.challenger.bundle == CHAMPION.resolve()
    assert running.model.challenger.mode == "sampled" and running.model.challenger.sample_fraction == 0.5
    # a failed change is never run; a requested one only by the daemon's reload, which refuses older requests
    failed = _change(settings, 2, "failed", own.champion, own.challenger)
    assert select_pair(settings, [failed, applied], include_requested=False).pair == swapped
    older = _change(settings, 3, "requested", own.champion, own.challenger)
    newer = _change(settings, 4, "requested", swapped.champion, swapped.challenger)
    assert select_pair(settings, [newer, older, applied], include_requested=False).pair == swapped
    reload = select_pair(settings, [newer, older, applied], include_requested=True)
    assert reload.pending == newer and reload.refused == [(older, "superseded by change 4")]


def test_an_edited_config_wins_over_changes_recorded_against_its_old_pair(tmp_path):
    settings = _settings(tmp_path)
    other = tmp_path / "other-bundle"
    applied = _change(settings, 1, "applied", CHALLENGER.resolve(), CHAMPION.resolve(),
                      config_champion=str(other))
    assert select_pair(settings, [applied], include_requested=False).pair.champion == CHAMPION.resolve()
    asked = _change(settings, 2, "requested", CHALLENGER.resolve(), CHAMPION.resolve(), config_champion=str(other))
    reload = select_pair(settings, [asked], include_requested=True)
    assert reload.pending is None and "the file wins" in reload.refused[0][1]


def test_a_bundle_republished_since_its_promotion_is_not_run_under_it(tmp_path):
    settings = _settings(tmp_path)
    applied = _change(settings, 1, "applied", CHALLENGER.resolve(), CHAMPION.resolve(), champion_digest="0" * 64)
    chosen = select_pair(settings, [applied], include_requested=False)
    assert chosen.pair.champion == CHAMPION.resolve() and chosen.change is None
    assert "re-published since" in chosen.problems[0] and "change 1" in chosen.problems[0]


# --- the real daemon --------------------------------------------------------------------------------------------

def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(config), "models", *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def _set(config: Path, **model) -> None:
    raw = yaml.safe_load(config.read_text())
    raw["model"].update(model)
    config.write_text(yaml.safe_dump(raw))


def _drop(tmp_path: Path, seeds) -> None:
    for seed in seeds:
        (tmp_path / "drop-line1" / f"part-{seed}.png").write_bytes(png_bytes(seed))


def _count(db: Path, sql: str) -> int:
    return db_rows(db, f"SELECT count(*) FROM {sql}")[0][0]


def _newest_bundle(db: Path) -> str:
    return db_rows(db, "SELECT b.name FROM inspections i JOIN bundles b ON b.id = i.bundle_id "
                       "ORDER BY i.id DESC LIMIT 1")[0][0]


@pytest.mark.slow
def test_promote_and_rollback_through_the_daemons_reload_path(tmp_path):
    alerts = {"channels": [{"type": "log", "name": "file", "path": "var/alerts.jsonl"}],
              "rules": [{"name": "anomalies", "verdicts": ["anomalous"], "channels": ["file"], "cooldown_s": 0}]}
    config = write_config(tmp_path, CHAMPION, alerts=alerts)
    _set(config, challenger={"bundle": str(CHALLENGER)}, promotion={"min_reviewed": 100, "margin": 0.0})
    db = tmp_path / "var" / "inspectd.db"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        _drop(tmp_path, range(96_000, 96_006))
        wait_for(lambda: _count(db, "challenger_results") == 6, 120, "6 parts inspected by both models")
        rows = db_rows(db, "SELECT i.id, i.verdict, c.verdict FROM inspections i JOIN challenger_results c "
                           "ON c.inspection_id = i.id ORDER BY i.id")
        # the reviews make the challenger right on every part and the champion wrong where they disagree, with
        # one defect and one good part at least (the first two parts are labelled so)
        labels = {part: "defect" if challenger == "anomalous" else "good" for part, _, challenger in rows}
        labels[rows[0][0]], labels[rows[1][0]] = "defect", "good"
        writer = review_engine(f"sqlite:///{db}")
        for part, label in labels.items():
            add_review(writer, part, label, None, "ann")
        writer.dispose()
        truth = [(labels[p], champion, challenger) for p, champion, challenger in rows]
        defects = [t for t in truth if t[0] == "defect"]
        goods = [t for t in truth if t[0] == "good"]
        champion_miss = sum(t[1] == "normal" for t in defects) / len(defects)
        challenger_miss = sum(t[2] == "normal" for t in defects) / len(defects)
        challenger_alarms = sum(t[2] == "anomalous" for t in goods) / len(goods)

        # 1. refused: 6 reviewed parts, fewer than min_reviewed; nothing recorded
        refused = _cli(config, "promote", "--actor", "ann")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "6 reviewed part(s) decided by both models, fewer than model.promotion.min_reviewed (100)" in \
            refused.stderr
        assert _count(db, "model_changes") == 0

        # 2. promoted under a rule it passes: recorded, applied by the daemon (canary), the old champion shadows
        _set(config, promotion={"min_reviewed": 6, "margin": 1.0})
        done = _cli(config, "promote", "--actor", "ann", "--reason", "better on reviewed parts", "--wait", "180")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "applied: the daemon inspects with" in done.stdout and str(CHALLENGER.resolve()) in done.stdout
        change = db_rows(db, "SELECT action, actor, status, champion_path, champion_digest, challenger_path, "
                             "previous_champion_path, forced, reason, comparison FROM model_changes")[0]
        assert change[:4] == ("promote", "ann", "applied", str(CHALLENGER.resolve()))
        assert change[4] == manifest_digest(CHALLENGER) and change[5] == str(CHAMPION.resolve())
        assert change[6] == str(CHAMPION.resolve()) and change[7] == 0 and change[8] == "better on reviewed parts"
        figures = json.loads(change[9])
        assert figures["reviewed_decided"] == 6 and figures["rule"] == {"margin": 1.0, "min_reviewed": 6}
        assert figures["miss_rate"]["champion"]["value"] == pytest.approx(champion_miss)
        assert figures["miss_rate"]["challenger"]["value"] == pytest.approx(challenger_miss)
        assert figures["false_alarm_rate"]["challenger"]["value"] == pytest.approx(challenger_alarms)
        assert "passed the canary" in daemon.output()
        _drop(tmp_path, range(96_010, 96_012))
        wait_for(lambda: _count(db, "challenger_results") == 8, 120, "new parts: the new pair, both results")
        assert _newest_bundle(db) == "magnetic-tile-cgro"
        newest = db_rows(db, "SELECT b.name FROM challenger_results c JOIN bundles b ON b.id = c.bundle_id "
                             "ORDER BY c.id DESC LIMIT 2")
        assert newest == [("tiny-cgro",), ("tiny-cgro",)], "the old champion goes on in the shadow"

        # 3. a second request while none waits, then a rollback: the old pair comes back the same way
        back = _cli(config, "rollback", "--actor", "bob", "--wait", "180")
        assert back.returncode == 0, back.stdout + back.stderr
        _drop(tmp_path, [96_020])
        wait_for(lambda: _count(db, "inspections") == 9, 120, "a part after the rollback")
        assert _newest_bundle(db) == "tiny-cgro"
        listed = _cli(config, "changes")
        assert listed.returncode == 0 and "change 2: rollback by bob" in listed.stdout
        assert "change 1: promote by ann" in listed.stdout and listed.stdout.count(": applied at") == 2

        # 4. nothing left to roll back to but the promotion: a second rollback re-applies it; a promotion
        # forced past the rule is recorded as forced
        _set(config, promotion={"min_reviewed": 100, "margin": 0.0})
        forced = _cli(config, "promote", "--actor", "ann", "--force", "--wait", "180")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "FORCED past the promotion rule" in forced.stdout
        assert db_rows(db, "SELECT forced, status FROM model_changes WHERE id = 3") == [(1, "applied")]
    finally:
        code = daemon.stop()
        assert code == 0, daemon.output()[-4000:]

    # 5. a restart runs the pair of the newest applied change, not the config file's
    again = DaemonProcess(config)
    try:
        again.wait_ready()
        assert "promotions: change 3 (promote by ann" in again.output()
        _drop(tmp_path, [96_030])
        wait_for(lambda: _count(db, "inspections") == 10, 120, "a part after the restart")
        assert _newest_bundle(db) == "magnetic-tile-cgro"
    finally:
        code = again.stop()
        assert code == 0, again.output()[-4000:]
    output = daemon.output() + again.output()
    assert "Traceback" not in output
    alerts_sent = len((tmp_path / "var" / "alerts.jsonl").read_text().splitlines()) \
        if (tmp_path / "var" / "alerts.jsonl").exists() else 0
    assert alerts_sent == _count(db, "inspections WHERE verdict = 'anomalous'"), "alerts from champions only"

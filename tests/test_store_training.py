"""The loop closes: reviews in the store -> a labelled folder -> inspectd-train on it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inspectd.store.database import open_engine
from inspectd.store.reviews import add_review
from tests.console_harness import filled_store
from tests.daemon_harness import db_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env=ENV)


@pytest.fixture(scope="module")
def reviewed_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("reviewed")
    config = filled_store(root, REPO / "models" / "tiny-cgro", seeds=(0, 1, 2, 3, 4, 5))
    engine = open_engine(f"sqlite:///{root / 'var' / 'inspectd.db'}")
    ids = [i for (i,) in db_rows(root / "var" / "inspectd.db", "SELECT id FROM inspections ORDER BY id")]
    for inspection_id, label in zip(ids, ("defect", "defect", "good", "good", "good")):
        add_review(engine, inspection_id, label, None, "ann")
    add_review(engine, ids[4], "defect", "second look: a crack", "bob")  # the newest review is the label
    engine.dispose()
    return config, ids


def test_reviewed_rows_export_as_a_labelled_folder(reviewed_store, tmp_path):
    config, ids = reviewed_store
    out = tmp_path / "line-reviewed"
    done = _cli("inspectd.cli", "--config", str(config), "export-reviewed", str(out))
    assert done.returncode == 0, done.stderr
    assert "2 good, 3 defect" in done.stdout  # the unreviewed row is left out
    assert len(list((out / "good").iterdir())) == 2 and len(list((out / "defect").iterdir())) == 3
    with (out / "reviews.csv").open() as table:
        rows = {int(r["inspection_id"]): r for r in csv.DictReader(table)}
    assert set(rows) == set(ids[:5]) and rows[ids[4]]["label"] == "defect" and rows[ids[4]]["reviewer"] == "bob"
    assert (out / rows[ids[0]]["file"]).read_bytes() == Path(
        db_rows(config.parent / "var" / "inspectd.db", "SELECT archived_path FROM inspections WHERE id = ?",
                (ids[0],))[0][0]).read_bytes()
    again = _cli("inspectd.cli", "--config", str(config), "export-reviewed", str(out))
    assert again.returncode == 2 and "--replace" in again.stderr


def test_inspectd_train_takes_its_labels_from_the_reviews(reviewed_store, format_bundle, tmp_path):
    """The recipe's reviewed_store data: the reviews (newest = label) exported once, warm-up and CGRO on them."""
    config, _ = reviewed_store
    recipe = {
        "name": "reviewed", "output": str(tmp_path / "bundle"), "work_dir": str(tmp_path / "work"),
        "init": str(format_bundle),
        "data": {"kind": "reviewed_store", "config": str(config), "image_size": 56, "validation_fraction": 0.2},
        "warmup": {"steps": 1, "batch_size": 2, "warmup_steps": 0},
        "cgro": {"max_steps": 1, "batch_size": 2, "generations": 2, "max_completion_length": 64, "save_steps": 1,
                 "gradient_checkpointing": False},
        "max_new_tokens": 64, "real": {"layer_start": 0},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    done = _cli("inspectd.training.cli", "recipe", "--config", str(tmp_path / "recipe.yaml"), "--stop-after", "cgro")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data: 2 good and 3 defective reviewed inspections exported" in done.stderr
    history = json.loads((tmp_path / "work" / "cgro" / "stage.json").read_text())["log_history"]
    assert any("rewards/accuracy_reward/mean" in h for h in history)
    assert (tmp_path / "work" / "warmup" / "model" / "model.safetensors").is_file()

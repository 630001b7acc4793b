"""The training stages' old names (``sft``, ``grpo``) keep a plant's configs and half-finished runs working."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from inspectd.errors import InspectdError
from inspectd.training.recipe import load_recipe

RECIPE = {"name": "line", "output": "out", "work_dir": "work", "data": {"image_size": 56, "cgro_images": 8},
          "warmup": {"steps": 7, "batch_size": 2}, "cgro": {"max_steps": 3, "generations": 2}}


def _write(path, content: dict):
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def test_a_recipe_with_the_old_section_names_reads_as_the_new_with_a_warning(tmp_path, caplog):
    new = load_recipe(_write(tmp_path / "new.yaml", RECIPE))
    old = {**{k: v for k, v in RECIPE.items() if k not in ("warmup", "cgro", "data")},
           "sft": RECIPE["warmup"], "grpo": RECIPE["cgro"], "data": {"image_size": 56, "grpo_images": 8}}
    with caplog.at_level("WARNING", logger="inspectd.train"):
        assert load_recipe(_write(tmp_path / "old.yaml", old)) == new
    assert "`sft` is the old name of `warmup`" in caplog.text
    assert "`grpo` is the old name of `cgro`" in caplog.text
    assert "`data.grpo_images` is the old name of `data.cgro_images`" in caplog.text


def test_both_names_of_one_section_are_refused_naming_the_two(tmp_path):
    path = _write(tmp_path / "both.yaml", {**RECIPE, "sft": {"steps": 9}})
    with pytest.raises(InspectdError, match=r"both `sft` and `warmup` are given"):
        load_recipe(path)
    train = {"base": "model", "output_dir": "run", "cgro": {"max_steps": 1}, "grpo": {"max_steps": 2}}
    with pytest.raises(InspectdError, match=r"(?s)train.yaml.*both `grpo` and `cgro`"):
        load_recipe(_write(tmp_path / "train.yaml", train))


def test_an_old_training_config_with_the_old_names_is_answered_with_its_recipe_in_the_new(tmp_path):
    """The old door's YAML is refused; the recipe in the message spells the sections by their new names."""
    path = _write(tmp_path / "train.yaml", {"base": "model", "output_dir": "run", "sft": {"steps": 5},
                                            "grpo": {"max_steps": 6}})
    with pytest.raises(InspectdError, match=r"the old `inspectd-train warmup\|cgro`") as refused:
        load_recipe(path)
    recipe = yaml.safe_load(str(refused.value).split("The recipe: ", 1)[1])
    assert (recipe["warmup"]["steps"], recipe["cgro"]["max_steps"]) == (5, 6) and "sft" not in recipe
    assert load_recipe(_write(tmp_path / "recipe.yaml", recipe)).warmup.steps == 5


def test_a_recipe_run_started_under_the_old_stage_names_goes_on(tmp_path):
    """Its finished ``sft`` folder becomes ``warmup`` and counts as done; ``--stop-after sft`` is still taken."""
    path = _write(tmp_path / "line.yaml", RECIPE)
    record = {"seconds": 12.5, "parameters": 1, "losses": [1.0], "settings": {}}
    (tmp_path / "work" / "sft" / "model").mkdir(parents=True)
    (tmp_path / "work" / "sft" / "stage.json").write_text(json.dumps(record), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "inspectd.training.cli", "recipe", "--config", str(path),
                           "--stop-after", "sft"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "stage `sft` is now called `warmup`" in done.stderr
    assert "warmup: done earlier" in done.stderr
    assert json.loads((tmp_path / "work" / "warmup" / "stage.json").read_text()) == record
    assert not (tmp_path / "work" / "sft").exists() and not (tmp_path / "work" / "cgro").exists()

"""CGRO: rewards on constructed maps, the same capture as inference, and real GRPO steps."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from inspectd.bundle.load import load_bundle
from inspectd.bundle.manifest import PromptSpec
from inspectd.data.synthetic import make_sample
from inspectd.model.runtime import InspectionModel
from inspectd.metrics.ranking import exact_auroc_ap
from inspectd.real.localize import TokenEvidence, localize
from inspectd.real.params import RealParams
from inspectd.training.cgro_config import ConsistencySettings
from inspectd.training.rewards import (
    ConsistencyReward,
    LocalizationReward,
    ReplyAttention,
    accuracy_reward,
    consistency_reward_value,
    format_reward,
    spatial_consensus,
)

pytest.importorskip("trl", reason="trl is in the train and test extras")


def _blob(y, x, grid=15):
    m = np.full((grid, grid), 0.001)
    m[y - 1 : y + 2, x - 1 : x + 2] = 1.0
    return m / m.sum()


def test_consensus_rewards_agreement_on_anomalous_and_none_on_normal():
    settings = ConsistencySettings()
    params = RealParams(use_entropy_filter=False, use_relevance_filter=False)
    agreeing = TokenEvidence(np.stack([_blob(5, 5)] * 4), np.ones(4))
    scattered = TokenEvidence(np.stack([_blob(2, 2), _blob(12, 12), _blob(2, 12), _blob(12, 2)]), np.ones(4))
    high = spatial_consensus(agreeing, params, settings)
    low = spatial_consensus(scattered, params, settings)
    assert high >= 0.3 and low <= 0.1
    assert consistency_reward_value(high, True, settings) == 1.0
    assert consistency_reward_value(high, False, settings) == 0.0
    assert consistency_reward_value(low, False, settings) == 1.0
    assert consistency_reward_value(low, True, settings) == 0.0


def test_top_k_follows_the_real_weights():
    params = RealParams(use_entropy_filter=False, use_relevance_filter=False, alpha=1.0, beta=0.0)
    maps = np.stack([_blob(5, 5), _blob(5, 5), _blob(5, 5), _blob(12, 12), _blob(2, 12)])
    relevant_agree = TokenEvidence(maps, np.array([1.0, 0.9, 0.8, 0.0, 0.0]))
    relevant_disagree = TokenEvidence(maps, np.array([1.0, 0.0, 0.0, 0.9, 0.8]))
    settings = ConsistencySettings(k=3)
    assert spatial_consensus(relevant_agree, params, settings) > spatial_consensus(relevant_disagree, params, settings)


def test_top_k_fills_by_weight_never_by_position_when_fewer_than_k_are_kept():
    # Relevance filter only: t1, t2 pass (>= median); t0 (weight 0, elsewhere) and t3 (agreeing) do not.
    params = RealParams(use_entropy_filter=False, alpha=1.0, beta=0.0)
    maps = np.stack([_blob(12, 12), _blob(5, 5), _blob(5, 5), _blob(5, 5)])
    evidence = TokenEvidence(maps, np.array([0.0, 1.0, 0.9, 0.45]))
    # The third token is t3 (weight 0.45), not t0 (the lowest index, weight 0): the three agree.
    assert spatial_consensus(evidence, params, ConsistencySettings(k=3)) >= 0.3


def test_format_and_accuracy_rewards():
    good_yes = [{"role": "assistant", "content": "<think>a spot</think><answer>yes</answer>"}]
    broken = [{"role": "assistant", "content": "a spot, yes"}]
    assert format_reward([good_yes, broken]) == [1.0, 0.0]
    assert accuracy_reward([good_yes, good_yes, broken], label=[True, False, True]) == [1.0, 0.0, 0.0]


def test_teacher_forced_attention_equals_the_inference_capture(format_bundle):
    bundle = load_bundle(format_bundle, "cpu")
    images = [make_sample(90_000, 112).image, make_sample(90_001, 96).image]
    replies, _ = InspectionModel(bundle, bundle.manifest.real).run(images)
    assert all(r.evidence is not None for r in replies)
    attention = ReplyAttention(bundle.model, bundle.processor, PromptSpec(), bundle.manifest.real)
    forced = attention.evidence(images, [r.text for r in replies])
    for reply, evidence in zip(replies, forced):
        np.testing.assert_allclose(evidence.maps, reply.evidence.maps, atol=1e-5)
        np.testing.assert_allclose(evidence.relevance, reply.evidence.relevance, atol=1e-5)


def test_localization_reward_is_the_pixel_auroc_of_reals_map_on_the_drawn_mask(format_bundle):
    bundle = load_bundle(format_bundle, "cpu")
    sample = make_sample(90_010, 112, anomalous=True)
    replies, _ = InspectionModel(bundle, bundle.manifest.real).run([sample.image])
    expected = exact_auroc_ap(sample.mask.ravel(), localize(replies[0].evidence, bundle.manifest.real,
                                                           sample.image.size).anomaly_map.ravel())[0]
    reward = LocalizationReward(ReplyAttention(bundle.model, bundle.processor, PromptSpec(), bundle.manifest.real),
                                [sample.mask, ~sample.mask])
    completion = [{"role": "assistant", "content": replies[0].text}]
    unparsable = [{"role": "assistant", "content": "a spot somewhere"}]
    values = reward([completion] * 3 + [unparsable], image=[sample.image] * 4, mask_id=[0, 1, -1, 0])
    assert values[0] == pytest.approx(expected, abs=1e-4), "the daemon's map, scored against the drawn mask"
    assert values[0] + values[1] == pytest.approx(1.0), "the inverted mask gets the inverted ranking"
    assert values[2] is None, "a photo with image-level labels only is not scored"
    assert values[3] == 0.0, "no reasoning, nothing found"

    consistency = ConsistencyReward(reward.attention, ConsistencySettings())
    shared = LocalizationReward(reward.attention, reward.masks, consistency)
    batch = {"completions": [completion] * 3 + [unparsable], "image": [sample.image] * 4}
    consistency(**batch, label=[True] * 4)
    passes = []
    hook = bundle.model.register_forward_hook(lambda *_: passes.append(1))
    try:
        assert shared(**batch, mask_id=[0, 1, -1, 0]) == values, "the consistency reward's pass, same values"
    finally:
        hook.remove()
    assert passes == [], "no second teacher-forced pass in the same step"


def test_a_cgro_step_with_drawn_defects_logs_the_localization_reward(format_bundle, tmp_path):
    from inspectd.training.cgro import build_trainer, cgro_rows
    from inspectd.training.cgro_config import CgroSettings

    bundle = load_bundle(format_bundle, "cpu")
    drawn = [(s.image, s.mask) for s in (make_sample(97_000 + i, 96, anomalous=True) for i in range(4))]
    rows = cgro_rows([(make_sample(97_100 + i, 96).image, False) for i in range(4)], PromptSpec(), drawn)
    assert [row["mask_id"] for row in rows] == [-1] * 4 + [0, 1, 2, 3] and all(row["label"] for row in rows[4:])
    settings = CgroSettings(max_steps=1, batch_size=4, generations=2, max_completion_length=40, save_steps=1000,
                            gradient_checkpointing=False)
    trainer, _ = build_trainer(bundle.model, bundle.processor, rows, settings, PromptSpec(), bundle.manifest.real,
                               tmp_path / "run", masks=[mask for _, mask in drawn])
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/localization_reward/mean" in h]
    assert len(logged) == 1


def test_two_cgro_steps_change_the_lora_weights_with_logged_rewards(format_bundle, tmp_path):
    from inspectd.training.cgro import build_trainer, cgro_rows
    from inspectd.training.cgro_config import CgroSettings

    bundle = load_bundle(format_bundle, "cpu")
    samples = [make_sample(95_000 + i, 96) for i in range(8)]
    rows = cgro_rows([(s.image, s.anomalous) for s in samples], PromptSpec())
    settings = CgroSettings(max_steps=2, batch_size=4, generations=2, max_completion_length=40,
                            learning_rate=1e-3, save_steps=1000)
    trainer, consistency = build_trainer(bundle.model, bundle.processor, rows, settings, PromptSpec(),
                                         bundle.manifest.real, tmp_path / "run")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    visual_before = next(trainer.model.get_base_model().model.visual.parameters()).detach().clone()
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert before and all((after[n] - before[n]).abs().max() > 0 for n in before), "LoRA weights moved"
    assert torch.equal(next(trainer.model.get_base_model().model.visual.parameters()), visual_before)
    logged = [h for h in trainer.state.log_history if "rewards/consistency_reward/mean" in h]
    assert len(logged) == 2
    for entry in logged:
        assert {"rewards/format_reward/mean", "rewards/accuracy_reward/mean"} <= set(entry)
    assert any(value is not None for value in consistency.last_consensus), "rewards came from captured attention"
    assert len(consistency.last_consensus) == 4 * 2, "a step samples `generations` replies for each of `batch_size` prompts"


def test_gradient_accumulation_splits_one_generation_batch_into_micro_batches(format_bundle, tmp_path):
    from inspectd.training.cgro import build_trainer, cgro_rows
    from inspectd.training.cgro_config import CgroSettings

    with pytest.raises(ValueError, match="must divide batch_size x generations"):
        CgroSettings(batch_size=3, generations=2, gradient_accumulation_steps=4)
    bundle = load_bundle(format_bundle, "cpu")
    rows = cgro_rows([(make_sample(96_000 + i, 96).image, i % 2 == 0) for i in range(8)], PromptSpec())
    settings = CgroSettings(max_steps=1, batch_size=4, generations=2, max_completion_length=24, save_steps=1000,
                            gradient_accumulation_steps=2, gradient_checkpointing=False)
    trainer, consistency = build_trainer(bundle.model, bundle.processor, rows, settings, PromptSpec(),
                                         bundle.manifest.real, tmp_path / "run")
    assert (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps) == (4, 2)
    trainer.train()
    assert len(consistency.last_consensus) == 4 * 2, "still batch_size x generations replies per step"


def test_the_old_train_commands_are_the_recipe_stopped_after_their_stage(format_bundle, tmp_path):
    """``inspectd-train warmup|cgro`` run the recipe up to that stage, warning with the recipe command; the old
    training YAML (base, output_dir) is refused with the recipe that does its run, which then reads."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    from inspectd.training.recipe import load_recipe
    from tests.conftest import REPO

    recipe = {
        "name": "line", "output": "out", "work_dir": "work", "init": str(format_bundle),
        "data": {"kind": "synthetic", "image_size": 96, "cgro_images": 8},
        "warmup": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
        "cgro": {"max_steps": 2, "batch_size": 4, "generations": 2, "max_completion_length": 40, "save_steps": 1,
                 "gradient_checkpointing": False},
        "max_new_tokens": 40, "real": {"layer_start": 0},
    }
    (tmp_path / "line.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "inspectd.training.cli", *args], capture_output=True, text=True,
                              timeout=600, cwd=REPO, env=env)

    done = run("warmup", "--config", str(tmp_path / "line.yaml"))
    assert done.returncode == 0, done.stderr
    assert (f"`inspectd-train warmup` is deprecated: it runs the recipe up to its warmup stage, as `inspectd-train "
            f"recipe --config {tmp_path / 'line.yaml'} --stop-after warmup` does") in done.stderr
    assert (tmp_path / "work" / "warmup" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "work" / "cgro").exists()
    done = run("grpo", "--config", str(tmp_path / "line.yaml"), "--resume")
    assert done.returncode == 0, done.stderr
    assert "stage `grpo` is now called `cgro`" in done.stderr and "warmup: done earlier" in done.stderr
    history = json.loads((tmp_path / "work" / "cgro" / "stage.json").read_text())["log_history"]
    assert any("rewards/consistency_reward/mean" in h for h in history)
    assert not (tmp_path / "work" / "export").exists()

    old = {"base": str(format_bundle), "output_dir": "run", "seed": 3,
           "data": {"kind": "labelled", "path": "line", "image_size": 112},
           "cgro": {"max_steps": 2, "use_cpu": False}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(old))
    done = run("cgro", "--config", str(tmp_path / "train.yaml"))
    assert done.returncode == 2
    assert "a training config of the old `inspectd-train warmup|cgro`" in done.stderr
    assert "run `inspectd-train recipe --config NEW.yaml`" in done.stderr and "warmup.steps: 0" in done.stderr
    suggested = yaml.safe_load(done.stderr[done.stderr.index("The recipe: ") + len("The recipe: "):])
    assert suggested["init"] == str(format_bundle) and suggested["work_dir"] == "run"
    assert suggested["data"] == {"kind": "labelled_folder", "path": "line", "image_size": 112}
    assert (suggested["warmup"], suggested["device"]) == ({"steps": 0, "seed": 3}, "cuda:0")
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(suggested))
    converted = load_recipe(tmp_path / "new.yaml")
    assert converted.cgro.max_steps == 2 and not converted.warms_up and converted.data.path == tmp_path / "line"


def test_the_recipe_reward_summary_leaves_out_steps_a_reward_did_not_score():
    from inspectd.training.train_stages import reward_summary as _reward_summary

    history = [{"reward": 1.0, "rewards/localization_reward/mean": None, "rewards/accuracy_reward/mean": 0.5},
               {"reward": 2.0, "rewards/localization_reward/mean": 0.8, "rewards/accuracy_reward/mean": 1.0},
               {"reward": 3.0, "rewards/localization_reward/mean": float("nan"), "rewards/accuracy_reward/mean": 0.0},
               {"reward": 4.0, "rewards/localization_reward/mean": 0.6, "rewards/accuracy_reward/mean": 1.0}]
    summary = _reward_summary(history)
    assert summary["reward"] == [1.0, 4.0]
    assert summary["rewards/localization_reward/mean"][1] == 0.6
    assert summary["rewards/localization_reward/mean"][0] != summary["rewards/localization_reward/mean"][0], "nan"
    assert summary["rewards/accuracy_reward/mean"] == [0.5, 1.0]

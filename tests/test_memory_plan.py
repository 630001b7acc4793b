"""CGRO's memory plan: the real 7B config's table, the three GPU recipes fit their cards, and the plan's phase
totals within 15 % of the peaks measured on the scaled-down real-format checkpoint (CPU, tensor bytes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests import real_format
from inspectd.errors import InspectdError
from inspectd.training.cgro_config import CgroSettings

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "models" / "recipes"
needs_real = pytest.mark.skipif(not real_format.available(), reason="needs shared/qwen2.5-vl-7b-instruct beside the repo")
GIB = 1024**3


@pytest.fixture(scope="module")
def scaled_checkpoint(tmp_path_factory):
    if not real_format.available():
        pytest.skip("needs shared/qwen2.5-vl-7b-instruct beside the repo")
    return real_format.build_checkpoint(tmp_path_factory.mktemp("scaled") / "checkpoint")


def test_the_tracker_counts_live_tensor_bytes():
    from inspectd.training.memory_trace import PeakTracker

    a = torch.ones(512, 512)  # made before tracking: the baseline's
    tracker = PeakTracker(torch.device("cpu"), baseline=a.numel() * 4)
    with tracker.tracking(), tracker.phase("work"):
        b = a @ a  # 1 MiB
        c = b.t()  # a view: nothing new
        d = (b + 1).sum()  # 1 MiB transient, then a scalar
        del b, c
    assert tracker.result.peaks["work"] == 3 * 512 * 512 * 4 + 4 or tracker.result.peaks["work"] == 3 * 512 * 512 * 4
    assert d.item() > 0


@needs_real
def test_plan_prints_the_real_7b_table_and_each_gpu_recipe_fits_its_card(capsys):
    from inspectd.training.cli import main
    from inspectd.training.memory_plan import model_shape, plan_cgro, prompt_tokens
    from inspectd.training.recipe import load_recipe

    assert main(["plan", "--config", str(RECIPES / "qwen2.5-vl-7b-cgro-80gb.yaml"),
                 "--base", str(real_format.REAL_CHECKPOINT)]) == 0
    table = capsys.readouterr().out
    for component in ("weights", "LoRA + AdamW", "KV cache", "activations", "log-prob head", "decoder pass", "peak"):
        assert component in table
    weights = float(re.search(r"^weights\s+([\d.]+)", table, re.M).group(1))
    assert 15.0 < weights < 16.0, "8.29B bfloat16 parameters"
    for card in (24, 48, 80):
        config = load_recipe(RECIPES / f"qwen2.5-vl-7b-cgro-{card}gb.yaml")
        shape = model_shape(real_format.REAL_CHECKPOINT, config.cgro.lora_targets, config.cgro.lora_rank)
        size = (config.data.image_size, config.data.image_size)
        plan = plan_cgro(shape, config.cgro, size, prompt_tokens(real_format.REAL_CHECKPOINT, size, shape))
        assert plan.device_total < 0.85 * card * 1e9, f"{card} GB recipe: plan {plan.device_total / GIB:.1f} GiB"
    four_bit = plan_cgro(shape, CgroSettings(use_cpu=False, base_precision="nf4"), (420, 420), 280)
    assert four_bit.weights.bytes < 0.5 * plan.weights.bytes


@pytest.mark.slow
def test_plan_is_within_15_percent_of_the_measured_peaks_on_the_scaled_checkpoint(scaled_checkpoint, tmp_path):
    from inspectd.training.memory_plan import model_shape, plan_cgro, prompt_tokens
    from inspectd.training.memory_trace import measure_cgro_step

    torch.set_num_threads(1)
    settings = CgroSettings(batch_size=2, generations=2, max_completion_length=32, reward_batch_size=4,
                            gradient_checkpointing=False)
    size = (224, 224)
    shape = model_shape(scaled_checkpoint, settings.lora_targets, settings.lora_rank)
    plan = plan_cgro(shape, settings, size, prompt_tokens(scaled_checkpoint, size, shape))
    measured = measure_cgro_step(scaled_checkpoint, settings, size, tmp_path).peaks
    for phase in ("generation", "training", "reward"):
        planned = plan.phase_total(phase)
        assert abs(planned / measured[phase] - 1) <= 0.15, (phase, planned, measured[phase])


def test_the_reward_pass_never_builds_full_vocabulary_logits(scaled_checkpoint):
    """The consistency reward's teacher-forced pass reads attention only: its peak stays far below the logits
    a pass with the LM head would hold (rows x tokens x 152k vocabulary x 4 bytes)."""
    from PIL import Image

    from inspectd.bundle.manifest import PromptSpec
    from inspectd.bundle.processor import ImageOnlyQwenProcessor
    from inspectd.real.params import RealParams
    from inspectd.training.memory_trace import PeakTracker, storage_bytes, synthetic_reply
    from inspectd.training.rewards import ReplyAttention

    torch.set_num_threads(1)
    settings = CgroSettings(reward_batch_size=2)
    from inspectd.training.cgro import load_policy_base

    model = load_policy_base(scaled_checkpoint, settings)
    processor = ImageOnlyQwenProcessor.from_pretrained(scaled_checkpoint, local_files_only=True)
    attention = ReplyAttention(model, processor, PromptSpec(), RealParams(layer_start=0), batch_size=2)
    reply = synthetic_reply(processor.tokenizer, 48)
    images = [Image.new("RGB", (224, 224), (90, 90, 90))] * 4
    weights = storage_bytes([*model.parameters(), *model.buffers()])
    tracker = PeakTracker(torch.device("cpu"), weights)
    with tracker.tracking(), tracker.phase("reward"):
        evidence = attention.evidence(images, [reply] * 4)
    assert len(evidence) == 4 and all(e is not None and e.maps.shape[1:] == (8, 8) for e in evidence)
    assert {word.strip() for word in evidence[0].words} == {"the"}  # what real.ignored_words reads in training
    logits = 2 * (64 + 48) * model.config.text_config.vocab_size * 4  # one chunk of 2 rows, ~112 tokens
    assert tracker.result.peaks["reward"] - weights < logits / 3


def test_micro_batches_must_hold_whole_groups():
    CgroSettings(batch_size=16, generations=8, generation_batch_size=4, gradient_accumulation_steps=16)
    with pytest.raises(ValueError, match="generation_batch_size .* must divide batch_size"):
        CgroSettings(batch_size=16, generations=8, generation_batch_size=3)
    with pytest.raises(ValueError, match="multiple of the training micro-batch"):
        CgroSettings(batch_size=16, generations=8, generation_batch_size=1, gradient_accumulation_steps=4)


def test_base_precision_loads_frozen_weights_as_asked(scaled_checkpoint):
    from inspectd.training.cgro import load_policy_base

    full = load_policy_base(scaled_checkpoint, CgroSettings())  # use_cpu: auto = float32
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in full.parameters())
    settings = CgroSettings(base_precision="bfloat16")
    half = load_policy_base(scaled_checkpoint, settings)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    from peft import LoraConfig, get_peft_model  # as trl wraps it: the LoRA weights (and AdamW's state) stay float32

    lora = get_peft_model(half, LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                                           target_modules=settings.lora_targets, lora_dropout=0.0))
    assert {p.dtype for p in lora.parameters() if p.requires_grad} == {torch.float32}
    four_bit = load_policy_base(scaled_checkpoint, CgroSettings(base_precision="nf4"))
    quantized = [m for m in four_bit.modules() if type(m).__name__ == "Linear4bit"]
    assert quantized and not any("visual" in n for n, m in four_bit.named_modules() if m in quantized)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a torch without CUDA")
def test_a_gpu_run_on_a_cpu_torch_names_torch_spec(tmp_path):
    from inspectd.training.cgro import check_device

    with pytest.raises(InspectdError, match="TORCH_SPEC"):
        check_device(CgroSettings(use_cpu=False))

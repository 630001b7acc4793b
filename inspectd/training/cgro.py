"""CGRO: GRPO with format, accuracy and consistency rewards, LoRA on the language model.

Image-level labels only. Uses trl's GRPOTrainer (it runs on the CPU with the
tiny model, PLATFORM.md) and peft; the vision encoder stays frozen. Training
code: the daemon never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inspectd.bundle.manifest import PromptSpec
from inspectd.real.params import RealParams
from inspectd.training.rewards import (
    ConsistencyReward,
    ConsistencySettings,
    ReplyAttention,
    accuracy_reward,
    format_reward,
)


@dataclass(frozen=True)
class CgroSettings:
    """Our defaults where the paper is silent (KL weight, learning rate, steps)."""

    output_dir: Path = Path("runs/cgro")
    max_steps: int = 200
    batch_size: int = 16  # prompts per step (paper: 16)
    generations: int = 8  # sampled replies per prompt (paper: 8)
    max_completion_length: int = 64
    learning_rate: float = 1e-5
    kl_beta: float = 0.04
    temperature: float = 1.0
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    consistency: ConsistencySettings = field(default_factory=ConsistencySettings)
    seed: int = 0
    save_steps: int = 50
    use_cpu: bool = True


def grpo_rows(images_and_labels, prompt: PromptSpec) -> list[dict]:
    """Rows of {prompt (chat with an image part), image, label} as trl expects."""
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user_text()}]}]
    return [{"prompt": message, "image": image, "label": bool(label)} for image, label in images_and_labels]


def build_trainer(model, processor, rows: list[dict], settings: CgroSettings, prompt: PromptSpec, real: RealParams):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    for parameter in model.model.visual.parameters():
        parameter.requires_grad_(False)
    config = GRPOConfig(
        output_dir=str(settings.output_dir),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        num_generations=settings.generations,
        max_completion_length=settings.max_completion_length,
        learning_rate=settings.learning_rate,
        beta=settings.kl_beta,
        temperature=settings.temperature,
        logging_steps=1,
        save_steps=settings.save_steps,
        report_to=[],
        use_cpu=settings.use_cpu,
        seed=settings.seed,
        remove_unused_columns=False,
        disable_tqdm=False,
    )
    consistency = ConsistencyReward(ReplyAttention(model, processor, prompt, real), settings.consistency)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[format_reward, accuracy_reward, consistency],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        peft_config=LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                               target_modules=settings.lora_targets, lora_dropout=0.0),
    )
    consistency.attention.model = trainer.model  # rewards read the policy being trained
    return trainer, consistency

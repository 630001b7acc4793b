"""The supervised warm-up's settings (the ``warmup:`` section) and the reply texts it teaches, beside its trainer
(``warmup.py``).

No torch here: recipes, line data and the training CLI read these without loading the training libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from inspectd.strict_model import StrictModel

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ReplyExample:
    image: Image.Image
    reply: str  # e.g. "<think>...</think><answer>yes</answer>"


class WarmupSettings(StrictModel):
    """Supervised warm-up hyperparameters (the ``warmup:`` section of a recipe)."""

    steps: int = Field(200, ge=0, description=(
        "optimizer steps; 0 = no warm-up: CGRO trains on the recipe's `init` as it is (the paper's path for a "
        "7B, whose full-weight float32 warm-up fits no single GPU)"))
    batch_size: int = Field(8, ge=1, description="examples per step and process")
    learning_rate: float = Field(5e-4, gt=0, description="peak learning rate (AdamW, betas 0.9/0.98)")
    warmup_steps: int = Field(20, ge=0, description="linear learning-rate warm-up steps, then cosine decay")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clipped to this")
    seed: int = Field(0, description="seed of the warm-up's data order and of CGRO (a recipe's one training seed)")
    freeze_vision: bool = Field(False, description="train the language model only")
    save_steps: int = Field(200, ge=0, description=(
        "a checkpoint every this many steps (weights, AdamW and scheduler state, RNG states) under "
        "`work_dir/warmup-checkpoints`; an interrupted warm-up goes on from the newest when the recipe is run "
        "again, as if never stopped; 0 = none"))
    device: Literal["auto", "cpu"] = Field(
        "auto", description="auto = the GPU (one per process under accelerate launch) when there is one, else the CPU")


def reply_text(reasoning: str, anomalous: bool) -> str:
    """The reply format the warm-up teaches (the R1 <think>/<answer> tags)."""
    return f"<think>{reasoning}</think><answer>{'yes' if anomalous else 'no'}</answer>"


def reasoning_reply(sample) -> str:
    """Warm-up target for a synthetic sample: what and where, then the verdict."""
    return reply_text(sample.description(), sample.anomalous)

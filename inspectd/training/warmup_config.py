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
    """Supervised warm-up hyperparameters (also the ``warmup:`` section of a training YAML)."""

    steps: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    freeze_vision: bool = False
    device: Literal["auto", "cpu"] = Field(
        "auto", description="auto = the GPU (one per process under accelerate launch) when there is one, else the CPU")


def reply_text(reasoning: str, anomalous: bool) -> str:
    """The reply format the warm-up teaches (the R1 <think>/<answer> tags)."""
    return f"<think>{reasoning}</think><answer>{'yes' if anomalous else 'no'}</answer>"


def reasoning_reply(sample) -> str:
    """Warm-up target for a synthetic sample: what and where, then the verdict."""
    return reply_text(sample.description(), sample.anomalous)

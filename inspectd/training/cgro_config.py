"""CGRO's settings (the ``cgro:`` section of a recipe), beside its trainer (``cgro.py``).

Settings only, no torch: a recipe is read, validated and planned (``inspectd-train plan``)
without loading the training libraries, as trl keeps ``grpo_config.py`` beside ``grpo_trainer.py``. Every
parameter is documented here once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inspectd.strict_model import StrictModel


class ConsistencySettings(StrictModel):
    k: int = Field(3, ge=1, description="the top-k reasoning tokens' maps (ranked by ReAL) compared")
    percentile: float = Field(95.0, gt=0, lt=100, description="each map is cut strictly above this percentile")
    delta_anomalous: float = Field(0.3, ge=0, le=1, description="reward J >= this on anomalous images")
    delta_normal: float = Field(0.1, ge=0, le=1, description="reward J <= this on normal images")


class CgroSettings(StrictModel):
    """GRPO hyperparameters (the ``cgro:`` section of a recipe); ours where the paper is silent."""

    max_steps: int = Field(200, ge=1, description="GRPO optimizer steps")
    batch_size: int = Field(16, ge=1, description="prompts per step and device (paper: 16)")
    generations: int = Field(8, ge=2, description="sampled replies per prompt (paper: 8)")
    max_completion_length: int = Field(64, ge=8, description="tokens of a sampled reply at most")
    learning_rate: float = Field(1e-5, gt=0, description="LoRA learning rate (ours: the paper does not publish it)")
    kl_beta: float = Field(0.04, ge=0, description="KL weight against the reference model (ours)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the replies")
    lora_rank: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / rank)")
    lora_targets: str = Field(r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
                              description="regex of the module names LoRA wraps (the language model's linears)")
    consistency: ConsistencySettings = Field(ConsistencySettings(), description="the consistency reward")
    save_steps: int = Field(50, ge=1, description="a checkpoint every this many steps; a rerun resumes from the "
                                                  "newest")
    use_cpu: bool = Field(True, description="train on the CPU; false = the GPU (one per process under accelerate "
                                            "launch)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="split a step's batch_size x generations "
                                                                   "replies into this many micro-batches for the "
                                                                   "policy's forward and backward (GPU memory)")
    generation_batch_size: int | None = Field(
        None, ge=1, description="prompts per generate call (their replies are scored and rewarded together); "
                                "null = batch_size. Bounds the KV cache and the vision pass of generation; must "
                                "divide batch_size, and its replies must fill whole training micro-batches")
    reward_batch_size: int = Field(16, ge=1, description="replies per teacher-forced pass of the consistency "
                                                         "and localization rewards (their peak memory)")
    base_precision: Literal["auto", "float32", "bfloat16", "nf4"] = Field(
        "auto", description="the frozen base weights: auto = bfloat16 on a GPU, float32 with use_cpu; nf4 = "
                            "4-bit (bitsandbytes, QLoRA) for small GPUs. LoRA weights and optimizer state stay "
                            "float32 in every case")
    gradient_checkpointing: bool = Field(True, description="trl's default; saves memory on a 7B, costs time on CPU")
    bf16: bool | None = Field(None, description="bf16 autocast; null = on for GPUs (trl's default), off with use_cpu")

    @model_validator(mode="after")
    def _micro_batches(self) -> CgroSettings:
        replies = self.batch_size * self.generations
        if replies % self.gradient_accumulation_steps:
            raise ValueError(f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide "
                             f"batch_size x generations ({replies})")
        prompts = self.generation_prompts
        if self.batch_size % prompts:
            raise ValueError(f"generation_batch_size ({prompts}) must divide batch_size ({self.batch_size})")
        if (prompts * self.generations) % self.train_micro_batch:
            raise ValueError(f"generation_batch_size x generations ({prompts * self.generations} replies) must be a "
                             f"multiple of the training micro-batch (batch_size x generations / "
                             f"gradient_accumulation_steps = {self.train_micro_batch})")
        return self

    @property
    def generation_prompts(self) -> int:
        """Prompts per generate call."""
        return self.generation_batch_size or self.batch_size

    @property
    def train_micro_batch(self) -> int:
        """Replies per forward and backward of the policy."""
        return self.batch_size * self.generations // self.gradient_accumulation_steps

    def precision(self) -> str:
        """The base weights' precision this run uses (``auto`` resolved)."""
        if self.base_precision != "auto":
            return self.base_precision
        return "float32" if self.use_cpu else "bfloat16"

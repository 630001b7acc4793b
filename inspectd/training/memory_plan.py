"""The planned peak memory of a CGRO run, by component, from the checkpoint's real config.

``inspectd-train plan --config RECIPE`` prints it before a GPU is rented or a run is started. Parameter
counts are exact: the model is built on the meta device (no weights, no memory) from the checkpoint's
``config.json`` and the LoRA targets are matched on its module names, as peft will. Activations are
formulas in the model's dimensions (below), one per phase of a step; a step's peak is the weights, the
LoRA state and the largest phase. The formulas were checked against peaks measured at fixture scale
(``inspectd-train plan --measure``, docs/gpu-7b.md, "Training memory"): on a GPU they are estimates until measured.

Phases, with G = generation_batch_size x generations rows, B = the training micro-batch, R =
reward_batch_size, P prompt tokens (image tokens included), C = max_completion_length, T = P + C:

- generation (no gradients): the KV cache of G rows x T tokens, plus the larger of one vision block over
  G images and one decoder layer over G x P prompt tokens (the prefill), plus the sampling logits.
- training (policy forward and backward, gradients on the LoRA weights only): with gradient checkpointing
  each layer's input (B x T x hidden) plus one layer's saved activations; without, every layer's saved
  activations. The LM head is trl's fused, tiled log-probability (no B x T x vocab logits).
- reward (the consistency and localization rewards' teacher-forced pass, no gradients, decoder only):
  R rows x T tokens through one layer at a time, plus the captured attention of the reasoning tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from inspectd.training.cgro_config import CgroSettings

GIB = 1024**3
# trl's fused log-probability head (trl.kernels.chunked_logprob) works in token x vocab tiles: its forward,
# then its backward, holds one buffer of min(tokens, 4096) x 32768 (the full chunk width, whatever the
# vocabulary). With Triton (GPUs) it scores the completion tokens only and folds a tile inside one kernel.
# Without Triton (CPUs) it scores every position and folds with torch ops, whose temporaries hold up to 8
# more tiles of the real width at the backward's peak (measured: 8.6 tiles in all on the fixture).
LOGPROB_TOKEN_CHUNK = 4096
LOGPROB_VOCAB_CHUNK = 32768
LOGPROB_TEMPORARIES = {"cuda": 0, "cpu": 8}
# Tensors a decoder layer keeps for backward, per token, in units of its widths (counted on Qwen2.5-VL's
# layer with LoRA on every linear: norm inputs and outputs, q / rotated q, attention output, o_proj input,
# residuals -> ~10 x hidden; k, v and rotated k -> 3 x kv width; gate, up, act(gate), act x up -> 4 x inter.)
SAVED_PER_TOKEN = {"hidden": 10, "kv": 3, "intermediate": 4}
# One layer's largest transient working set in a forward without gradients, per token.
TRANSIENT_PER_TOKEN = {"hidden": 4, "intermediate": 3}
# Sampling: float32 logits of the last position, processed copies (temperature, penalties) and softmax.
SAMPLING_COPIES = 3
CUDA_CONTEXT_BYTES = int(0.6 * GIB)  # the CUDA context and cuBLAS workspaces: not tensors, not in the fixture check


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a checkpoint: exact parameter counts by role, and the widths of its layers."""

    quantizable: int  # language-model linear weights (what nf4 quantizes)
    other: int  # embeddings, norms, lm_head, the vision tower, biases
    lora: int  # LoRA parameters on the configured targets
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    patch_size: int
    merge_size: int
    prequantized: bool = False  # a 4-bit bundle as base: loads 4-bit whatever base_precision says


def model_shape(folder: Path, lora_targets: str, lora_rank: int) -> ModelShape:
    """Counts from the config alone: the model is built on the meta device."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from inspectd.bundle.nf4 import NF4_SKIPPED_MODULES

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with init_empty_weights():
        model = Qwen2_5_VLForConditionalGeneration(config)
    pattern = re.compile(lora_targets)
    quantizable = lora = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if not any(name == skip or name.startswith(skip + ".") for skip in NF4_SKIPPED_MODULES):
            quantizable += module.weight.numel()
        if pattern.fullmatch(name):
            lora += lora_rank * (module.in_features + module.out_features)
    total = sum(p.numel() for p in model.parameters())
    text, vision = config.text_config, config.vision_config
    return ModelShape(
        quantizable=quantizable, other=total - quantizable, lora=lora, layers=text.num_hidden_layers,
        hidden=text.hidden_size, intermediate=text.intermediate_size, heads=text.num_attention_heads,
        kv_heads=text.num_key_value_heads, head_dim=text.hidden_size // text.num_attention_heads,
        vocab=text.vocab_size, vision_hidden=vision.hidden_size, vision_intermediate=vision.intermediate_size,
        patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
        prequantized=bool(getattr(config, "quantization_config", None)))


@dataclass(frozen=True)
class Component:
    name: str
    bytes: int
    how: str


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes by component; ``phases`` are each phase's total (weights and LoRA state included)."""

    device: str
    precision: str
    weights: Component
    lora_state: Component
    phase_parts: dict[str, list[Component]]

    def phase_total(self, phase: str) -> int:
        extra = sum(part.bytes for part in self.phase_parts[phase])
        return self.weights.bytes + self.lora_state.bytes + extra

    @property
    def peak_phase(self) -> str:
        return max(self.phase_parts, key=self.phase_total)

    @property
    def peak(self) -> int:
        """Tensor bytes at the step's peak (a GPU adds the CUDA context: ``device_total``)."""
        return self.phase_total(self.peak_phase)

    @property
    def device_total(self) -> int:
        return self.peak + (CUDA_CONTEXT_BYTES if self.device == "cuda" else 0)


def prompt_tokens(folder: Path, image_size: tuple[int, int], shape: ModelShape, prompt=None) -> int:
    """Tokens of the chat prompt with one image of ``image_size``, from the checkpoint's own processor."""
    from PIL import Image

    from inspectd.bundle.manifest import PromptSpec
    from inspectd.bundle.processor import ImageOnlyQwenProcessor
    from inspectd.model.prompting import chat_text

    processor = ImageOnlyQwenProcessor.from_pretrained(folder, local_files_only=True)
    image = Image.new("RGB", image_size, (128, 128, 128))
    inputs = processor(text=[chat_text(processor, prompt or PromptSpec())], images=[image], return_tensors="pt")
    return int(inputs["input_ids"].shape[1])


def plan_cgro(shape: ModelShape, settings: CgroSettings, image_size: tuple[int, int], prompt_len: int) -> MemoryPlan:
    """The plan for one process (data parallel: every GPU holds the same)."""
    device = "cpu" if settings.use_cpu else "cuda"
    precision = "nf4" if shape.prequantized else settings.precision()
    act = 4 if settings.use_cpu or precision == "float32" else 2  # activations follow the compute dtype (bf16 autocast on a GPU)
    if precision == "nf4":
        # 4 bits a weight, plus bitsandbytes' absmax per 64-weight block (double-quantized: ~8.5 bits per block)
        weights = Component("weights", int(shape.quantizable * (0.5 + 8.5 / 8 / 64)) + shape.other * act,
                            f"{shape.quantizable / 1e9:.2f}B linear weights in 4-bit NF4 + "
                            f"{shape.other / 1e9:.2f}B others in {'float32' if act == 4 else 'bfloat16'}")
    else:
        total = shape.quantizable + shape.other
        weights = Component("weights", total * act, f"{total / 1e9:.2f}B parameters in {precision}")
    lora = Component("LoRA + AdamW", shape.lora * 12,
                     f"{shape.lora / 1e6:.1f}M LoRA parameters, float32 weights + 2 AdamW moments (12 B each)")

    height, width = image_size
    patches = (height // shape.patch_size) * (width // shape.patch_size)
    G = settings.generation_prompts * settings.generations
    B, R, C, P = settings.train_micro_batch, settings.reward_batch_size, settings.max_completion_length, prompt_len
    T = P + C
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    vision_block = patches * (4 * shape.vision_hidden + 3 * shape.vision_intermediate) * act
    transient = (TRANSIENT_PER_TOKEN["hidden"] * h + TRANSIENT_PER_TOKEN["intermediate"] * i) * act
    saved = (SAVED_PER_TOKEN["hidden"] * h + SAVED_PER_TOKEN["kv"] * kv + SAVED_PER_TOKEN["intermediate"] * i) * act

    pixels = Component("pixel values", G * patches * 3 * 2 * shape.patch_size**2 * 4,
                       f"{G} images' float32 patches, kept for the step (trl buffers the generation batch)")
    generation = [pixels,
        Component("KV cache", 2 * shape.layers * kv * act * G * T,
                  f"{G} rows x {T} tokens x {shape.layers} layers x 2 x {kv}"),
        Component("prefill", max(G * vision_block, G * P * transient) + 2 * G * P * h * act,
                  f"the larger of one vision block over {G} images of {patches} patches and one decoder layer "
                  f"over {G} x {P} prompt tokens, and the hidden states"),
        Component("sampling logits", G * shape.vocab * 4 * SAMPLING_COPIES, f"{G} rows x {shape.vocab} x float32"),
    ]
    tokens = B * C if device == "cuda" else B * (T - 1)  # the positions the fused head scores
    rows = min(tokens, LOGPROB_TOKEN_CHUNK)
    head = (rows * LOGPROB_VOCAB_CHUNK + LOGPROB_TEMPORARIES[device] * rows * min(shape.vocab, LOGPROB_VOCAB_CHUNK)) * act
    if settings.gradient_checkpointing:
        layers_saved = shape.layers * B * T * h * act + B * T * saved
        how = f"gradient checkpointing: {shape.layers} layer inputs + one layer's saved activations, {B} x {T} tokens"
    else:
        layers_saved = shape.layers * B * T * saved
        how = f"{shape.layers} layers' saved activations, {B} x {T} tokens"
    training = [pixels,
        Component("activations", layers_saved, how),
        Component("vision pass", B * vision_block, f"one vision block over {B} images (frozen: nothing kept)"),
        Component("log-prob head", head + tokens * h * act,
                  f"trl's fused head: a buffer of {rows} x {LOGPROB_VOCAB_CHUNK}"
                  + (f" + {LOGPROB_TEMPORARIES[device]} tiles of temporaries" if LOGPROB_TEMPORARIES[device] else "")
                  + ", no full logits"),
        Component("LoRA gradients", shape.lora * 4, "float32, during the backward"),
    ]
    reward = [pixels,
        Component("decoder pass", R * T * (3 * h * act + transient) + R * vision_block,
                  f"{R} replies x {T} tokens, one layer at a time, decoder only (no logits)"),
        Component("captured attention", R * shape.heads * C * T * 4 + shape.layers * R * C * T * 4,
                  f"{C} reasoning queries' softmax rows per layer"),
    ]
    return MemoryPlan(device, precision, weights, lora, {"generation": generation, "training": training,
                                                         "reward": reward})


def format_plan(plan: MemoryPlan, measured: dict[str, int] | None = None) -> str:
    """The table ``inspectd-train plan`` prints (GiB); ``measured``: peaks per phase, shown beside the plan."""
    def gib(n: int) -> str:
        return f"{n / GIB:8.2f}"

    lines = [f"{'component':<22}{'GiB':>8}  how", f"{plan.weights.name:<22}{gib(plan.weights.bytes)}  {plan.weights.how}",
             f"{plan.lora_state.name:<22}{gib(plan.lora_state.bytes)}  {plan.lora_state.how}"]
    for phase, parts in plan.phase_parts.items():
        lines.append(f"[{phase}]")
        lines += [f"  {part.name:<20}{gib(part.bytes)}  {part.how}" for part in parts]
        total = plan.phase_total(phase)
        line = f"  {'phase total':<20}{gib(total)}"
        if measured and phase in measured:
            line += f"  measured {measured[phase] / GIB:.3f} GiB ({(total / measured[phase] - 1) * 100:+.1f} %)"
        lines.append(line)
    lines.append(f"{'peak (' + plan.peak_phase + ')':<22}{gib(plan.peak)}  tensors, {plan.precision} base weights")
    if plan.device == "cuda":
        lines.append(f"{'with CUDA context':<22}{gib(plan.device_total)}  + ~{CUDA_CONTEXT_BYTES / GIB:.1f} GiB "
                     "context and workspaces (estimate until measured on the GPU)")
    return "\n".join(lines)

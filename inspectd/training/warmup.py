"""Supervised warm-up: teach a model the reply format and to describe defects.

A cold-start step before CGRO: loss on the reply tokens only,
AdamW with warm-up and cosine decay, gradient clipping. Training code: the
daemon never imports this module.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import torch

from inspectd.bundle.manifest import PromptSpec
from inspectd.model.packed_vision import use_packed_vision
from inspectd.model.prompting import chat_text
from inspectd.model.sequences import extend_rows, pad_id_of
from inspectd.training.warmup_config import ReplyExample, WarmupSettings

log = logging.getLogger("inspectd.train")


def reply_batch(processor, prompt: PromptSpec, examples: Sequence[ReplyExample]) -> dict[str, torch.Tensor]:
    """Prompt + reply + end-of-turn, with labels on the reply tokens only.

    The reply's ids are appended to the processed prompt, as generation
    appends them, so no tokenizer merge across the boundary shifts the labels.
    """
    tokenizer = processor.tokenizer
    end = tokenizer.eos_token or "<|im_end|>"
    chat = chat_text(processor, prompt)
    prompts = processor(text=[chat] * len(examples), images=[ex.image for ex in examples], return_tensors="pt",
                        padding=True, padding_side="left")
    replies = [tokenizer.encode(ex.reply + end, add_special_tokens=False) for ex in examples]
    extended = extend_rows(prompts, list(range(len(examples))), replies, pad_id_of(tokenizer))
    batch = extended.inputs
    labels = torch.full_like(batch["input_ids"], -100)
    for row, start in enumerate(extended.tail_starts):
        labels[row, start:] = batch["input_ids"][row, start:]
    batch["labels"] = labels
    return batch


def supervised_warmup(
    model,
    processor,
    prompt: PromptSpec,
    sample: Callable[[int], ReplyExample],
    settings: WarmupSettings,
    log_every: int | None = None,
) -> list[float]:
    """Train in place; ``sample(i)`` returns the i-th example (deterministic data).

    Runs through accelerate: one process (the GPU when there is one, else the
    CPU), or under ``accelerate launch`` / ``torchrun`` one process per GPU with
    distributed data parallel, each process drawing its own ``batch_size``
    examples of the step (process r of n takes examples ``(step*n + r)*batch_size
    + i``, so one process sees exactly the single-process sequence). Weights and
    optimizer state stay float32 (master weights); on a GPU with bf16 support the
    forward runs under bf16 autocast. Pure bf16 AdamW loses small updates, and
    bf16 matmuls on a CPU without bf16 units are ~20x slower. Returns the
    per-step loss averaged over processes; only the main process should save.
    """
    from accelerate import Accelerator

    torch.manual_seed(settings.seed)
    on_cpu = settings.device == "cpu" or not torch.cuda.is_available()
    bf16 = not on_cpu and torch.cuda.is_bf16_supported()
    accelerator = Accelerator(cpu=on_cpu, mixed_precision="bf16" if bf16 else "no")
    model.to(device=accelerator.device, dtype=torch.float32)
    use_packed_vision(model)
    if settings.freeze_vision:
        for parameter in model.model.visual.parameters():
            parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, betas=(0.9, 0.98), weight_decay=settings.weight_decay
    )

    def schedule(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # The scheduler is stepped by hand: accelerate's wrapper would step it once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    trained, optimizer = accelerator.prepare(model, optimizer)
    processes, rank = accelerator.num_processes, accelerator.process_index
    if accelerator.is_main_process:
        log.info("warm-up on %d process(es), %s, %d examples per process and step", processes,
                 accelerator.device, settings.batch_size)
    trained.train()
    losses = []
    started = time.perf_counter()
    try:
        for step in range(settings.steps):
            first = (step * processes + rank) * settings.batch_size
            examples = [sample(first + i) for i in range(settings.batch_size)]
            batch = {k: v.to(accelerator.device) for k, v in reply_batch(processor, prompt, examples).items()}
            loss = trained(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, settings.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(accelerator.reduce(loss.detach(), "mean").item() if processes > 1 else loss.item())
            if log_every and accelerator.is_main_process and (step % log_every == 0 or step == settings.steps - 1):
                log.info("warm-up step %d/%d loss %.4f (%.0f s)", step + 1, settings.steps, losses[-1],
                         time.perf_counter() - started)
        accelerator.wait_for_everyone()
    finally:
        model.eval()
    return losses


def is_main_process() -> bool:
    """True in a single process and in rank 0 of ``accelerate launch`` / ``torchrun`` (the one that saves)."""
    from accelerate import PartialState

    return PartialState().is_main_process

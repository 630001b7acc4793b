"""Supervised warm-up: teach a model the reply format and to describe defects.

A cold-start step before CGRO: loss on the reply tokens only,
AdamW with warm-up and cosine decay, gradient clipping. Checkpoints every
``save_steps`` steps; a run started on a folder holding one goes on from it
exactly (same losses, same final weights as a run never stopped, on the CPU).
Training code: the daemon never imports this module.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


@dataclass
class WarmupRun:
    losses: list[float]  # every step's, those of the runs it resumed included
    seconds: float  # training time, the interrupted runs' included (up to the checkpoint this run went on from)
    resumed_from: int | None  # the checkpoint's step this run went on from; None: from step 0


CHECKPOINT = re.compile(r"step-(\d+)")


def _fingerprint(settings: WarmupSettings, processes: int, identity: dict | None) -> dict:
    """What a checkpoint is only valid for: the settings that shape the run (not how often it saves, nor
    where it runs), the number of processes (they decide which examples a step draws) and the caller's
    ``identity`` of the model and data."""
    return {"settings": settings.model_dump(mode="json", exclude={"save_steps", "device"}), "processes": processes,
            "identity": identity}


def newest_checkpoint(folder: Path | None) -> Path | None:
    """The newest complete checkpoint under ``folder`` (a temporary one, half written, is never named so)."""
    if folder is None or not Path(folder).is_dir():
        return None
    done = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := CHECKPOINT.fullmatch(p.name))
            and (p / "state.pt").is_file() and (p / "model.safetensors").is_file()]
    return max(done)[1] if done else None


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, losses: list[float], seconds: float,
                    fingerprint: dict) -> Path:
    """``folder/step-<step>`` after ``step`` steps: the weights (safetensors), AdamW's and the scheduler's
    state, the RNG states, the losses so far. Written into a temporary folder, synced, then renamed: a run
    killed while saving leaves the previous checkpoint whole. The older checkpoints are removed after."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    temporary = folder / f".tmp-step-{step:08d}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    save_model(model, str(temporary / "model.safetensors"))  # tied weights saved once
    torch.save({"step": step, "losses": losses, "seconds": seconds, "fingerprint": fingerprint,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_states()},
               temporary / "state.pt")
    for path in (temporary / "model.safetensors", temporary / "state.pt", temporary):
        _fsync(path)
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
    _fsync(folder)
    for path in folder.iterdir():
        if path != final and (CHECKPOINT.fullmatch(path.name) or path.name.startswith(".tmp-step-")):
            shutil.rmtree(path, ignore_errors=True)
    return final


def _schedule(settings: WarmupSettings) -> Callable[[int], float]:
    def schedule(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return schedule


def supervised_warmup(
    model,
    processor,
    prompt: PromptSpec,
    sample: Callable[[int], ReplyExample],
    settings: WarmupSettings,
    log_every: int | None = None,
) -> list[float]:
    """``train_warmup`` without checkpoints; returns the per-step losses."""
    return train_warmup(model, processor, prompt, sample, settings, log_every).losses


def train_warmup(
    model,
    processor,
    prompt: PromptSpec,
    sample: Callable[[int], ReplyExample],
    settings: WarmupSettings,
    log_every: int | None = None,
    checkpoints: Path | None = None,
    identity: dict | None = None,
) -> WarmupRun:
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

    ``checkpoints``: a folder; every ``settings.save_steps`` steps (0: never) the main process writes a
    checkpoint there (``save_checkpoint``), and a run started with a complete one there goes on from its
    step. The data order is a function of the step, so the weights, AdamW's and the scheduler's state and
    the RNG states (the main process's: every process seeds and draws alike) make the rest of the run the
    same as if it had never stopped. A checkpoint of other settings, another number of processes or another
    ``identity`` (JSON-like: what the caller's model and data were made from) is not resumed (a warning; it
    is replaced by the first new one).
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
    # The scheduler is stepped by hand: accelerate's wrapper would step it once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    processes, rank = accelerator.num_processes, accelerator.process_index
    fingerprint = _fingerprint(settings, processes, identity)
    losses: list[float] = []
    first_step, earlier_seconds, resumed_from, rng = 0, 0.0, None, None
    checkpoint = newest_checkpoint(checkpoints)
    if checkpoint is not None:
        state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
        if state["fingerprint"] != fingerprint:
            if accelerator.is_main_process:
                log.warning("warm-up: %s is of other settings, data or number of processes; not resumed, the "
                            "warm-up starts at step 0", checkpoint)
        else:
            from safetensors.torch import load_model

            load_model(model, str(checkpoint / "model.safetensors"))  # read on the CPU, copied into place
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            first_step = resumed_from = state["step"]
            losses, earlier_seconds, rng = list(state["losses"]), state["seconds"], state["rng"]
            if accelerator.is_main_process:
                log.info("warm-up: resuming from the checkpoint at step %d of %d (%s)", first_step, settings.steps,
                         checkpoint)
    trained, optimizer = accelerator.prepare(model, optimizer)
    if rng is not None:
        _set_rng_states(rng)  # last: nothing above may draw after it
    if accelerator.is_main_process:
        log.info("warm-up on %d process(es), %s, %d examples per process and step", processes,
                 accelerator.device, settings.batch_size)
    trained.train()
    started = time.perf_counter()
    try:
        for step in range(first_step, settings.steps):
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
                seconds = time.perf_counter() - started
                log.info("warm-up step %d/%d loss %.4f (%.0f s%s)", step + 1, settings.steps, losses[-1], seconds,
                         time_left(seconds, step + 1 - first_step, settings.steps - step - 1))
            done = step + 1
            if (checkpoints is not None and settings.save_steps and done % settings.save_steps == 0
                    and done < settings.steps and accelerator.is_main_process):  # the last step: the stage saves
                saved = save_checkpoint(Path(checkpoints), done, model, optimizer, scheduler, losses,
                                        earlier_seconds + time.perf_counter() - started, fingerprint)
                log.info("warm-up: checkpoint at step %d (%s)", done, saved)
        accelerator.wait_for_everyone()
    finally:
        model.eval()
    return WarmupRun(losses, earlier_seconds + time.perf_counter() - started, resumed_from)


def time_left(seconds: float, steps_run: int, steps_left: int) -> str:
    """``, 2 h 05 min left`` at the pace of the ``steps_run`` steps this process ran in ``seconds``; empty at the
    end. Only this run's steps count: a resumed stage's earlier part may have run beside other work."""
    if steps_left <= 0 or steps_run <= 0:
        return ""
    left = seconds / steps_run * steps_left
    if left < 59.5:
        return f", {left:.0f} s left"
    minutes = round(left / 60)
    return f", {minutes} min left" if minutes < 60 else f", {minutes // 60} h {minutes % 60:02d} min left"


def is_main_process() -> bool:
    """True in a single process and in rank 0 of ``accelerate launch`` / ``torchrun`` (the one that saves)."""
    from accelerate import PartialState

    return PartialState().is_main_process

"""Measured peak memory of a CGRO step, per phase: what ``inspectd-train plan --measure`` sets beside the plan.

On a GPU the CUDA allocator's own peak counters are read at each phase boundary. A CPU has no such
counters, so every tensor storage created during the step is counted by a ``TorchDispatchMode`` (the
mechanism of torch's FlopCounterMode) and released through a finalizer when the storage dies: the live
tensor bytes the allocator would have to hold, without malloc's caching or Python's own objects. The
weights loaded before the step are counted once, from their storages.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied weights count once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


class _LiveStorages(TorchDispatchMode):
    """Live bytes of the storages that ops create inside the mode, and the peak per phase."""

    def __init__(self, on_change: Callable[[int], None]) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self._on_change = on_change

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self.live or key in inputs or storage.nbytes() == 0:
                continue  # a view or in-place result of a tensor already there (a weight's transpose)
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            weakref.finalize(storage, self._release, key)
            self._on_change(self.current)
        return out

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


@dataclass
class PhasePeaks:
    """Peak bytes seen in each phase, the weights' bytes included."""

    baseline: int
    peaks: dict[str, int] = field(default_factory=dict)


class PeakTracker:
    """Per-phase peak memory of a block of training code, on the device it runs on."""

    def __init__(self, device: torch.device, baseline: int) -> None:
        self.device = device
        self.result = PhasePeaks(baseline)
        self._phases: list[str] = ["other"]
        self._mode: _LiveStorages | None = None

    def _note(self, current: int) -> None:
        phase = self._phases[-1]
        total = self.result.baseline + current
        if total > self.result.peaks.get(phase, 0):
            self.result.peaks[phase] = total

    def _cuda_mark(self) -> None:
        """Closes the current phase's window on a GPU: its peak since the last mark."""
        peak = torch.cuda.max_memory_allocated(self.device)
        phase = self._phases[-1]
        self.result.peaks[phase] = max(self.result.peaks.get(phase, 0), peak)
        torch.cuda.reset_peak_memory_stats(self.device)

    @contextmanager
    def tracking(self) -> Iterator[PeakTracker]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.result.baseline = torch.cuda.memory_allocated(self.device)
            yield self
            self._cuda_mark()
            return
        self._mode = _LiveStorages(self._note)
        with self._mode:
            yield self
        self._mode = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            self._cuda_mark()
        self._phases.append(name)
        try:
            yield
        finally:
            if self.device.type == "cuda":
                self._cuda_mark()
            self._phases.pop()

    def wrap(self, name: str, function: Callable) -> Callable:
        """``function`` run inside phase ``name`` (for instance methods of a trainer)."""

        def wrapped(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)

        return wrapped


def synthetic_reply(tokenizer, tokens: int) -> str:
    """A reply in the R1 format of exactly ``tokens`` tokens (or the shortest there is): the reward pass's worst
    case, every reasoning token a query."""
    head, tail = "<think>", "</think><answer>yes</answer>"
    filler = 0
    while len(tokenizer.encode(head + " the" * (filler + 1) + tail, add_special_tokens=False)) <= tokens:
        filler += 1
    return head + " the" * filler + tail


def measure_cgro_step(folder: Path, settings, image_size: tuple[int, int], work_dir: Path, steps: int = 2) -> PhasePeaks:
    """Peak memory per phase of ``steps`` real CGRO steps on ``folder``'s model, replies forced to full length.

    Images are plain grey (memory depends on shapes, not pixels); ``min_new_tokens`` makes every reply
    ``max_completion_length`` long, the plan's worst case. The reward pass is measured on its own on
    full-length replies in the R1 format, because a model that does not answer in it skips the pass.
    """
    from PIL import Image

    from inspectd.bundle.manifest import PromptSpec
    from inspectd.bundle.processor import ImageOnlyQwenProcessor
    from inspectd.real.params import RealParams
    from inspectd.training.cgro import build_trainer, cgro_rows, load_policy_base

    settings = settings.model_copy(update={"max_steps": steps, "save_steps": 10**6})
    model = load_policy_base(folder, settings)
    processor = ImageOnlyQwenProcessor.from_pretrained(folder, local_files_only=True)
    processor.tokenizer.padding_side = "left"
    images = [Image.new("RGB", image_size, (100 + i % 50, 120, 140)) for i in range(settings.batch_size * steps)]
    rows = cgro_rows([(image, i % 2 == 0) for i, image in enumerate(images)], PromptSpec())
    device = torch.device("cpu") if settings.use_cpu else torch.device("cuda", torch.cuda.current_device())
    tracker = PeakTracker(device, storage_bytes([*model.parameters(), *model.buffers()]))
    length = settings.max_completion_length
    with tracker.tracking():
        trainer, consistency = build_trainer(model, processor, rows, settings, PromptSpec(), RealParams(layer_start=0), work_dir,
                                             generation_kwargs={"min_new_tokens": length})
        trainer._generate_single_turn = tracker.wrap("generation", trainer._generate_single_turn)
        trainer.training_step = tracker.wrap("training", trainer.training_step)
        trainer.train()
        reply = synthetic_reply(processor.tokenizer, length)
        count = settings.reward_batch_size
        with tracker.phase("reward"):
            consistency.attention.evidence((images * count)[:count], [reply] * count)
    return tracker.result

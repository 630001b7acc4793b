"""A recipe stage's folder and completion record, and which process of a run writes them.

A stage is done when its ``stage.json`` exists, so an interrupted run picks up at the first unfinished
stage. Under ``accelerate launch`` / ``torchrun`` every process runs the training stages (data parallel)
and reads the records, but only the main process writes a record, a model or a folder; the others wait at
``everyone_here`` so none reads a record before it is whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from inspectd.training.stage_names import stage_folder


class Stage:
    """``work_dir/<name>`` and its ``stage.json``."""

    def __init__(self, config, name: str) -> None:
        self.name = name
        self.dir: Path = stage_folder(config.work_dir, name)  # a work folder from before the rename goes on
        self.record_path = self.dir / "stage.json"

    @property
    def done(self) -> bool:
        return self.record_path.is_file()

    def record(self) -> dict:
        return json.loads(self.record_path.read_text(encoding="utf-8"))

    def finish(self, **facts) -> None:
        if is_main_process():
            self.record_path.write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")


def _state():
    """accelerate's process state, made once per process. Without a GPU it must be told ``cpu``: otherwise
    it reads a launcher's processes as one each, and the trainers (which ask the same singleton) would not
    share gradients. With GPUs it pins each process to its own before any model loads."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """True in a single process and in rank 0 of ``accelerate launch`` / ``torchrun`` (the one that writes)."""
    return _state().is_main_process


def processes() -> int:
    return _state().num_processes


def everyone_here() -> None:
    """Every process waits here until all arrive (nothing in a single process)."""
    _state().wait_for_everyone()


def leave_the_processes() -> None:
    """After a run that ended well under ``torchrun`` / ``accelerate launch``: destroy the process group while
    the interpreter is whole. Without it gloo's worker threads can still hold tensors when the interpreter
    tears down, and a rank that finished its work aborts (SIGABRT, "terminate called without an active
    exception"; pytorch/pytorch#179291), so the launcher reports the finished run as failed. Not after an
    error: a collective destroy while another rank is stuck in a collective would hang."""
    _state().destroy_process_group()

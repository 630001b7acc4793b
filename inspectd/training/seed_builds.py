"""Several warm-up seeds of one recipe, built side by side, and the choice between them.

Why: on magnetic tiles two warm-up seeds of the same recipe on the same machine
gave dev pixel AUROC 62.8 and 79.3 — the seed moves the outcome more than any
setting measured. A recipe with ``seeds`` builds each one in a process of its
own (one core each), evaluates all of them the same way, and publishes the one
whose CGRO model scores best on the validation's drawn defects, by a rule fixed
in code and on validation only. The card shows every build, so the spread a
rebuild can land in is on record. The choice keeps out a build that fails on
validation; with a few dozen real validation photos it does not tell the better
of two close builds apart (docs/experiments.md, "Two more warm-up seeds").

Training code: the daemon never imports it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

log = logging.getLogger("inspectd.recipe")

# The figure a build is chosen by: pixel AUROC of ReAL's maps (the published model's own), pooled over the
# validation's held-out good images with drawn defects, of the CGRO model.
SELECTION_REPORT = "cgro-drawn_validation"
SELECTION_METRIC = "pixel_auroc"


def seed_work_dir(work_dir: Path, seed: int) -> Path:
    return work_dir / f"seed-{seed}"


def seed_config(config, seed: int):
    """The single-seed recipe of one build: its own warm-up seed and work folder."""
    return config.model_copy(update={
        "seeds": [], "warmup": config.warmup.model_copy(update={"seed": seed}),
        "work_dir": seed_work_dir(config.work_dir, seed)})


@contextmanager
def _sigterm_ends_the_builds() -> Iterator[None]:
    """SIGTERM (systemctl stop, kill) raises SystemExit in the recipe process, so leaving the pool terminates
    its build processes; by default SIGTERM ended the recipe at once and left them training unseen."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_with_recipe(recipe_pid: int) -> None:
    """In each build process: end it when the recipe process is gone (SIGKILL, a crash), which no signal
    tells it; its stage resumes from its newest checkpoint when the recipe runs again."""

    def watch() -> None:
        while os.getppid() == recipe_pid:
            time.sleep(1.0)
        log.error("the recipe process %d ended: this build stops (its stage goes on from its newest "
                  "checkpoint when the recipe runs again)", recipe_pid)
        os._exit(1)

    threading.Thread(target=watch, name="stop-with-recipe", daemon=True).start()


@dataclass
class _Build:
    """One seed's build process and the pipe on which it sends back the error it failed with."""

    seed: int
    process: BaseProcess
    error: Connection


def _build_process(build: Callable[[str, int, str], None], payload: str, seed: int, stop_after: str,
                   recipe_pid: int, error: Connection) -> None:
    """The body of a build's process: it ends with the recipe, and a build that raises sends its error back."""
    _stop_with_recipe(recipe_pid)
    try:
        build(payload, seed, stop_after)
    except Exception as exc:
        error.send(f"{type(exc).__name__}: {exc}")
        raise  # its traceback goes to the log as well


def _start(context, build, payload: str, seed: int, stop_after: str) -> _Build:
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_build_process, name=f"build-seed-{seed}",
                              args=(build, payload, seed, stop_after, os.getpid(), send))
    process.start()
    send.close()  # the build's copy is the one it writes to
    return _Build(seed, process, receive)


def _why_it_failed(build: _Build) -> str | None:
    """None for a build that finished; otherwise why not, in words an operator can act on."""
    code = build.process.exitcode
    if code == 0:
        return None
    try:
        return build.error.recv() if build.error.poll() else _killed_or_exited(code)
    except EOFError:  # poll() is true at the end of the pipe too: the process died without a word
        return _killed_or_exited(code)


def _killed_or_exited(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's out-of-memory killer sends it: `dmesg` or `journalctl -k` tell)" \
            if name == "SIGKILL" else ""
        return f"its process was killed by {name}{hint}; its stage goes on from its newest checkpoint when " \
               "the recipe runs again"
    return f"its process exited with status {code} (its log lines say why)"


def build_seeds(config, stop_after: str, build: Callable[[str, int, str], None]) -> None:
    """Each seed's build up to ``stop_after`` (finished stages are skipped), ``parallel_builds`` at a time.

    ``build(config_json, seed, stop_after)`` runs in a spawned process of its own (never fork a process with
    torch threads). A build that fails, by an error or because its process was killed on its own (by the
    out-of-memory killer, say), is logged at once; the builds beside it go on, and the recipe then stops,
    naming each failed seed. The builds end with the recipe process: on SIGTERM, Ctrl-C, or when it is killed.

    Why processes of our own rather than ``multiprocessing.Pool``: a pool whose worker is killed replaces it
    and loses its task, so the recipe waited for that build's result forever.
    """
    from inspectd.errors import InspectdError

    context = multiprocessing.get_context("spawn")
    payload = config.model_dump_json()
    waiting, running, failures = list(config.seeds), [], {}
    with _sigterm_ends_the_builds():
        try:
            while waiting or running:
                while waiting and len(running) < config.parallel_builds:
                    running.append(_start(context, build, payload, waiting.pop(0), stop_after))
                # A second at a time: Python runs a signal's handler only in the main thread, and a process-wide
                # SIGTERM may wake another (it does when it arrives while the recipe is stopped, as ``kill %1``
                # after Ctrl-Z sends it), so an endless wait would never see it and the builds would go on.
                wait([b.process.sentinel for b in running], timeout=1.0)
                for finished in [b for b in running if not b.process.is_alive()]:
                    running.remove(finished)
                    why = _why_it_failed(finished)
                    finished.error.close()
                    if why is not None:
                        failures[finished.seed] = why
                        log.error("seed %d: the build failed: %s%s", finished.seed, why,
                                  "; the builds beside it go on" if running or waiting else "")
        finally:
            for unfinished in running:
                unfinished.process.terminate()
            for unfinished in running:
                unfinished.process.join()
                unfinished.error.close()
    if failures:
        raise InspectdError("recipe build(s) failed: " + "; ".join(
            f"seed {seed}: {failures[seed]}" for seed in config.seeds if seed in failures))


@dataclass(frozen=True)
class SeedFigures:
    seed: int
    figures: dict[str, dict[str, float]]  # report name (e.g. cgro-drawn_validation) -> overall metrics

    @property
    def selection_value(self) -> float:
        value = self.figures.get(SELECTION_REPORT, {}).get(SELECTION_METRIC, float("nan"))
        return float("-inf") if value != value else value


def seed_figures(config, seed: int) -> SeedFigures:
    record = seed_work_dir(config.work_dir, seed) / "eval" / "stage.json"
    return SeedFigures(seed, json.loads(record.read_text(encoding="utf-8"))["overall"])


def choose_seed(config) -> tuple[int, list[SeedFigures]]:
    """The seed whose CGRO model has the highest pooled pixel AUROC on the drawn validation (first on a tie)."""
    builds = [seed_figures(config, seed) for seed in config.seeds]
    best = max(builds, key=lambda b: b.selection_value)  # max keeps the first of equal values
    log.info("builds: %s; chosen: seed %d", ", ".join(
        f"seed {b.seed} {100 * b.selection_value:.1f}" for b in builds), best.seed)
    return best.seed, builds

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


def _wait_for(result):
    """A build's result, waited for a second at a time: Python runs a signal's handler only in the main thread,
    and a process-wide SIGTERM may wake another (it does when it arrives while the recipe is stopped, as
    ``kill %1`` after Ctrl-Z sends it), so an endless wait would never see it and the builds would go on."""
    while True:
        try:
            return result.get(timeout=1.0)
        except multiprocessing.TimeoutError:
            continue


def build_seeds(config, stop_after: str, build: Callable[[str, int, str], None]) -> None:
    """Each seed's build up to ``stop_after`` (finished stages are skipped), ``parallel_builds`` at a time.

    ``build(config_json, seed, stop_after)`` runs in a spawned process (never fork a process with torch threads);
    a build that fails stops the recipe, naming its seed, once the builds running beside it end. The builds
    end with the recipe process: on SIGTERM, Ctrl-C, or when it is killed."""
    from inspectd.errors import InspectdError

    context = multiprocessing.get_context("spawn")
    payload = config.model_dump_json()
    with _sigterm_ends_the_builds(), context.Pool(
            processes=min(config.parallel_builds, len(config.seeds)), maxtasksperchild=1,
            initializer=_stop_with_recipe, initargs=(os.getpid(),)) as pool:
        pending = {seed: pool.apply_async(build, (payload, seed, stop_after)) for seed in config.seeds}
        failures = []
        for seed, result in pending.items():
            try:
                _wait_for(result)
            except Exception as exc:  # noqa: BLE001 - named with its seed below
                failures.append(f"seed {seed}: {type(exc).__name__}: {exc}")
    if failures:
        raise InspectdError("recipe build(s) failed: " + "; ".join(failures))


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

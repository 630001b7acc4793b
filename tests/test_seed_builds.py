"""A several-seed recipe's builds, each in a real spawned process: how one that fails or is killed ends the recipe.

The builds here are small functions instead of training runs, so the processes, pipes and signals are the
real ones and each case takes seconds; tests/test_recipe.py stops real training builds.
"""

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from inspectd.errors import InspectdError
from inspectd.training.recipe import load_recipe
from inspectd.training.seed_builds import build_seeds
from tests.test_recipe import FOLDER_DATA, _write_recipe


def _finished(payload: str) -> Path:
    return Path(json.loads(payload)["work_dir"])


def fails_or_finishes(payload: str, seed: int, stop_after: str) -> None:
    """Seed 1 raises as a build with bad data does; the others finish after a moment and leave a mark."""
    if seed == 1:
        raise ValueError("data: 3 of 4 photos unreadable")
    time.sleep(2.0)
    (_finished(payload) / f"seed-{seed}.done").write_text(stop_after)


def killed_or_finishes(payload: str, seed: int, stop_after: str) -> None:
    """Seed 1's process is killed on its own (SIGKILL, as the out-of-memory killer does); the others finish."""
    if seed == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(2.0)
    (_finished(payload) / f"seed-{seed}.done").write_text(stop_after)


def _config(tmp_path: Path, seeds: list[int], parallel_builds: int):
    # labelled_folder data, as a several-seed recipe needs; the folder is never read, the builds are stand-ins
    config = load_recipe(_write_recipe(tmp_path, seeds=seeds, parallel_builds=parallel_builds,
                                       data={**FOLDER_DATA, "drawn_validation_seed": 5}))
    config.work_dir.mkdir(parents=True)
    return config


@pytest.mark.timeout(120)
@pytest.mark.parametrize("build, why", [
    (fails_or_finishes, "seed 1: ValueError: data: 3 of 4 photos unreadable"),
    (killed_or_finishes, "seed 1: its process was killed by SIGKILL (the kernel's out-of-memory killer"),
], ids=["raises", "killed on its own"])
def test_a_failed_build_stops_the_recipe_naming_its_seed_after_the_others_finish(tmp_path, caplog, build, why):
    """A build killed on its own used to be lost by the pool, and the recipe waited for it forever; now, as for
    a build that raises, the recipe says which seed failed and why, and the builds beside it, and the one still
    waiting for a free process, finish first (their work is not thrown away)."""
    config = _config(tmp_path, seeds=[1, 2, 3], parallel_builds=2)
    with pytest.raises(InspectdError) as raised:
        build_seeds(config, "warmup", build)
    assert why in str(raised.value)
    assert "seed 2" not in str(raised.value) and "seed 3" not in str(raised.value)
    assert [(config.work_dir / f"seed-{seed}.done").read_text() for seed in (2, 3)] == ["warmup", "warmup"]
    assert f"seed 1: the build failed: {why.removeprefix('seed 1: ')}" in caplog.text
    assert "the builds beside it go on" in caplog.text  # said at once, not after the others end


def test_builds_that_finish_leave_no_process_behind(tmp_path):
    config = _config(tmp_path, seeds=[2, 3], parallel_builds=1)
    build_seeds(config, "eval", fails_or_finishes)
    assert sorted(p.name for p in config.work_dir.iterdir()) == ["seed-2.done", "seed-3.done"]
    assert multiprocessing.active_children() == []

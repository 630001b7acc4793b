"""The recipe's warm-up stage under torchrun: data parallel over processes, one writer (CPU processes, gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

from inspectd.bundle.files import verify_bundle

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tmp_path, name: str, batch_size: int, processes: int, base) -> tuple[dict, subprocess.CompletedProcess]:
    config = {
        "name": name, "output": str(tmp_path / name / "bundle"), "work_dir": str(tmp_path / name), "init": str(base),
        "data": {"kind": "synthetic", "image_size": 96},
        "warmup": {"steps": 2, "batch_size": batch_size, "warmup_steps": 1, "learning_rate": 1e-3},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] if processes > 1 else \
        [sys.executable]
    done = subprocess.run([*launcher, "-m", "inspectd.training.cli", "recipe", "--config", str(path),
                           "--stop-after", "warmup"], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return load_file(tmp_path / name / "warmup" / "model" / "model.safetensors"), done


def test_two_processes_train_the_same_global_batch_as_one_and_one_of_them_writes(format_bundle, tmp_path):
    base = load_file(format_bundle / "model.safetensors")
    one, _ = _train(tmp_path, "single", batch_size=4, processes=1, base=format_bundle)
    two, done = _train(tmp_path, "ddp", batch_size=2, processes=2, base=format_bundle)
    assert "warm-up on 2 process(es)" in done.stderr and done.stderr.count("warm-up on") == 1
    assert done.stderr.count("warmup: finished") == 2  # both ranks finished; only rank 0 saved (the bundle verifies)
    verify_bundle(tmp_path / "ddp" / "warmup" / "model")
    # Examples 0-3 per step either way; the two processes' gradients are averaged (per-process token means,
    # so not bit-equal to one process's token mean over the 4 replies), the update nearly the same.
    moved = sum((one[k].float() - base[k].float()).norm() ** 2 for k in base) ** 0.5
    apart = sum((two[k].float() - one[k].float()).norm() ** 2 for k in base) ** 0.5
    assert moved > 0 and apart < 0.25 * moved, (float(moved), float(apart))
    # A run that drew other examples lands much farther away: the check above sees the sharding.
    other, _ = _train(tmp_path, "other", batch_size=2, processes=1, base=format_bundle)
    far = sum((other[k].float() - one[k].float()).norm() ** 2 for k in base) ** 0.5
    assert far > 4 * apart, (float(far), float(apart))

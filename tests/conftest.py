"""Shared fixtures: real tiny Qwen2.5-VL bundles built once per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def _offline(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory) -> Path:
    """Untrained tiny model: real architecture, meaningless replies."""
    from inspectd.model.tiny import save_tiny_bundle

    path = tmp_path_factory.mktemp("bundles") / "tiny-random"
    save_tiny_bundle(path)
    return path


@pytest.fixture(scope="session")
def format_bundle(tmp_path_factory) -> Path:
    """Tiny model given a short supervised warm-up so it answers in the R1 format."""
    from inspectd.bundle.manifest import BundleManifest, PromptSpec
    from inspectd.bundle.save import save_bundle
    from inspectd.data.synthetic import make_sample
    from inspectd.model.tiny import build_tiny_model, tiny_model_card
    from inspectd.model.tiny_spec import TinySpec
    from inspectd.real.params import RealParams
    from inspectd.training.warmup import supervised_warmup
    from inspectd.training.warmup_config import ReplyExample, WarmupSettings

    model, processor = build_tiny_model(TinySpec(seed=1))

    def sample(i: int) -> ReplyExample:
        s = make_sample(50_000 + i, 112)
        return ReplyExample(s.image, f"<think>{s.description()}</think><answer>{'yes' if s.anomalous else 'no'}</answer>")

    supervised_warmup(
        model, processor, PromptSpec(), sample, WarmupSettings(steps=150, batch_size=8, learning_rate=3e-3, warmup_steps=10)
    )
    path = tmp_path_factory.mktemp("bundles") / "tiny-format"
    manifest = BundleManifest(
        name="tiny-format", base_model="tiny test model", max_new_tokens=48, real=RealParams(layer_start=0)
    )
    save_bundle(model, processor, path, manifest, tiny_model_card(TinySpec(seed=1), "tiny-format"))
    return path


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def postgres_server():
    from tests.postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        if os.environ.get("INSPECTD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but unavailable: {exc}")
        pytest.skip(f"PostgreSQL store tests skipped: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The same store tests against SQLite and a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'store.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.fresh_database(f"t_{abs(hash(request.node.nodeid)) % 10**9}")


@pytest.fixture()
def open_folder():
    """A folder any user can enter (pytest's tmp_path sits under a 0700 folder)."""
    folder = tempfile.mkdtemp(prefix="inspectd-test-", dir="/tmp")
    os.chmod(folder, 0o755)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)

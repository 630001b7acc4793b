"""The model worker's batch handling: CUDA out-of-memory splits, a bad image is isolated."""

from __future__ import annotations

import queue
from pathlib import Path

import torch

from inspectd.bundle.load import load_bundle
from inspectd.daemon.items import InFlight
from inspectd.daemon.worker import ModelWorker
from inspectd.data.synthetic import make_sample
from inspectd.inspection.inspector import Inspector, InspectorOptions, NamedImage


class _LimitedInspector(Inspector):
    """The real inspector, on a 'GPU' that holds at most two images per batch.

    CUDA cannot run on this machine, so the out-of-memory error is raised
    here the way torch raises it; the inference itself is the real one.
    """

    def __init__(self, *args, poison: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.poison = poison

    def inspect_images(self, images):
        self.batches.append(len(images))
        if len(images) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.poison and any(Path(i.source).name == self.poison for i in images):
            raise RuntimeError("broken image tensor")
        return super().inspect_images(images)


def _worker(bundle_path, **kwargs):
    bundle = load_bundle(bundle_path, "cpu")
    inspector = _LimitedInspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=8), **kwargs)
    return ModelWorker(inspector, None, queue.Queue(), InFlight(), 8, 0), inspector


def _images(n):
    return [NamedImage(f"/drop/{i}.png", make_sample(70_000 + i, 96).image) for i in range(n)]


def test_out_of_memory_splits_the_batch_until_it_fits(format_bundle):
    worker, inspector = _worker(format_bundle)
    results = worker._infer(_images(7))
    assert [r.source for r in results] == [f"/drop/{i}.png" for i in range(7)]
    assert all(r.verdict.value != "failed" for r in results)
    assert inspector.batches[0] == 7 and max(b for b in inspector.batches if b <= 2) == 2


def test_an_image_that_breaks_its_batch_fails_alone(format_bundle):
    worker, _ = _worker(format_bundle, poison="1.png")
    results = worker._infer(_images(2))
    assert results[0].verdict.value != "failed"
    assert results[1].verdict.value == "failed" and "broken image tensor" in results[1].error

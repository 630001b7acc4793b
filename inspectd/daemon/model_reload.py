"""Swap the model while the daemon runs: load beside the old one, verify, try a canary, swap between batches.

``systemctl reload inspectd`` (SIGHUP) re-reads the config. When the bundle
there changed (another folder, or a bundle re-published in place: its
manifest digest differs) the new bundle is loaded beside the one in use, its
file hashes verified (in a new model process) and a canary image inspected;
only then does the model worker take it, between two batches, and the old
model's process is closed. On any failure the
old model stays and the error is logged. Changes of ReAL parameters, the
threshold, ``max_new_tokens`` or the batch size apply the same way (a new
model process, weights loaded again). ``model.device`` and ``model.threads`` need a restart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import Engine

from inspectd.bundle.files import manifest_digest
from inspectd.config import ImageSettings, Settings
from inspectd.daemon.model_process import BundleInfo, ModelProcess
from inspectd.daemon.recorder import register_bundle
from inspectd.errors import InspectdError
from inspectd.inspection.images import load_image
from inspectd.inspection.inspector import NamedImage
from inspectd.inspection.result import Verdict

log = logging.getLogger("inspectd.reload")


@dataclass(frozen=True)
class ActiveModel:
    """What the worker inspects with (the model's process), and the bundle row its results are recorded under."""

    bundle: BundleInfo
    inspector: ModelProcess
    bundle_id: int
    batch_size: int
    images: ImageSettings  # size limits checked before an image reaches the model


def activate(settings: Settings, engine: Engine) -> ActiveModel:
    """Start a model process on the config's bundle (it loads and verifies it) and register it in the store."""
    process = ModelProcess(settings)
    try:
        bundle_id = register_bundle(engine, process.bundle)
    except Exception:
        process.close()
        raise
    return ActiveModel(process.bundle, process, bundle_id, settings.model.batch_size, settings.images)


def canary_problem(model: ActiveModel, settings: Settings) -> str | None:
    """Why the candidate must not replace the model in use, or None.

    The canary is ``model.canary_image`` (best: a known part from the line) or a plain grey image; the reply
    must parse, and with ``model.canary_verdict`` set the verdict must be that one.
    """
    path = settings.model.canary_image
    try:
        image = load_image(path, settings.images.max_pixels, settings.images.max_file_bytes) if path else \
            Image.fromarray(np.full((224, 224, 3), 128, dtype=np.uint8))
    except InspectdError as exc:
        return f"canary image unusable: {exc}"
    name = str(path) if path else "grey canary image"
    result = model.inspector.inspect_images([NamedImage(name, image)])[0]
    if result.verdict is Verdict.FAILED:
        return f"canary {name}: inspection failed ({result.error})"
    if result.verdict is Verdict.UNKNOWN:
        return f"canary {name}: the reply does not parse ({result.parse_status}): {result.reply!r}"
    expected = settings.model.canary_verdict
    if expected is not None and result.verdict is not expected:
        return f"canary {name}: verdict {result.verdict.value} (score {result.score:.3f}), expected {expected.value}"
    return None


class ModelReloader:
    """Prepares a new model on its own thread (a 7B takes minutes to load) and hands it to ``install``."""

    def __init__(self, engine: Engine, current: ActiveModel, settings: Settings, install) -> None:
        self.engine = engine
        self.current = current
        self.settings = settings
        self.install = install  # called with the new ActiveModel; the worker swaps it in between batches
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def request(self, fresh: Settings, done=None) -> bool:
        """Start preparing ``fresh``'s model; False (and logged) while an earlier reload is still loading."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                log.warning("reload: the previous model reload is still running; this request is ignored")
                return False
            self._thread = threading.Thread(target=self._run, args=(fresh, done), name="inspectd-reload",
                                            daemon=True)
            self._thread.start()
        return True

    def _run(self, fresh: Settings, done) -> None:
        try:
            self._prepare(fresh)
        except Exception as exc:  # any failure keeps the model in use
            log.error("reload: keeping bundle %s (%s): %s", self.current.bundle.manifest.name,
                      self.current.bundle.digest[:12], exc, exc_info=not isinstance(exc, (InspectdError, OSError)))
        finally:
            if done is not None:
                done()

    def _prepare(self, fresh: Settings) -> None:
        old = self.settings
        for key in ("device", "threads"):
            if getattr(fresh.model, key) != getattr(old.model, key):
                log.warning("reload: model.%s changed (%s -> %s): applied at the next restart only", key,
                            getattr(old.model, key), getattr(fresh.model, key))
        digest = manifest_digest(Path(fresh.model.bundle))
        same_bundle = digest == self.current.bundle.digest and \
            Path(fresh.model.bundle).resolve() == Path(self.current.bundle.path).resolve()
        wiring = ("real", "threshold", "images")
        if same_bundle and all(getattr(fresh, k) == getattr(old, k) for k in wiring) and \
                (fresh.model.max_new_tokens, fresh.model.batch_size) == (old.model.max_new_tokens,
                                                                          old.model.batch_size):
            log.info("reload: model settings unchanged; bundle %s (%s) stays", self.current.bundle.manifest.name,
                     digest[:12])
            return
        pinned = fresh.model_copy(update={"model": fresh.model.model_copy(update={"device": old.model.device})})
        log.info("reload: loading bundle %s beside %s", fresh.model.bundle, self.current.bundle.manifest.name)
        candidate = activate(pinned, self.engine)  # a new model process, also when only the wiring changed
        problem = canary_problem(candidate, fresh)
        if problem is not None:
            candidate.inspector.close()
            raise InspectdError(f"new model refused: {problem}")
        self.install(candidate)
        self.current, self.settings = candidate, fresh
        log.info("reload: bundle %s (%s) verified and passed the canary; the next batch uses it",
                 candidate.bundle.manifest.name, candidate.bundle.digest[:12])

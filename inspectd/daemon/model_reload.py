"""Apply the config file while the daemon runs: load a new model beside the old one, verify, try a canary, swap
between batches, with the alert rules of the same file.

``systemctl reload inspectd`` (SIGHUP) re-reads the config. When the bundle
there changed (another folder, or a bundle re-published in place: its
manifest digest differs) the new bundle is loaded beside the one in use, its
file hashes verified (in a new model process) and a canary image inspected;
only then does the model worker take it, between two batches, and the old
model's process is closed. On any failure the
old model stays and the error is logged. Changes of ReAL parameters, the
threshold, ``max_new_tokens`` or the batch size apply the same way (a new
model process, weights loaded again). ``model.device`` and ``model.threads`` need a restart.

A file is applied whole or not at all: its alert rules travel with its model (the record stage switches both at
the same row), and a file whose model is refused leaves the old rules too. One reload runs at a time; a SIGHUP
during one is remembered (several coalesce) and the file is read again when it ends, so the daemon always ends on
the newest file, never on a mix of two.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import Engine

from inspectd.bundle.files import manifest_digest, verify_bundle
from inspectd.config import AlertSettings, ImageSettings, Settings
from inspectd.daemon.model_process import BundleInfo, ModelProcess
from inspectd.daemon.recorder import register_bundle
from inspectd.errors import ConfigError, InspectdError
from inspectd.inspection.images import load_image
from inspectd.inspection.named_image import NamedImage
from inspectd.verdict import Verdict

log = logging.getLogger("inspectd.reload")


@dataclass(frozen=True)
class ActiveModel:
    """What the worker inspects with (the model's process), the bundle row its results are recorded under, and the
    alert rules its rows are judged by: all from one read of the config file."""

    bundle: BundleInfo
    inspector: ModelProcess
    bundle_id: int
    batch_size: int
    images: ImageSettings  # size limits checked before an image reaches the model
    alerts: AlertSettings


def register(settings: Settings, engine: Engine, process: ModelProcess) -> ActiveModel:
    """Record the bundle a started model process loaded in the store; the process is closed if that fails."""
    try:
        bundle_id = register_bundle(engine, process.bundle)
    except Exception:
        process.close()
        raise
    return ActiveModel(process.bundle, process, bundle_id, settings.model.batch_size, settings.images,
                       settings.alerts)


def activate(settings: Settings, engine: Engine) -> ActiveModel:
    """Start a model process on the config's bundle (it loads and verifies it) and register it in the store."""
    return register(settings, engine, ModelProcess(settings))


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


@dataclass(frozen=True)
class ReloadHooks:
    """How the reloader reaches the daemon. ``reloading`` and ``done`` are systemd's RELOADING=1 and READY=1 (with
    a status): called in that order, once per run of reloads, however many requests it absorbed."""

    read: Callable[[], Settings]  # the config file as it is now
    install: Callable[[ActiveModel], None]  # the worker swaps it in between batches
    reloading: Callable[[], object]
    done: Callable[[str], object]
    # the applied file's model.challenger, after the champion's swap: a challenger that fails is logged by it,
    # never refusing the champion's reload
    challenger: Callable[[Settings], None] | None = None
    # after a read of the file: None when its model was applied, else why it was refused (a requested promotion
    # or rollback is marked with it, ``model_selection.py``)
    outcome: Callable[[str | None], None] | None = None


class ModelReloader:
    """Applies the config file on a thread of its own (a 7B takes minutes to load), one reload at a time.

    ``request`` never drops a reload: during one, it is remembered, and when that one ends the file is read again
    and applied whole (the newest file wins; requests in between coalesce).
    """

    def __init__(self, engine: Engine, current: ActiveModel, settings: Settings, hooks: ReloadHooks) -> None:
        self.engine = engine
        self.current = current
        self.settings = settings
        self.hooks = hooks
        self._lock = threading.Lock()
        self._pending = False  # a request came that no reload has read the file for yet
        self._running = False

    def request(self) -> bool:
        """Reload the config file: now (True), or as soon as the reload in progress ends (False)."""
        with self._lock:
            self._pending = True
            if self._running:
                log.info("reload: a reload is in progress; the configuration is read again when it ends "
                         "(the newest file is applied whole)")
                return False
            self._running = True
            self.hooks.reloading()
        threading.Thread(target=self._run, name="inspectd-reload", daemon=True).start()
        return True

    def _run(self) -> None:
        """Reload until no request is left; the last outcome is reported."""
        status = "reloaded"
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    self.hooks.done(status)  # under the lock: a newer run's RELOADING=1 comes after it
                    return
                self._pending = False
            try:
                status = self._reload_once()
            except Exception:  # never leave the reloader "running" forever: later requests would wait for nothing
                log.exception("reload: failed; the model and alert rules in use stay")
                status = "reload failed (see the log)"

    def _reload_once(self) -> str:
        """Read the file and apply all of it, or nothing of it; returns the status for systemd."""
        try:
            fresh = self.hooks.read()
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded, keeping the old alert rules and model: %s", exc)
            return "reload refused: configuration invalid"
        try:
            candidate = self._prepare(fresh)
        except Exception as exc:  # any failure keeps the model in use, and the rules that go with it
            log.error("reload: keeping bundle %s (%s) and the old alert rules: %s", self.current.bundle.manifest.name,
                      self.current.bundle.digest[:12], exc, exc_info=not isinstance(exc, (InspectdError, OSError)))
            self._outcome(str(exc) or type(exc).__name__)
            return "reload refused: new model refused"
        self.hooks.install(candidate)
        if candidate.inspector is not self.current.inspector:
            log.info("reload: bundle %s (%s) verified and passed the canary; the next batch uses it",
                     candidate.bundle.manifest.name, candidate.bundle.digest[:12])
        self.current, self.settings = candidate, fresh
        log.info("SIGHUP: reloaded %d alert rule(s) and %d channel(s), threshold %s, bundle %s (%s)",
                 len(fresh.alerts.rules), len(fresh.alerts.channels),
                 "the bundle's" if fresh.threshold is None else fresh.threshold, candidate.bundle.manifest.name,
                 candidate.bundle.digest[:12])
        if self.hooks.challenger is not None:
            try:
                self.hooks.challenger(fresh)
            except Exception:  # noqa: BLE001 (the champion's reload is done and stays)
                log.exception("reload: the challenger's settings could not be applied; the champion's reload stands")
        self._outcome(None)
        return "reloaded"

    def _outcome(self, problem: str | None) -> None:
        if self.hooks.outcome is None:
            return
        try:
            self.hooks.outcome(problem)
        except Exception:  # noqa: BLE001 (the store may refuse the mark; the reload's result stands)
            log.exception("reload: its outcome could not be recorded in the store")

    def _prepare(self, fresh: Settings) -> ActiveModel:
        """The model ``fresh`` asks for with its alert rules: the one in use when no model setting changed, else a
        new model process that passed the canary."""
        old = self.settings
        for key in ("device", "threads"):
            if getattr(fresh.model, key) != getattr(old.model, key):
                log.warning("reload: model.%s changed (%s -> %s): applied at the next restart only", key,
                            getattr(old.model, key), getattr(fresh.model, key))
        digest = manifest_digest(Path(fresh.model.bundle))
        same_bundle = digest == self.current.bundle.digest and \
            Path(fresh.model.bundle).resolve() == Path(self.current.bundle.path).resolve()
        if same_bundle:
            # weights replaced in place keep bundle.json, hence the digest: every file is hashed again now (a
            # BundleError refuses the reload, naming the file), not found at the next restart
            verify_bundle(Path(fresh.model.bundle))
        wiring = ("real", "threshold", "images")
        if same_bundle and all(getattr(fresh, k) == getattr(old, k) for k in wiring) and \
                (fresh.model.max_new_tokens, fresh.model.batch_size) == (old.model.max_new_tokens,
                                                                          old.model.batch_size):
            log.info("reload: model settings unchanged; bundle %s (%s) stays", self.current.bundle.manifest.name,
                     digest[:12])
            return replace(self.current, alerts=fresh.alerts)
        pinned = fresh.model_copy(update={"model": fresh.model.model_copy(update={"device": old.model.device})})
        log.info("reload: loading bundle %s beside %s", fresh.model.bundle, self.current.bundle.manifest.name)
        candidate = activate(pinned, self.engine)  # a new model process, also when only the wiring changed
        problem = canary_problem(candidate, fresh)
        if problem is not None:
            candidate.inspector.close()
            raise InspectdError(f"new model refused: {problem}")
        return candidate

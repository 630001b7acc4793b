"""A challenger bundle inspecting the line's parts in the shadow of the champion (``model.challenger``).

Why: a plant that swaps models with SIGHUP had no way to measure a candidate on its own parts first. Here the
candidate runs in a model process of its own (``ModelProcess``, as the champion's: a crash or an out-of-memory kill
of the challenger never reaches the champion's process) and sees the parts the champion recorded:

- after the champion's row is committed and its photo archived, the recorder hands (inspection id, sha256, path)
  to a bounded ``ShadowQueue``; when it is full the oldest entry goes (counted and logged), so the challenger never
  holds the line back;
- ``idle`` mode inspects only while the champion has nothing queued or in flight (the line's throughput is kept,
  a busy line leaves parts uninspected); ``sampled`` mode takes a fixed share of the parts, chosen by their sha256
  (the same parts on every box and run), and inspects them even while the champion is busy;
- the photo is read again through ``PhotoRoots``, which checks its bytes against the row's sha256 (a photo rewritten
  since is skipped with a log line), and the result becomes a ``challenger_results`` row. The challenger never
  alerts, never moves a file and never changes an inspection row.

Every start, load and swap of the challenger's process happens on the shadow thread, so the daemon is ready (and a
SIGHUP answered) without waiting for the challenger's weights, and a challenger that does not load is logged and
left off while the champion goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from inspectd.bundle.files import manifest_digest, verify_bundle
from inspectd.config import ChallengerSettings, Settings, challenger_settings
from inspectd.daemon.challenger_results import ChallengerWriter
from inspectd.daemon.model_process import ModelProcess, ModelProcessDied
from inspectd.daemon.recorder import register_bundle
from inspectd.data.archived_photos import PhotoChanged, PhotoRoots
from inspectd.errors import InspectdError
from inspectd.inspection.named_image import NamedImage
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.challenger")

MAX_DEATHS = 3  # the challenger's process died this many times in a row (no result between): it is left off
_IDLE_POLL_S = 0.05


@dataclass(frozen=True)
class ShadowItem:
    """A part the champion recorded, as the challenger needs it: its row's id, sha256 and where its photo is."""

    inspection_id: int
    sha256: str
    source_path: str
    archived_path: str | None

    def record(self) -> dict:
        """What ``PhotoRoots`` reads a photo through (the row's own fields)."""
        return {"id": self.inspection_id, "sha256": self.sha256, "source_path": self.source_path,
                "archived_path": self.archived_path}


def sampled(sha256: str, fraction: float) -> bool:
    """Whether the part with these bytes is in the sampled share: the first 64 bits of its sha256 as a fraction of
    2**64, so the same parts are chosen on every run and box, and about ``fraction`` of them."""
    return fraction >= 1.0 or int(sha256[:16], 16) < fraction * 2 ** 64


class ShadowQueue:
    """Bounded; a full queue drops its oldest entry (counted): the record stage never waits for the challenger."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: collections.deque[ShadowItem] = collections.deque()
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, item: ShadowItem) -> None:
        with self._ready:
            if len(self._items) >= self.capacity:
                lost = self._items.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("challenger: shadow queue full (%d); inspection #%d left uninspected by the "
                                "challenger (%d dropped so far)", self.capacity, lost.inspection_id, self.dropped)
            self._items.append(item)
            self._ready.notify()

    def take(self, most: int, timeout: float) -> list[ShadowItem]:
        """Up to ``most`` entries, oldest first; empty after ``timeout`` seconds with none."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return [self._items.popleft() for _ in range(min(most, len(self._items)))]

    def waiting(self) -> bool:
        with self._ready:
            return bool(self._items)

    def clear(self) -> int:
        with self._ready:
            count = len(self._items)
            self._items.clear()
            return count

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)


@dataclass
class _Running:
    """The challenger in use: its settings, its model process and its bundle's row."""

    config: ChallengerSettings
    process: ModelProcess
    bundle_id: int


class ShadowWorker(LoopThread):
    """Starts, runs, restarts and stops the challenger's model process, and inspects the parts offered to it."""

    def __init__(self, engine: Engine, settings: Settings, champion_idle: Callable[[], bool],
                 paused: threading.Event | None = None, capacity: int | None = None) -> None:
        super().__init__("inspectd-challenger")
        self.engine = engine
        self.champion_idle = champion_idle  # nothing queued or in flight for the champion
        self.paused = paused or threading.Event()  # the disk guard's: no challenger row either while set
        self.queue = ShadowQueue(capacity or settings.queue.capacity)
        self.writer = ChallengerWriter(engine, settings.store.save_maps)
        self._lock = threading.Lock()
        self._settings = settings  # the config file the shadow thread applies (a SIGHUP replaces it)
        self._applied: Settings | None = None  # the one it applied last
        self._offered = settings.model.challenger  # what ``offer`` filters by, at once on a SIGHUP
        self._running: _Running | None = None
        self._deaths = 0
        self.written = 0

    # --- the record stage's side -------------------------------------------------------------------------------

    def offer(self, inspection_id: int, sha256: str, source_path: str, archived_path: str | None) -> None:
        """A part the champion recorded and archived; queued for the challenger when its mode takes it."""
        config = self._offered
        if config is None or (config.mode == "sampled" and not sampled(sha256, config.sample_fraction)):
            return
        self.queue.put(ShadowItem(inspection_id, sha256, source_path, archived_path))

    # --- the reloader's side -----------------------------------------------------------------------------------

    def reconfigure(self, fresh: Settings) -> None:
        """A config file SIGHUP applied: the shadow thread starts, restarts or stops the challenger from it (never
        on the reloader's thread: the champion's reload does not wait for the challenger's weights)."""
        with self._lock:
            self._settings = fresh
        if fresh.model.challenger is None and self._offered is not None:
            log.info("reload: model.challenger removed; the challenger stops after the part it is on")
        self._offered = fresh.model.challenger  # its mode and share apply to the parts recorded from now on

    # --- the shadow thread -------------------------------------------------------------------------------------

    def stop(self, timeout: float | None = 30) -> None:
        """Stop after the part in progress and close the challenger's process; parts still queued are left."""
        if self._thread.ident is not None:
            super().stop(timeout)
        self._stop.set()
        left = self.queue.clear()
        if left:
            log.info("challenger: %d queued part(s) left uninspected at the stop", left)
        self._close("the daemon stops")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # the shadow thread goes on whatever breaks: the champion never depends on it
                log.exception("challenger: unexpected error; going on")
                self._stop.wait(1.0)

    def _step(self) -> None:
        with self._lock:
            settings = self._settings
        if settings is not self._applied:
            self._apply(settings)
        running = self._running
        if running is None:
            self._stop.wait(0.2)
            return
        if running.process.death() is not None:
            self._died(running, f"{running.process.death()} while idle", None)
            return
        idle_mode = running.config.mode == "idle"
        if not self.queue.waiting():
            self.queue.take(0, 0.2)  # wait for an entry without taking it
            return
        if self.paused.is_set() or (idle_mode and not self.champion_idle()):
            self._stop.wait(_IDLE_POLL_S)
            return
        # idle: one part at a time, so a file arriving waits for one challenger image at most
        items = self.queue.take(1 if idle_mode else settings.model.batch_size, 0)
        if items:
            self._inspect(running, items)

    def _apply(self, settings: Settings) -> None:
        """Bring the challenger in line with ``settings``: keep, re-verify, start, replace or stop its process."""
        previous, self._applied = self._applied, settings
        wanted = settings.model.challenger
        running = self._running
        if wanted is None:
            if running is not None:
                self._close("model.challenger removed")
                dropped = self.queue.clear()
                log.info("challenger stopped: model.challenger removed%s",
                         f" ({dropped} queued part(s) dropped)" if dropped else "")
            self._offered = None
            return
        if running is not None and previous is not None and self._same_process(running, wanted, settings,
                                                                                previous):
            try:  # weights replaced in place keep bundle.json: every file is hashed again, as for the champion
                verify_bundle(Path(wanted.bundle))
            except InspectdError as exc:
                log.error("reload: the challenger's bundle changed in place and is refused (%s); the challenger "
                          "stops", exc)
                self._close("its bundle was refused")
                self._offered = None
                self.queue.clear()
                return
            if (wanted.mode, wanted.sample_fraction) != (running.config.mode, running.config.sample_fraction):
                log.info("reload: challenger %s now in %s", running.process.bundle.manifest.name, _mode(wanted))
            running.config = wanted
            self._offered = wanted
            return
        self._start(settings, wanted)

    def _same_process(self, running: _Running, wanted: ChallengerSettings, settings: Settings,
                      previous: Settings) -> bool:
        """The process in use fits ``wanted``: same bundle folder and digest, device and loading settings."""
        try:
            digest = manifest_digest(Path(wanted.bundle))
        except InspectdError:
            return False
        return (Path(wanted.bundle).resolve() == Path(running.process.bundle.path).resolve()
                and digest == running.process.bundle.digest
                and challenger_settings(settings).model == challenger_settings(previous).model
                and settings.images == previous.images)

    def _start(self, settings: Settings, wanted: ChallengerSettings) -> None:
        """A new challenger process (it verifies the bundle's hashes before loading); the old one, if any, goes.
        Parts recorded while it loads are queued (bounded) and inspected once it runs."""
        self._close("replaced" if self._running is not None else "")
        self._offered = wanted
        child = challenger_settings(settings)
        log.info("starting the challenger's model process: bundle %s, device %s, %s", wanted.bundle,
                 child.model.device, _mode(wanted))
        started = time.perf_counter()
        try:
            process = ModelProcess(child, name="inspectd-challenger")
        except Exception as exc:  # noqa: BLE001 (any load failure leaves the challenger off, never the champion)
            self._offered = None
            self.queue.clear()
            log.error("challenger disabled: bundle %s does not load (%s); the champion goes on", wanted.bundle, exc)
            return
        try:
            bundle_id = register_bundle(self.engine, process.bundle)
        except Exception as exc:  # noqa: BLE001
            process.close()
            self._offered = None
            self.queue.clear()
            log.error("challenger disabled: its bundle could not be registered in the store (%s)", exc)
            return
        self._running = _Running(wanted, process, bundle_id)
        self._deaths = 0
        self._offered = wanted
        log.info("challenger ready: bundle %s (%s) on %s in %s, shadowing the champion (pid %s, %.1f s)",
                 process.bundle.manifest.name, process.bundle.digest[:12], process.bundle.device, _mode(wanted),
                 process.pid, time.perf_counter() - started)

    def _close(self, why: str) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        running.process.close()
        if why:
            log.info("challenger %s (%s) closed: %s", running.process.bundle.manifest.name,
                     running.process.bundle.digest[:12], why)

    def _died(self, running: _Running, reason: str, items: list[ShadowItem] | None) -> None:
        """Restart a dead challenger process, or leave the challenger off after ``MAX_DEATHS`` in a row."""
        self._deaths += 1
        lost = f" on inspection(s) {', '.join(f'#{i.inspection_id}' for i in items)}" if items else ""
        self._running = None
        running.process.close(timeout=5)
        if self._deaths >= MAX_DEATHS:
            self._offered = None
            self.queue.clear()
            log.error("challenger disabled: its model process died %d times in a row (last: %s%s); the champion "
                      "goes on; fix the challenger and send SIGHUP to try again", self._deaths, reason, lost)
            return
        log.error("challenger: %s%s; restarting its model process (the champion goes on)", reason, lost)
        deaths = self._deaths
        self._start(self._applied, running.config)
        self._deaths = deaths  # a result resets it, not a start

    def _inspect(self, running: _Running, items: list[ShadowItem]) -> None:
        roots = PhotoRoots.of(self._applied)
        images: list[tuple[ShadowItem, NamedImage]] = []
        for item in items:
            started = time.perf_counter()
            try:
                photo = roots.photo(item.record())
            except PhotoChanged as exc:
                log.warning("challenger: skipped: %s", exc)
                continue
            if photo is None:
                log.warning("challenger: skipped inspection #%d: its photo %s is gone or unreadable",
                            item.inspection_id, item.archived_path or item.source_path)
                continue
            images.append((item, NamedImage(item.archived_path or item.source_path, photo,
                                            time.perf_counter() - started)))
        if not images:
            return
        try:
            results = running.process.inspect_images([image for _, image in images])
        except ModelProcessDied as exc:
            self._died(running, str(exc), [item for item, _ in images])
            return
        except Exception as exc:  # noqa: BLE001 (a failed batch: each part alone, then a failed row)
            if len(images) > 1:
                for item, _ in images:
                    if self._running is running:
                        self._inspect(running, [item])
                return
            results = [running.process.failed(images[0][1].source, f"model error: {type(exc).__name__}: {exc}")]
        self._deaths = 0
        for (item, _), result in zip(images, results):
            if self.writer.write(item.inspection_id, running.bundle_id, result):
                self.written += 1
                log.info("challenger #%d %s score=%s", item.inspection_id, result.verdict.value,
                         "n/a" if result.score is None else f"{result.score:.3f}")


def _mode(config: ChallengerSettings) -> str:
    return "idle mode" if config.mode == "idle" else f"sampled mode ({config.sample_fraction:g} of the parts)"

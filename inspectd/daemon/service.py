"""``inspectd run``: wire watch -> queue -> model -> ReAL -> store -> alerts.

Threads: the watchdog observer and the stability checker feed ``ready``; the
intake moves files into the bounded work queue (claiming each path once);
the model worker batches, infers and records; the relay sends alerts. The
main thread handles signals, periodic rescans, the health check (every
thread alive, the model process too) and systemd's watchdog.

Start order: the model process first (it verifies the bundle's hashes before
loading), the store after it, so a corrupt bundle exits 2 having created or
migrated no store. Each loading step is logged as it ends, with its seconds
(the model process logs its own: imports, hashes, weights), then "inspectd
ready" with the seconds since the process started; the ready file
(``ready_file``) is written then and removed at the stop, for whoever waits on
the daemon outside systemd (``demo-feed --wait-ready``).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from inspectd.alerts.outbox import add_system_alerts
from inspectd.alerts.relay import AlertRelay
from inspectd.config import Settings
from inspectd.daemon.archive import Archiver
from inspectd.daemon.archive_repair import ArchiveRepair
from inspectd.daemon.challenger import ShadowWorker
from inspectd.daemon.disk_guard import DiskGuard, FreeSpace, GuardChange, free_bytes
from inspectd.daemon.metrics import DaemonMetrics, MetricsServer
from inspectd.daemon.model_process import ModelProcess
from inspectd.daemon.model_reload import ActiveModel, ModelReloader, ReloadHooks, register
from inspectd.daemon.model_selection import ModelSelector
from inspectd.daemon.items import InFlight, ReadyFile
from inspectd.daemon.ready_file import clear_stale, process_age_s, ready_file_path, remove_ready, write_ready
from inspectd.daemon.recorder import InspectionRecorder
from inspectd.daemon.retention import Retention
from inspectd.daemon.systemd import SystemdNotifier
from inspectd.daemon.watch import FolderWatcher
from inspectd.daemon.worker import ModelWorker
from inspectd.errors import ConfigError
from inspectd.store.clock import utcnow
from inspectd.store.database import migrate, open_engine
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.daemon")


class _Intake(LoopThread):
    """Moves ready files into the bounded queue without ever blocking the observer."""

    def __init__(self, ready: queue.Queue, work: queue.Queue, in_flight: InFlight, paused: threading.Event) -> None:
        super().__init__("inspectd-intake")
        self.ready = ready
        self.work = work
        self.in_flight = in_flight
        self.paused = paused  # disk guard: files stay in the folder; the rescan on resume offers them again

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item: ReadyFile = self.ready.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.paused.is_set() or not self.in_flight.claim(item.path):
                continue
            while not self._stop.is_set():
                try:
                    self.work.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            else:
                self.in_flight.release(item.path)


class Daemon:
    def __init__(self, settings: Settings, notifier: SystemdNotifier | None = None,
                 free_space: FreeSpace = free_bytes) -> None:
        if not settings.watch.folders:
            raise ConfigError(f"{settings.source}: watch.folders: at least one folder is needed to run the daemon")
        self.settings = settings
        self.notifier = notifier or SystemdNotifier()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.free_space = free_space
        self._started = time.monotonic()
        self.ready_path = ready_file_path(settings)
        self._shadow: ShadowWorker | None = None
        self.selector = ModelSelector(Path(settings.source))

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def request_reload(self, *_args) -> None:
        self._reload.set()

    def run(self) -> int:
        settings = self.settings
        ready: queue.Queue = queue.Queue()
        watcher = FolderWatcher(settings.watch, ready)  # first: it locks the drop folders (refused: nothing started)
        clear_stale(self.ready_path)  # a crashed run's file: never "ready" while this one loads
        # the pair a promotion or rollback applied, read before the model process starts (model_selection.py)
        settings = self.settings = self.selector.at_start(settings)
        self.notifier.status("loading model")
        engine, model = _open(settings)
        try:
            return self._serve(settings, ready, watcher, engine, model)
        except BaseException:
            remove_ready(self.ready_path)
            model.inspector.close()  # its process ignores SIGTERM: left open, it would keep this one from exiting
            if self._shadow is not None:
                self._shadow.stop(timeout=5)  # the challenger's process too
            engine.dispose()
            raise

    def _serve(self, settings: Settings, ready: queue.Queue, watcher: FolderWatcher, engine: Engine,
               model: ActiveModel) -> int:
        """From an open store and a loaded model to the main loop and a clean stop."""
        bundle = model.bundle
        relay = AlertRelay(engine, settings.alerts)
        archiver = Archiver(settings.archive)
        metrics = DaemonMetrics(engine)
        metrics.use_bundle(bundle)
        guard = DiskGuard(settings, self.free_space)
        work: queue.Queue = queue.Queue(maxsize=settings.queue.capacity)
        in_flight = InFlight()
        # The challenger (model.challenger) sees the parts the champion recorded, on its own thread and process; it
        # runs in idle mode only while nothing waits for the champion (the watcher's, the intake's and the batches'
        # files are all counted in ``ready``, ``work`` and ``in_flight``).
        shadow = ShadowWorker(engine, settings, lambda: not len(in_flight) and work.empty() and ready.empty(),
                              guard.paused)
        self._shadow = shadow
        recorder = InspectionRecorder(engine, model.bundle_id, model.inspector.real, archiver, settings.alerts,
                                      settings.store.save_maps, relay.wake, metrics, on_recorded=shadow.offer)
        repair = ArchiveRepair(engine, archiver)
        repair.run()
        # cameras: on a PostgreSQL store shared by several boxes, this box removes only its own cameras' files
        retention = Retention(engine, settings.retention, settings.archive, on_pass=metrics.retained,
                              cameras=[folder.camera for folder in settings.watch.folders])
        self._guard_changed(guard.check(), engine, relay)
        worker = ModelWorker(model.inspector, recorder, work, in_flight, model.batch_size, settings.queue.max_wait_ms,
                             guard.paused, model.images)

        def install(new: ActiveModel) -> None:
            worker.swap(new)  # the model and its alert rules, from the same batch on
            relay.reload(new.alerts)
            metrics.use_bundle(new.bundle)

        reloader = ModelReloader(engine, model, settings, ReloadHooks(
            read=lambda: self.selector.read(engine), install=install, reloading=self.notifier.reloading,
            done=self.notifier.ready, challenger=shadow.reconfigure,
            outcome=lambda problem: self.selector.outcome(engine, problem)))
        intake = _Intake(ready, work, in_flight, guard.paused)
        relay.start()
        retention.start()
        worker.start()
        challenger = settings.model.challenger
        if challenger is not None:
            log.info("challenger: bundle %s in %s mode%s on %s; loading in its own model process beside the "
                     "champion", challenger.bundle, challenger.mode,
                     f" ({challenger.sample_fraction:g} of the parts)" if challenger.mode == "sampled" else "",
                     challenger.device or settings.model.device)
        shadow.start()
        intake.start()
        watcher.start()
        cameras = ", ".join(f"{f.camera}={f.path}" for f in settings.watch.folders)
        age = process_age_s()
        startup_s = age if age is not None else time.monotonic() - self._started
        log.info("inspectd ready: bundle %s (%s) on %s; watching %s (started in %.1f s)", bundle.manifest.name,
                 bundle.digest[:12], bundle.device, cameras, startup_s)
        write_ready(self.ready_path, {
            "bundle": bundle.manifest.name, "digest": bundle.digest, "device": bundle.device,
            "folders": [str(f.path) for f in settings.watch.folders], "config": str(settings.source),
            "started_at": _iso(time.time() - startup_s), "startup_s": round(startup_s, 1)})
        self.notifier.ready(f"watching {len(settings.watch.folders)} folder(s)")
        health = _Health({"watcher": watcher, "intake": intake, "model worker": worker, "alert relay": relay,
                          "retention": retention}, worker)
        server = None
        if settings.metrics.enabled:
            try:
                server = MetricsServer(metrics, settings.metrics.address, settings.metrics.port,
                                       health.problem)
            except OSError as exc:
                raise ConfigError(f"{settings.source}: metrics: cannot listen on {settings.metrics.address}:"
                                  f"{settings.metrics.port} ({exc.strerror or exc})") from exc
            server.start()
        next_rescan = time.monotonic() + settings.watch.reconcile_interval_s
        next_space_check = time.monotonic() + settings.disk_guard.check_interval_s
        _publish(metrics, work, in_flight, guard)
        tick = min(1.0, self.notifier.watchdog_interval_s or 1.0)
        exit_code = 0
        while not self._stop.wait(tick):
            problem = health.problem()
            if problem is not None:  # before the watchdog ping: a daemon that cannot inspect is not fed
                idle = " while idle" if not len(in_flight) else ""
                log.error("health check: %s%s; exiting so systemd restarts inspectd", problem, idle)
                exit_code = 1
                break
            if self.notifier.watchdog_interval_s is not None:
                self.notifier.watchdog()
            if self._reload.is_set() or self._change_requested(engine):
                self._reload.clear()
                reloader.request()  # on its own thread; one during a reload is queued, never dropped
            if time.monotonic() >= next_space_check:
                change = guard.check()
                self._guard_changed(change, engine, relay)
                if change is not None and not change.paused:
                    next_rescan = 0.0  # offer the files that waited in the folders now
                next_space_check = time.monotonic() + settings.disk_guard.check_interval_s
            if time.monotonic() >= next_rescan:
                repair.run()
                watcher.rescan()
                next_rescan = time.monotonic() + settings.watch.reconcile_interval_s
            _publish(metrics, work, in_flight, guard)
            paused = "PAUSED, disk space below the floor; " if guard.paused.is_set() else ""
            self.notifier.status(f"{paused}recorded {worker.recorded}, queued {work.qsize()}, "
                                 f"in flight {len(in_flight)}")
        health.stopping()
        remove_ready(self.ready_path)  # first: from now on no new file is taken
        last_batch = worker.request_stop()  # first: no batch may start while the watcher and the intake wind down
        log.info("stopping: no new files; finishing batch #%d (the last started) and writing %d waiting row(s)",
                 last_batch, worker.waiting_rows())
        self.notifier.stopping()
        watcher.stop()
        intake.stop()
        worker.stop()
        shadow.stop()  # after the worker: the last rows' parts were offered; the part in progress finishes
        relay.stop()
        retention.stop()
        if server is not None:
            server.stop()
        engine.dispose()
        log.info("stopped after recording %d inspection(s)", worker.recorded)
        return exit_code

    def _change_requested(self, engine: Engine) -> bool:
        """A promotion or rollback asked for in the store (``model_selection.py``); a store that cannot answer
        now is asked again at the next tick."""
        try:
            return self.selector.due(engine)
        except Exception as exc:  # noqa: BLE001 (a locked or full store must not stop the main loop)
            log.debug("promotions: the store did not answer (%s); asking again", exc)
            return False

    def _guard_changed(self, change: GuardChange | None, engine, relay: AlertRelay) -> None:
        if change is None:
            return
        if change.paused:
            log.error("disk guard: PAUSED, no new file is taken (they stay in the drop folders): %s", change.describe())
        else:
            log.warning("disk guard: resumed: %s", change.describe())
        channels = self.settings.disk_guard.channels
        if not channels:
            return
        try:
            with Session(engine) as session, session.begin():
                add_system_alerts(session, channels, "disk_low" if change.paused else "disk_ok", change.details(),
                                  utcnow())
        except Exception as exc:  # a full disk may refuse even this row: the log line above stays
            log.error("disk guard: alert not queued: %s", exc)
            return
        relay.wake()


def _open(settings: Settings) -> tuple[Engine, ActiveModel]:
    """The model process, then the store: the process verifies the bundle (manifest, every file's hash) before it
    loads it, so a corrupt bundle is refused before a store is created or an existing one migrated."""
    log.info("starting the model process: bundle %s, device %s", settings.model.bundle, settings.model.device)
    process = ModelProcess(settings)
    started = time.perf_counter()
    try:
        engine = open_engine(settings.store.url)
        revision = migrate(engine)
    except BaseException:
        process.close()
        raise
    log.info("store %s opened at schema %s (%.1f s)", engine.url.render_as_string(hide_password=True), revision,
             time.perf_counter() - started)
    return engine, register(settings, engine, process)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="seconds")


class _Health:
    """What keeps the daemon from inspecting (a thread stopped, the model process died), or None.

    The main loop asks every tick, so a model process killed while no file is queued is noticed within a second
    (well inside a watchdog interval), not when the next part arrives; ``/healthz`` answers the same as a 503. The
    first problem found stays the answer while the daemon winds down (its threads then stop on purpose), and a
    daemon stopping for a signal says so.
    """

    def __init__(self, parts: dict[str, LoopThread], worker: ModelWorker) -> None:
        self.parts = parts
        self.worker = worker
        self._lock = threading.Lock()  # the main loop and the HTTP server's threads ask
        self._answer: str | None = None

    def problem(self) -> str | None:
        with self._lock:
            if self._answer is None:
                dead = [name for name, part in self.parts.items() if not part.alive()]
                self._answer = f"thread(s) stopped unexpectedly: {', '.join(dead)}" if dead else \
                    self.worker.model_death()
            return self._answer

    def stopping(self) -> None:
        """A requested stop: from now on the answer is 503 "stopping", not the threads that end one by one."""
        with self._lock:
            if self._answer is None:
                self._answer = "stopping"


def _publish(metrics: DaemonMetrics, work: queue.Queue, in_flight: InFlight, guard: DiskGuard) -> None:
    """The gauges that describe the daemon's state now (counters are fed where things happen)."""
    metrics.queue_depth.set(work.qsize())
    metrics.in_flight.set(len(in_flight))
    metrics.disk_paused.set(1 if guard.paused.is_set() else 0)
    for reading in guard.last_readings:
        metrics.disk_free.labels(str(reading.path)).set(reading.free)


def run_daemon(settings: Settings) -> NoReturn:
    daemon = Daemon(settings)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    signal.signal(signal.SIGHUP, daemon.request_reload)
    code = daemon.run()
    # Every thread is joined and the store closed: what is left is the interpreter tearing down torch and
    # bitsandbytes, 1-4 s that systemd and a restart would wait on for nothing. Flush the logs and leave.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

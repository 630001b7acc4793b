"""The model in a process of its own: the daemon's model thread sends it prepared batches and gets results back.

Why: on one thread of its own the model never waits for the GIL. In the daemon's process, beside the read and
record stages, the watcher and the relay, the model thread lost 5-7 % of its time waiting for the GIL (measured on
the shipped model at batch 4: on a CPU 94 % of the time, blocking ~19 times an image; a prototype of this split
took the daemon from 0.88 to 0.96 of the model's own throughput). The daemon itself never loads the weights: the
process reports the bundle's manifest and digest, which is all the store, the metrics and the logs need.

The process ignores SIGINT / SIGTERM / SIGHUP (systemd signals the whole unit): the daemon finishes the batch in
flight and then closes it. If it dies (the kernel's OOM killer, a crash), the daemon exits so that systemd restarts
it: mid-batch the daemon's model thread ends (the batch's files stay in the drop folder); while idle the main loop's
health check (``death``, every tick) finds it within a second, so a restart that takes minutes for a 7B happens
before the next parts arrive rather than on them.

The process logs its loading steps to the daemon's stderr (it inherits it; same format, same journal), each as it
ends with its seconds: the libraries imported, the bundle's hashes verified, the weights loaded. On a slow first
start (a cold disk cache: torch is read from disk) they show where the minute goes.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from inspectd.bundle.manifest import BundleManifest
from inspectd.config import Settings
from inspectd.errors import BundleError
from inspectd.inspection.named_image import NamedImage
from inspectd.inspection.result import InspectionResult
from inspectd.verdict import Verdict
from inspectd.real.params import RealParams

log = logging.getLogger("inspectd.model")

_UNIT_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class ModelProcessDied(RuntimeError):
    """The model process is gone: nothing more can be inspected until the daemon restarts."""


class ModelOutOfMemory(RuntimeError):
    """The model process ran out of GPU memory on a batch (torch's error, named here so the daemon's main
    process, which never imports torch, can catch it and split the batch)."""


@dataclass(frozen=True)
class BundleInfo:
    """A bundle as the daemon knows it: what the model process loaded, without the weights."""

    path: Path
    manifest: BundleManifest
    digest: str
    device: str


@dataclass(frozen=True)
class _Ready:
    bundle: BundleInfo
    real: RealParams
    threshold: float


@dataclass(frozen=True)
class _Failed:
    """Loading or a batch failed in the process; ``out_of_memory``: CUDA ran out (the worker splits the batch)."""

    message: str
    out_of_memory: bool = False


class ModelProcess:
    """Stands where an ``Inspector`` stands for the daemon (``inspect_images``, ``failed``, ``real``,
    ``threshold``), with the model in a spawned process. One caller at a time."""

    def __init__(self, settings: Settings, name: str = "inspectd-model") -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process whose torch threads run
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(settings, child, logging.getLogger().getEffectiveLevel(),
                                                             time.time(), name),
                                        name=name, daemon=True)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _UNIT_SIGNALS)  # born blocked: the mask survives exec
        try:
            self._process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        self._closing = False  # set by ``close``: an end asked for is not a death
        try:
            reply = self._receive()
        except ModelProcessDied as exc:  # killed or crashed while loading (e.g. out of host memory)
            raise BundleError(f"{settings.model.bundle}: {exc} while loading the model") from exc
        if isinstance(reply, _Failed):
            self.close()
            raise BundleError(reply.message)
        self.bundle: BundleInfo = reply.bundle
        self.real: RealParams = reply.real
        self.threshold: float = reply.threshold

    def inspect_images(self, images: list[NamedImage]) -> list[InspectionResult]:
        try:
            self._conn.send(images)
        except (BrokenPipeError, EOFError, OSError) as exc:
            raise ModelProcessDied(f"the model process is gone (exit code {self._process.exitcode})") from exc
        reply = self._receive()
        if isinstance(reply, _Failed):
            if reply.out_of_memory:
                raise ModelOutOfMemory(reply.message)
            raise RuntimeError(reply.message)
        return reply

    def failed(self, source: str, reason: str) -> InspectionResult:
        return InspectionResult(source=source, verdict=Verdict.FAILED, threshold=self.threshold, error=reason)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def death(self) -> str | None:
        """Why the process can no longer inspect (it ended without being asked), or None.

        Safe from any thread beside the one that inspects: it only looks at the process's sentinel (it never reaps
        the process), and ``close`` marks the end as asked for before asking, so a swap is never taken for a death.
        """
        if not multiprocessing.connection.wait([self._process.sentinel], timeout=0) or self._closing:
            return None
        # The sentinel closes as the process exits, a moment before its exit code can be read (seen on a loaded
        # box: "exit code None" for a process killed by SIGKILL); wait up to a second for it.
        code, deadline = self._process.exitcode, time.monotonic() + 1.0
        while code is None and time.monotonic() < deadline:
            time.sleep(0.01)
            code = self._process.exitcode
        return f"the model process is gone (exit code {code})"

    def close(self, timeout: float = 30) -> None:
        """End the process (after its batch in flight: calls are not concurrent)."""
        self._closing = True
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout)
        if self._process.is_alive():
            log.error("the model process did not stop within %s s; terminating it", timeout)
            self._process.terminate()
            self._process.join(5)
        self._conn.close()

    def _receive(self):
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(1)
            raise ModelProcessDied(f"the model process is gone (exit code {self._process.exitcode})") from exc


def _serve(settings: Settings, conn, log_level: int, spawned_at: float, name: str = "inspectd-model") -> None:
    """The model process: load, report, then inspect batches until told to stop or the daemon is gone."""
    global log
    if name != "inspectd-model":  # a challenger's process: its loading steps are told apart from the champion's
        log = logging.getLogger(f"inspectd.{name.removeprefix('inspectd-')}.model")
    for signum in _UNIT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _UNIT_SIGNALS)  # any that came while starting are dropped
    import torch

    from inspectd.bundle.load import load_bundle
    from inspectd.logs import setup_logging
    from inspectd.errors import InspectdError
    from inspectd.inspection.build import build_inspector
    from inspectd.model.cpu_threads import limit_cpu_threads

    setup_logging(logging.getLevelName(log_level))
    log.info("model process started: torch %s and transformers imported (%.1f s)", torch.__version__,
             time.time() - spawned_at)
    limit_cpu_threads(settings.model.threads)
    step = _Steps()
    try:
        _announce(Path(settings.model.bundle))
        bundle = load_bundle(settings.model.bundle, settings.model.device,
                             verified=lambda: log.info("hashes verified (%.1f s)", step.lap()))
        log.info("model loaded on %s (%.1f s)", bundle.device, step.lap())
        inspector = build_inspector(settings, bundle)
    except InspectdError as exc:
        conn.send(_Failed(str(exc)))
        return
    except Exception as exc:  # any other load failure: the daemon refuses the model with the reason
        conn.send(_Failed(f"{settings.model.bundle}: the model does not load ({type(exc).__name__}: {exc})"))
        return
    conn.send(_Ready(BundleInfo(bundle.path, bundle.manifest, bundle.digest, str(bundle.device)), inspector.real,
                     inspector.threshold))
    while True:
        try:
            images = conn.recv()
        except EOFError:  # the daemon is gone
            return
        if images is None:
            return
        try:
            reply = inspector.inspect_images(images)
        except torch.cuda.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            reply = _Failed(str(exc), out_of_memory=True)
        except Exception as exc:
            log.exception("model failed on a batch of %d", len(images))
            reply = _Failed(f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):  # the daemon is gone
            return


class _Steps:
    """Seconds since the last step."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        return seconds


def _announce(folder: Path) -> None:
    """Log what the hashing ahead reads (files, MB). Silent on a manifest that does not read: the load says why,
    naming the file."""
    from inspectd.bundle.files import read_manifest

    try:
        manifest = read_manifest(folder)
        size = sum((folder / name).stat().st_size for name in manifest.files)
    except Exception:  # noqa: BLE001 (the load reports it)
        return
    log.info("verifying bundle %s: %d files, %.1f MB", manifest.name, len(manifest.files), size / 1e6)

"""The one thread that drives the model: takes the batches the read stage prepared, has them inferred, hands the
results on.

Three threads in a line (read -> model -> record) so that the model does nothing but inference: the read stage
prepares the next batch and the record stage writes the last one while the model runs. The model itself runs in
its own process (``model_process``), where no other thread takes the GIL from it; this thread sends it each batch.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING


from inspectd.config import ImageSettings
from inspectd.daemon.file_names import as_text
from inspectd.daemon.items import InFlight, ReadyFile
from inspectd.daemon.model_process import ModelOutOfMemory, ModelProcessDied
from inspectd.daemon.model_reload import ActiveModel
from inspectd.daemon.read_stage import ReadFile, ReadStage
from inspectd.daemon.record_stage import RecordStage
from inspectd.daemon.recorder import InspectionRecorder, Processed
from inspectd.inspection.named_image import NamedImage
from inspectd.inspection.result import InspectionResult
from inspectd.threads import LoopThread

if TYPE_CHECKING:  # the daemon's main process never imports the inspector (torch, transformers)
    from inspectd.inspection.inspector import Inspector

log = logging.getLogger("inspectd.worker")


class ModelWorker(LoopThread):
    def __init__(
        self,
        inspector: Inspector,
        recorder: InspectionRecorder,
        work: queue.Queue,
        in_flight: InFlight,
        batch_size: int,
        max_wait_ms: int,
        paused: threading.Event | None = None,
        images: ImageSettings | None = None,
    ) -> None:
        super().__init__("inspectd-model")
        self.inspector = inspector
        self.recorder = recorder
        self.in_flight = in_flight
        self.reader = ReadStage(work, in_flight, recorder.lookup_many if recorder is not None else None,
                                batch_size, max_wait_ms, images or ImageSettings())
        self.stage = RecordStage(recorder, in_flight, capacity=4 * batch_size) if recorder is not None else None
        self.paused = paused or threading.Event()  # the disk guard's: take no new batch while set
        self._next_model: ActiveModel | None = None
        self._next_lock = threading.Lock()
        # Starting a batch and the stop request exclude each other, so the stop names the last batch started.
        self._start_lock = threading.Lock()
        self.batches_started = 0

    def swap(self, model: ActiveModel) -> None:
        """Use ``model`` from the next batch on (the batch in flight finishes with the old one)."""
        with self._next_lock:
            superseded, self._next_model = self._next_model, model
        if superseded is not None and superseded.inspector not in (model.inspector, self.inspector):
            # Queued reloads can finish while a long batch runs: the one never taken would keep its process.
            log.info("bundle %s (%s) superseded by a newer reload before any batch used it; closing its process",
                     superseded.bundle.manifest.name, superseded.bundle.digest[:12])
            _close(superseded.inspector)

    def _take_new_model(self) -> None:
        with self._next_lock:
            model, self._next_model = self._next_model, None
        if model is None:
            return
        old, self.inspector = self.inspector, model.inspector
        self.reader.use_limits(model.batch_size, model.images)
        # After the rows of the old model's batches: those keep the old bundle and alert rules, later ones the new.
        self.stage.use_model(model.bundle_id, model.inspector.real, model.alerts)
        if old is model.inspector:  # a reload that changed only the alert rules
            return
        _close(old)  # its last batch is done: its process (and the memory of its weights) goes now
        log.info("now inspecting with bundle %s (%s)", model.bundle.manifest.name, model.bundle.digest[:12])

    def model_death(self) -> str | None:
        """Why the model process in use can no longer inspect (killed, crashed), or None while it can.

        Read by the main loop and ``/healthz`` between batches too: a model process that dies while no file comes
        would otherwise go unnoticed until the next part arrives. A process closed on purpose (a reload's swap)
        is not dead."""
        death = getattr(self.inspector, "death", None)  # an in-process ``Inspector`` (tests, the CLI) cannot die
        return death() if death is not None else None

    @property
    def recorded(self) -> int:
        return self.stage.recorded

    def start(self) -> None:
        self.stage.start()
        super().start()
        self.reader.start()

    def alive(self) -> bool:
        return super().alive() and self.stage.alive() and self.reader.alive()

    def request_stop(self) -> int:
        """Start no other batch; returns the number of the last one started (it finishes and is recorded)."""
        with self._start_lock:
            self._stop.set()
            self.reader.request_stop()
            return self.batches_started

    def waiting_rows(self) -> int:
        """Files inferred or failed whose rows the record stage has not yet taken up."""
        return self.stage.items.qsize()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in flight and write its rows; files read ahead or still queued stay in the folder for
        the next start."""
        self.reader.stop(timeout)
        super().stop(timeout)
        self.reader.drain()
        self.stage.stop(timeout)
        _close(self.inspector)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.reader.batches.get(timeout=0.2)
            except queue.Empty:
                self._take_new_model()
                continue
            self._take_new_model()  # a batch started after the swap was offered uses the new model
            with self._start_lock:
                start = not (self._stop.is_set() or self.paused.is_set())
                if start:
                    self.batches_started += 1
                    number = self.batches_started
            if not start:
                # Stopping, or the disk guard paused: a batch prepared now is not started; its files stay in the
                # drop folder for the next start or the rescan at resume.
                for file in batch:
                    self.in_flight.release(file.ready.path)
                continue
            handed: set = set()
            try:
                self.process(batch, handed, number)
            except ModelProcessDied as exc:
                # Nothing more can be inspected: this thread ends, the daemon sees it and exits so that systemd
                # restarts it. The batch's files are released below and stay in the drop folder.
                log.error("%s; stopping the model worker", exc)
                return
            except Exception:
                # A store outage must not kill the daemon; the files stay in the
                # folder and the next rescan offers them again.
                log.exception("batch of %d files could not be recorded; they will be retried", len(batch))
            finally:
                for file in batch:
                    if file.ready.path not in handed:
                        self.in_flight.release(file.ready.path)

    def process(self, batch: list[ReadFile], handed: set | None = None, number: int = 0) -> None:
        """Infer the prepared batch and hand every file of it to the record stage (``handed`` collects their
        paths)."""
        handed = set() if handed is None else handed
        started = time.time()

        def hand(ready: ReadyFile, item: Processed | None) -> None:
            if item is None:
                self.stage.release(ready)
            else:
                self.stage.record(item)
            handed.add(ready.path)

        log.debug("batch #%d of %d: %s", number, len(batch), ", ".join(as_text(f.ready.path.name) for f in batch))
        to_infer = []
        for file in batch:
            if file.image is not None:
                to_infer.append(file)
            elif file.existing is not None:
                self.recorder.finish_recorded(file.ready, file.existing)
                hand(file.ready, None)
            elif file.failure is not None:
                hand(file.ready, self._failure(file.ready, file.sha256, file.size_bytes, file.failure, started))
            else:  # vanished before it was read
                hand(file.ready, None)
        if to_infer:
            results = self._infer([file.image for file in to_infer])
            for file, result in zip(to_infer, results):
                hand(file.ready, Processed(file.ready, file.sha256, file.size_bytes, result, started))

    def _infer(self, images: list[NamedImage]) -> list[InspectionResult]:
        """Run a batch; on CUDA out-of-memory split it, and isolate any image that breaks it."""
        try:
            return self.inspector.inspect_images(images)
        except ModelProcessDied:
            raise
        except Exception as exc:
            if not _out_of_memory(exc):
                return self._isolate(images, exc)
            if len(images) == 1:
                return [self.inspector.failed(images[0].source, "out of GPU memory even alone in a batch")]
            half = len(images) // 2
            log.warning("CUDA out of memory on a batch of %d; retrying as %d + %d", len(images), half, len(images) - half)
            return self._infer(images[:half]) + self._infer(images[half:])

    def _isolate(self, images: list[NamedImage], exc: Exception) -> list[InspectionResult]:
        """A batch that failed: one image fails alone with the error; several are retried one by one."""
        if len(images) == 1:
            log.exception("model failed on %s", images[0].source)
            return [self.inspector.failed(images[0].source, f"model error: {type(exc).__name__}: {exc}")]
        log.exception("model failed on a batch of %d; retrying one by one", len(images))
        return [result for image in images for result in self._infer([image])]

    def _failure(self, ready: ReadyFile, sha256: str | None, size: int, reason: str,
                 started: float) -> Processed | None:
        """A failed row; bytes already in the store are handled by ``record`` like any duplicate."""
        if sha256 is None:
            log.warning("%s could not be read (%s); nothing recorded", as_text(ready.path), reason)
            return None
        return Processed(ready, sha256, size, self.inspector.failed(as_text(ready.path), reason), started)


def _out_of_memory(exc: Exception) -> bool:
    """GPU out of memory: the model process's (``ModelOutOfMemory``) or an in-process inspector's (torch's own
    error; torch is then imported already, and its cache is emptied before the halves are tried)."""
    if isinstance(exc, ModelOutOfMemory):
        return True
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True


def _close(inspector) -> None:
    """End a model process; an in-process ``Inspector`` (tests, the CLI) has nothing to close."""
    close = getattr(inspector, "close", None)
    if close is not None:
        close()

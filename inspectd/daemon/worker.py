"""The one thread that owns the model: batch, read, infer; and the thread beside it that records.

The model thread hands each file, in order, to the record stage (row, archive
move, alerts) and starts its next batch at once: recording a batch overlapped
the next batch's inference instead of adding to it (measured: recording was
~15 % of a batch of the shipped model; the daemon ran at 0.83x the model's
own rate). A file stays claimed (in flight) until its row is written, and a
model swap travels through the same queue, so every row names the bundle that
inspected it.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import queue
import threading
import time

import torch

from inspectd.config import ImageSettings
from inspectd.daemon.file_names import as_text, identity_digest
from inspectd.daemon.items import InFlight, ReadyFile
from inspectd.daemon.model_reload import ActiveModel
from inspectd.daemon.recorder import Processed, InspectionRecorder
from inspectd.errors import ImageError
from inspectd.inspection.images import decode_image, read_image_bytes
from inspectd.inspection.inspector import Inspector, NamedImage
from inspectd.inspection.result import InspectionResult
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.worker")


class RecordStage(LoopThread):
    """Writes rows, moves files and queues alerts, in the order the model thread handed them over."""

    def __init__(self, recorder: InspectionRecorder, in_flight: InFlight, capacity: int) -> None:
        super().__init__("inspectd-record")
        self.recorder = recorder
        self.in_flight = in_flight
        self.items: queue.Queue = queue.Queue(maxsize=capacity)  # full: the model thread waits (back-pressure)
        self.recorded = 0

    def record(self, item: Processed) -> None:
        self.items.put(("record", item))

    def release(self, ready: ReadyFile) -> None:
        """A file that needs no row (vanished, already recorded): unclaimed after the rows before it."""
        self.items.put(("release", ready))

    def use_model(self, bundle_id: int, real) -> None:
        self.items.put(("model", (bundle_id, real)))

    def _loop(self) -> None:
        while True:
            try:
                kind, payload = self.items.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return  # stopping: everything handed over has been written
                continue
            if kind == "model":
                self.recorder.use_model(*payload)
            elif kind == "release":
                self.in_flight.release(payload.path)
            else:
                try:
                    self._record(payload)
                finally:
                    self.in_flight.release(payload.ready.path)

    def _record(self, item: Processed) -> None:
        """One file's row; whatever breaks it fails that file alone (it stays in the folder for the next pass)."""
        try:
            inspection_id = self.recorder.record(item)
        except Exception:
            log.exception("%s could not be recorded; it stays in the drop folder and is offered again",
                          as_text(item.ready.path))
            return
        if inspection_id is not None:
            self.recorded += 1


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
        self.work = work
        self.in_flight = in_flight
        self.batch_size = batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.stage = RecordStage(recorder, in_flight, capacity=4 * batch_size) if recorder is not None else None
        self.paused = paused or threading.Event()  # the disk guard's: take no new batch while set
        self.images = images or ImageSettings()  # limits checked before a file is decoded
        self._next_model: ActiveModel | None = None
        self._next_lock = threading.Lock()
        # Starting a batch and the stop request exclude each other, so the stop names the last batch started.
        self._start_lock = threading.Lock()
        self.batches_started = 0

    def swap(self, model: ActiveModel) -> None:
        """Use ``model`` from the next batch on (the batch in flight finishes with the old one)."""
        with self._next_lock:
            self._next_model = model

    def _take_new_model(self) -> None:
        with self._next_lock:
            model, self._next_model = self._next_model, None
        if model is None:
            return
        self.inspector, self.batch_size, self.images = model.inspector, model.batch_size, model.images
        self.stage.use_model(model.bundle_id, model.inspector.real)  # after the rows of the old model's batches
        gc.collect()  # the old weights go now, not at some later collection
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("now inspecting with bundle %s (%s)", model.bundle.manifest.name, model.bundle.digest[:12])

    @property
    def recorded(self) -> int:
        return self.stage.recorded

    def start(self) -> None:
        self.stage.start()
        super().start()

    def alive(self) -> bool:
        return super().alive() and self.stage.alive()

    def request_stop(self) -> int:
        """Start no other batch; returns the number of the last one started (it finishes and is recorded)."""
        with self._start_lock:
            self._stop.set()
            return self.batches_started

    def waiting_rows(self) -> int:
        """Files inferred or failed whose rows the record stage has not yet taken up."""
        return self.stage.items.qsize()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in flight and write its rows; files still queued stay in the folder for the next start."""
        super().stop(timeout)
        self.stage.stop(timeout)

    def _gather(self) -> list[ReadyFile]:
        try:
            first = self.work.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.work.get(timeout=max(0.0, remaining)) if remaining > 0 else self.work.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._gather()
            self._take_new_model()  # a batch started after the swap was offered uses the new model
            if not batch:
                continue
            with self._start_lock:
                start = not (self._stop.is_set() or self.paused.is_set())
                if start:
                    self.batches_started += 1
                    number = self.batches_started
            if not start:
                # Stopping, or the disk guard paused: a batch gathered now is not started; its files stay in the
                # drop folder for the next start or the rescan at resume.
                for ready in batch:
                    self.in_flight.release(ready.path)
                continue
            handed: set = set()
            try:
                self.process(batch, handed, number)
            except Exception:
                # A store outage must not kill the daemon; the files stay in the
                # folder and the next rescan offers them again.
                log.exception("batch of %d files could not be recorded; they will be retried", len(batch))
            finally:
                for ready in batch:
                    if ready.path not in handed:
                        self.in_flight.release(ready.path)

    def process(self, batch: list[ReadyFile], handed: set | None = None, number: int = 0) -> None:
        """Read, infer and hand every file of ``batch`` to the record stage (``handed`` collects their paths)."""
        handed = set() if handed is None else handed
        started = time.time()

        def hand(ready: ReadyFile, item: Processed | None) -> None:
            if item is None:
                self.stage.release(ready)
            else:
                self.stage.record(item)
            handed.add(ready.path)

        log.debug("batch #%d of %d: %s", number, len(batch), ", ".join(as_text(r.path.name) for r in batch))
        max_pixels = self.images.max_pixels
        max_bytes = self.images.max_file_bytes
        to_infer: list[tuple[ReadyFile, str, int, NamedImage]] = []
        for ready in batch:
            name = as_text(ready.path)
            load_started = time.perf_counter()
            try:
                data = read_image_bytes(ready.path, max_bytes, follow_symlinks=False)
            except ImageError as exc:
                if not os.path.lexists(ready.path):
                    log.warning("%s vanished before it was read; nothing recorded", name)
                    hand(ready, None)
                    continue
                hand(ready, self._failure(ready, *identity_digest(ready.path), exc.reason, started))
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            existing = self.recorder.lookup(sha256)
            if existing is not None:
                self.recorder.finish_recorded(ready, existing)
                hand(ready, None)
                continue
            try:
                image = decode_image(data, name, max_pixels)
            except ImageError as exc:
                hand(ready, self._failure(ready, sha256, len(data), exc.reason, started))
                continue
            named = NamedImage(name, image, time.perf_counter() - load_started)
            to_infer.append((ready, sha256, len(data), named))
        if to_infer:
            results = self._infer([entry[3] for entry in to_infer])
            for (ready, sha256, size, _), result in zip(to_infer, results):
                hand(ready, Processed(ready, sha256, size, result, started))

    def _infer(self, images: list[NamedImage]) -> list[InspectionResult]:
        """Run a batch; on CUDA out-of-memory split it, and isolate any image that breaks it."""
        try:
            return self.inspector.inspect_images(images)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(images) == 1:
                return [self.inspector.failed(images[0].source, "out of GPU memory even alone in a batch")]
            half = len(images) // 2
            log.warning("CUDA out of memory on a batch of %d; retrying as %d + %d", len(images), half, len(images) - half)
            return self._infer(images[:half]) + self._infer(images[half:])
        except Exception as exc:
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

"""The thread after the model: writes rows, moves files and queues alerts, in the order the model handed them over.

Recording a batch overlaps the next batch's inference instead of adding to it (measured: recording was ~15 % of a
batch of the shipped model on the model thread). A file stays claimed (in flight) until its row is written, and a
model swap travels through the same queue, so every row names the bundle that inspected it and is judged by the
alert rules read with that model. Rows waiting together are written in one transaction.
"""

from __future__ import annotations

import logging
import queue

from inspectd.daemon.file_names import as_text
from inspectd.daemon.items import InFlight, ReadyFile
from inspectd.daemon.recorder import InspectionRecorder, Processed
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

    def use_model(self, bundle_id: int, real, alerts) -> None:
        """Rows handed over after this name the new bundle and are judged by the new alert rules."""
        self.items.put(("model", (bundle_id, real, alerts)))

    def _loop(self) -> None:
        while True:
            try:
                first = self.items.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return  # stopping: everything handed over has been written
                continue
            # Whatever else is already waiting goes with it: the rows of a batch share one transaction.
            waiting = [first]
            while True:
                try:
                    waiting.append(self.items.get_nowait())
                except queue.Empty:
                    break
            self._handle(waiting)

    def _handle(self, waiting: list[tuple[str, object]]) -> None:
        """In handover order; consecutive files are recorded together."""
        files: list[Processed] = []
        for kind, payload in waiting:
            if kind == "record":
                files.append(payload)
                continue
            self._record(files)
            files = []
            if kind == "model":
                self.recorder.use_model(*payload)
            else:
                self.in_flight.release(payload.path)
        self._record(files)

    def _record(self, files: list[Processed]) -> None:
        """Rows for ``files``; whatever breaks one fails that file alone (it stays in the folder for the next pass)."""
        if not files:
            return
        try:
            if len(files) == 1:
                ids = [self._record_one(files[0])]
            else:
                try:
                    ids = self.recorder.record_many(files)
                except Exception as exc:  # rolled back together: find the file that breaks it
                    log.warning("%d rows could not be written together (%s: %s); writing them one by one",
                                len(files), type(exc).__name__, exc)
                    ids = [self._record_one(item) for item in files]
            self.recorded += sum(inspection_id is not None for inspection_id in ids)
        finally:
            for item in files:
                self.in_flight.release(item.ready.path)

    def _record_one(self, item: Processed) -> int | None:
        try:
            return self.recorder.record(item)
        except Exception:
            log.exception("%s could not be recorded; it stays in the drop folder and is offered again",
                          as_text(item.ready.path))
            return None

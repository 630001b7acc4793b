"""The thread before the model: gathers a batch, reads, hashes and decodes its files while the model runs the last.

Reading and decoding on the model thread cost the shipped model ~2 % of its time on 168 px PNGs, and a camera's
5 MP PNG takes tens of milliseconds to decode: one batch prepared ahead keeps the model busy. Nothing is recorded
here; the model thread decides whether a prepared batch starts (stop, disk guard) and hands every file on in order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from inspectd.config import ImageSettings
from inspectd.daemon.file_names import as_text, identity_digest
from inspectd.daemon.items import InFlight, ReadyFile
from inspectd.daemon.recorder import Existing
from inspectd.errors import ImageError
from inspectd.inspection.images import decode_image, read_image_bytes
from inspectd.inspection.named_image import NamedImage
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.worker")


@dataclass(frozen=True)
class ReadFile:
    """One file of a prepared batch: an image to infer, or why it needs no inference."""

    ready: ReadyFile
    sha256: str | None = None
    size_bytes: int = 0
    image: NamedImage | None = None
    failure: str | None = None  # cannot be inspected: a failed row (none when sha256 is None: nothing was read)
    existing: Existing | None = None  # these bytes are recorded already
    # all of image, failure and existing None: the file vanished before it was read


class ReadStage(LoopThread):
    def __init__(
        self,
        work: queue.Queue,
        in_flight: InFlight,
        lookup: Callable[[list[str]], dict[str, Existing]] | None,
        batch_size: int,
        max_wait_ms: int,
        images: ImageSettings,
    ) -> None:
        super().__init__("inspectd-read")
        self.work = work
        self.in_flight = in_flight
        self.lookup = lookup
        self.batch_size = batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.images = images  # limits checked before a file is decoded
        self.batches: queue.Queue[list[ReadFile]] = queue.Queue(maxsize=1)  # one batch ahead of the model

    def use_limits(self, batch_size: int, images: ImageSettings) -> None:
        """A new model's batch size and image limits, from the next batch gathered on."""
        self.batch_size, self.images = batch_size, images

    def drain(self) -> None:
        """Release the files of a batch prepared but never started: they stay in the folder for the next start."""
        while True:
            try:
                batch = self.batches.get_nowait()
            except queue.Empty:
                return
            for file in batch:
                self.in_flight.release(file.ready.path)

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._gather()
            if not batch:
                continue
            prepared = self.prepare(batch)
            while True:
                try:
                    self.batches.put(prepared, timeout=0.2)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        for ready in batch:
                            self.in_flight.release(ready.path)
                        return

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

    def prepare(self, batch: list[ReadyFile]) -> list[ReadFile]:
        """Read and hash every file, look the hashes up in one query, decode the new ones."""
        limits = self.images
        read: list[tuple[ReadyFile, str, bytes, float] | ReadFile] = []
        for ready in batch:
            started = time.perf_counter()
            try:
                data = read_image_bytes(ready.path, limits.max_file_bytes, follow_symlinks=False)
            except ImageError as exc:
                if not os.path.lexists(ready.path):
                    log.warning("%s vanished before it was read; nothing recorded", as_text(ready.path))
                    read.append(ReadFile(ready))
                else:
                    sha256, size = identity_digest(ready.path)
                    read.append(ReadFile(ready, sha256, size, failure=exc.reason))
                continue
            read.append((ready, hashlib.sha256(data).hexdigest(), data, time.perf_counter() - started))
        fresh = [entry[1] for entry in read if not isinstance(entry, ReadFile)]
        known = self.lookup(fresh) if fresh and self.lookup is not None else {}
        prepared = []
        for entry in read:
            if isinstance(entry, ReadFile):
                prepared.append(entry)
                continue
            ready, sha256, data, read_s = entry
            if sha256 in known:
                prepared.append(ReadFile(ready, sha256, len(data), existing=known[sha256]))
                continue
            name = as_text(ready.path)
            started = time.perf_counter()
            try:
                image = decode_image(data, name, limits.max_pixels)
            except ImageError as exc:
                prepared.append(ReadFile(ready, sha256, len(data), failure=exc.reason))
                continue
            load_s = read_s + time.perf_counter() - started
            prepared.append(ReadFile(ready, sha256, len(data), image=NamedImage(name, image, load_s)))
        return prepared

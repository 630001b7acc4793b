"""Stop taking files before a full disk can lose one; take them again when space returns.

Below ``disk_guard.min_free_mb`` on the file system of the SQLite store, the
archive or the failed folder, the daemon takes no new file: files stay in
the drop folder (nothing is moved before its row is committed), the batch
in flight finishes. It resumes once every one of them has 10 % more than
the floor again (so it does not flap at the edge), and rescans at once.
Each pause and resume is logged, shown in systemd's STATUS and queued as an
alert to ``disk_guard.channels``. A PostgreSQL store's disk is the database
server's business and is not measured.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from inspectd.config import Settings

log = logging.getLogger("inspectd.disk")

FreeSpace = Callable[[Path], int]
_RESUME_MARGIN = 1.10


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system (its nearest existing ancestor)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@dataclass(frozen=True)
class SpaceReading:
    path: Path
    free: int


@dataclass(frozen=True)
class GuardChange:
    paused: bool
    readings: tuple[SpaceReading, ...]
    floor: int

    def describe(self) -> str:
        shown = ", ".join(f"{r.path}: {r.free / 2**20:.0f} MiB free" for r in self.readings)
        return f"{shown} (floor {self.floor / 2**20:.0f} MiB)"

    def details(self) -> dict:
        return {"floor_bytes": self.floor, "free_bytes": {str(r.path): r.free for r in self.readings}}


def guarded_paths(settings: Settings) -> tuple[Path, ...]:
    """The folders whose file systems receive what the daemon writes."""
    paths = []
    url = make_url(settings.store.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        paths.append(Path(url.database).parent)
    if settings.archive.mode == "move":
        paths += [settings.archive.folder, settings.archive.failed_folder]
    return tuple(dict.fromkeys(paths))


class DiskGuard:
    """``paused`` is read by the intake and the worker; ``check`` (main thread) sets and clears it."""

    def __init__(self, settings: Settings, free_space: FreeSpace = free_bytes) -> None:
        self.floor = int(settings.disk_guard.min_free_mb * 2**20)
        self.paths = guarded_paths(settings)
        self.free_space = free_space
        self.paused = threading.Event()
        self.last_readings: tuple[SpaceReading, ...] = ()

    def check(self) -> GuardChange | None:
        """Measure; returns the change when the guard pauses or resumes, else None."""
        if self.floor <= 0 or not self.paths:
            return None
        try:
            readings = tuple(SpaceReading(p, self.free_space(p)) for p in self.paths)
            self.last_readings = readings
        except OSError as exc:
            log.error("free space could not be measured (%s); the guard keeps its state", exc)
            return None
        if not self.paused.is_set():
            low = tuple(r for r in readings if r.free < self.floor)
            if low:
                self.paused.set()
                return GuardChange(True, low, self.floor)
        elif all(r.free >= self.floor * _RESUME_MARGIN for r in readings):
            self.paused.clear()
            return GuardChange(False, readings, self.floor)
        return None

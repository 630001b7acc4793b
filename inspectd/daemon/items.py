"""What travels between the daemon's stages."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ReadyFile:
    """A file judged complete (closed, renamed in, or size-stable)."""

    path: Path
    camera: str
    ready_at: float  # time.time() when it was judged complete


class InFlight:
    """Paths between intake and the recorder, so a file is never queued twice."""

    def __init__(self) -> None:
        self.paths: set[Path] = set()
        self.lock = threading.Lock()

    def claim(self, path: Path) -> bool:
        with self.lock:
            if path in self.paths:
                return False
            self.paths.add(path)
            return True

    def release(self, path: Path) -> None:
        with self.lock:
            self.paths.discard(path)

    def __len__(self) -> int:
        with self.lock:
            return len(self.paths)

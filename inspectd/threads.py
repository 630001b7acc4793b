"""A named background thread with a stop flag: the daemon's stages share this shape."""

from __future__ import annotations

import threading


class LoopThread:
    """Runs ``_loop`` on a daemon thread; ``_loop`` returns once ``_stop`` is set."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:  # pragma: no cover - each stage defines it
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Set the flag without waiting: the loop finishes its current step and returns."""
        self._stop.set()

    def stop(self, timeout: float | None = 30) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

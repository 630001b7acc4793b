"""``ConsoleContext``: what the console is built from, in a module of its own.

``app.py`` re-exports it (``serve``, the tests and the benchmarks build it from there); it lives here because the
route modules name it too, and ``app.py`` imports them: defined in ``app.py`` it would close an import loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from inspectd.config import ConsoleSettings, Settings
from inspectd.console.auth import CsrfTokens, Users
from inspectd.console.store_gate import StoreGate
from inspectd.data.archived_photos import PhotoRoots


@dataclass(frozen=True)
class ConsoleContext:
    """What the pages need; built once by ``serve``."""

    reader: Engine | None  # read-only (None: ``store`` opens it once the store is ready)
    writer: Engine | None  # may write reviews and nothing else
    settings: ConsoleSettings
    roots: PhotoRoots
    users: Users | None
    csrf: CsrfTokens
    store: StoreGate | None = None  # ``serve``: the store may not exist yet when the console starts
    # the whole configuration ``serve`` was started with (its file: ``source``): the pair the daemon of that file
    # runs and ``model.promotion`` for the Models page's Promote and Rollback (None: the page says it cannot)
    config: Settings | None = None

    def gate(self) -> StoreGate:
        """A new gate over fixed engines when ``store`` is None: call it once per app (``Pages`` does)."""
        return self.store if self.store is not None else StoreGate.of(self.reader, self.writer)

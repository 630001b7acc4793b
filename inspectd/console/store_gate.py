"""The store as the console sees it: ready (engines open, at the head schema) or why not yet.

The console serves at once; the daemon creates and migrates the store when it
starts (a minute on a first run while it loads its model). Until then every page
answers 503 with a page that reloads itself (``middleware.py``). One thread checks the
store once a second until it is ready, then stops: a request never touches the
database to learn that it is not there.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine

from inspectd.store.database import StoreError, current_revision, head_revision, open_engine
from inspectd.store.reviews import review_engine

log = logging.getLogger("inspectd.console")


class StoreGate:
    """``reader``/``writer`` are None until the store is ready; ``why`` says what is missing meanwhile."""

    interval_s = 1.0

    def __init__(self, url: str | None = None, reader: Engine | None = None, writer: Engine | None = None) -> None:
        self.url = url
        self.writer = writer
        self.reader = reader  # set last: a reader means ready
        self.why = "" if reader is not None else "not checked yet"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def of(cls, reader: Engine, writer: Engine) -> StoreGate:
        """A gate over engines already open (tests, benchmarks)."""
        return cls(reader=reader, writer=writer)

    @property
    def ready(self) -> bool:
        return self.reader is not None

    def check(self) -> bool:
        """One look at the store: True (and the engines open) once it exists at the head schema."""
        if self.ready:
            return True
        try:
            engine = open_engine(self.url, create=False)
            revision = current_revision(engine)
            if revision == head_revision():
                self.writer = review_engine(self.url)
                self.reader, self.why = engine, ""
                return True
            engine.dispose()
            self.why = (f"the store is at schema {revision or 'none'}, not {head_revision()}: "
                        "the daemon migrates it when it starts")
        except StoreError as exc:
            self.why = str(exc)
        except Exception as exc:  # a PostgreSQL server not up yet, a file being created: look again later
            self.why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        return False

    def watch(self) -> None:
        """Look again every ``interval_s`` in a thread until ready (at once when it already is)."""
        if self.check() or self._thread is not None:
            return
        log.info("serving; waiting for the store: %s", self.why)

        def run() -> None:
            said = time.monotonic()
            while not self._stop.wait(self.interval_s):
                if self.check():
                    log.info("the store is ready: the console serves its pages")
                    return
                if time.monotonic() - said >= 30:
                    log.info("still waiting for the store: %s", self.why)
                    said = time.monotonic()

        self._thread = threading.Thread(target=run, name="store-gate", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

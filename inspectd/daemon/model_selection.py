"""The daemon's end of promotions and rollbacks: which pair it starts with, and applying a requested change.

At start the pair is the newest *applied* change recorded against the config file and the pair it names
(``promotion/selection.py``), else the file's own; it is read before the model process starts, from a store
that exists already (a first start has none). A change someone requests (``inspectd models promote|rollback``,
the console) is a ``requested`` row: the main loop sees it within a second (``due``) and asks the reloader,
whose read of the config file (``read``) then runs that pair through the usual path (hashes verified in a new
model process, the canary, the swap between batches, the challenger restarted on the old champion). The
reloader's outcome marks the row ``applied`` or ``failed`` with the reason; a change superseded by a newer one,
or asked against a config file that names another pair now, is marked failed saying so. Polling the store
rather than a signal: the console's unit cannot signal the daemon's, and a PostgreSQL store is shared by hosts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from inspectd.config import Settings, load_settings
from inspectd.errors import ConfigError
from inspectd.promotion.selection import Selection, config_key, select_pair, with_pair
from inspectd.store.database import StoreError, open_engine
from inspectd.store.model_changes import ModelChange, changes_for, decide, newest_requested_id
from inspectd.store.schema import ModelChangeStatus

log = logging.getLogger("inspectd.promotion")


def _describe(change: ModelChange) -> str:
    return f"change {change.id} ({change.action} by {change.actor} at {change.created_at:%Y-%m-%d %H:%M:%S} UTC)"


class ModelSelector:
    """Reads the config file with the pair the store selects; marks the requested change it applied."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = Path(config_path)
        self._pending: ModelChange | None = None  # the requested change the reload in progress applies
        self._seen = 0  # newest requested change id already handed to the reloader

    def at_start(self, settings: Settings) -> Settings:
        """``settings`` with the pair of the newest applied change, read from the store if it exists."""
        try:
            engine = open_engine(settings.store.url, create=False)
        except StoreError:
            return settings  # no store yet: no change was ever recorded
        try:
            if not inspect(engine).has_table("model_changes"):
                return settings  # a store of an older schema: migrated after the model process started
            selection = select_pair(settings, changes_for(engine, config_key(self.config_path)),
                                    include_requested=False)
        except SQLAlchemyError as exc:
            log.warning("promotions: the store could not be read before start (%s); starting on the configuration "
                        "file's bundles", exc)
            return settings
        finally:
            engine.dispose()
        return self._chosen(settings, selection)

    def _chosen(self, settings: Settings, selection: Selection) -> Settings:
        for problem in selection.problems:
            log.error("promotions: %s", problem)
        if selection.pending is not None:
            log.info("promotions: applying %s: %s", _describe(selection.pending), selection.pair.describe())
        elif selection.change is not None:
            log.info("promotions: %s selects %s", _describe(selection.change), selection.pair.describe())
        return with_pair(settings, selection.pair)

    def due(self, engine: Engine) -> bool:
        """Whether a change was requested since the last call (then the reloader should read the file)."""
        newest = newest_requested_id(engine, config_key(self.config_path))
        if newest is None or newest <= self._seen:
            return False
        self._seen = newest
        return True

    def read(self, engine: Engine) -> Settings:
        """The config file with the selected pair, requested changes included (the reloader's read)."""
        key = config_key(self.config_path)
        try:
            settings = load_settings(self.config_path)
        except ConfigError as exc:
            self._pending = None
            for change in changes_for(engine, key, (ModelChangeStatus.REQUESTED.value,)):
                decide(engine, change.id, ModelChangeStatus.FAILED, f"the configuration file is invalid: {exc}")
                log.error("promotions: %s not applied: the configuration file is invalid", _describe(change))
            raise
        selection = select_pair(settings, changes_for(engine, key), include_requested=True)
        for change, why in selection.refused:
            decide(engine, change.id, ModelChangeStatus.FAILED, why)
            log.error("promotions: %s not applied: %s", _describe(change), why)
        self._pending = selection.pending
        return self._chosen(settings, selection)

    def outcome(self, engine: Engine, problem: str | None) -> None:
        """The reload that read the file ended: the change it applied is marked applied, or failed with why."""
        change, self._pending = self._pending, None
        if change is None:
            return
        if problem is None:
            decide(engine, change.id, ModelChangeStatus.APPLIED)
            log.info("promotions: %s applied", _describe(change))
        else:
            decide(engine, change.id, ModelChangeStatus.FAILED, problem)
            log.error("promotions: %s failed, the models in use stay: %s", _describe(change), problem)

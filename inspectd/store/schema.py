"""The ORM classes of the inspection history, mapped onto the Core tables of ``tables.py`` (the one definition of
the schema). The daemon, retention, alerts and the console write and read through these; the reader commands
use the tables alone, without ``sqlalchemy.orm``.

The schema is created and changed only by the Alembic migrations in ``migrations/``.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from inspectd.store import tables
# The enums live with the tables (the readers need them without the ORM); the writers import them from here too.
from inspectd.store.tables import OPEN_ALERT_STATUSES, AlertStatus, ModelChangeStatus, ReviewLabel  # noqa: F401


class Base(DeclarativeBase):
    # The tables' own, so that the migrations' comparison (migrations/env.py) sees the whole schema.
    metadata = tables.metadata


class BundleRow(Base):
    """Every model bundle that produced an inspection."""

    __table__ = tables.bundles


class InspectionRow(Base):
    __table__ = tables.inspections


class ArtifactRow(Base):
    """Anomaly map and mask as PNG blobs, apart so history queries stay light."""

    __table__ = tables.artifacts


class ReviewRow(Base):
    """A person's verdict on an inspection; never overwrites the model's. The newest review of a row counts."""

    __table__ = tables.reviews


class ChallengerResultRow(Base):
    """A challenger bundle's result on an image the champion inspected (migration 0006)."""

    __table__ = tables.challenger_results


class ArchiveFileRow(Base):
    """A file inspectd moved into the archive or the failed folder that no inspection row points to (migration 0005)."""

    __table__ = tables.archive_files


class AlertRow(Base):
    """Outbox: written with its inspection, sent and marked by the relay."""

    __table__ = tables.alerts


class ModelChangeRow(Base):
    """A promotion or rollback of the champion/challenger pair (migration 0007; ``tables.model_changes``)."""

    __table__ = tables.model_changes

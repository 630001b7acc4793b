"""Tables of the inspection history: the one definition of the schema, in SQLAlchemy Core.

The schema is created and changed only by the Alembic migrations in ``migrations/``; these tables are how the
code reads and writes it. The ORM classes of ``schema.py`` map onto them. The reader commands (``history``,
``stats``, ``alerts``) query these tables without importing ``sqlalchemy.orm``: the ORM's import and mapper set-up
cost them ~0.1 s of a ~0.3 s start (``benchmarks/cli_startup.py``).
"""

from __future__ import annotations

import enum
from functools import partial

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

# A column NOT NULL unless it says ``optional``: the ORM's ``Mapped[X]`` against ``Mapped[X | None]``.
required = partial(Column, nullable=False)
optional = partial(Column, nullable=True)


class ReviewLabel(str, enum.Enum):
    """Values of ``reviews.label``: what a person says the part is."""

    GOOD = "good"
    DEFECT = "defect"


class AlertStatus(str, enum.Enum):
    """Values of ``alerts.status``."""

    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after alerts.retry.max_attempts
    SUPPRESSED = "suppressed"  # never sent: its rule's cooldown was running (payload: suppressed_by, cooldown_s)

    def __str__(self) -> str:
        return self.value


OPEN_ALERT_STATUSES = (AlertStatus.PENDING.value, AlertStatus.FAILED.value)


# Every model bundle that produced an inspection.
bundles = Table(
    "bundles", metadata,
    Column("id", Integer, primary_key=True),
    required("sha256", String(64), unique=True),
    required("name", String(200)),
    required("base_model", String(400)),
    required("quantization", String(20)),
    required("path", Text),
    required("first_seen", DateTime()),
)

LIVE_PHOTO = "archived_path IS NOT NULL AND photo_removed_at IS NULL"


def _model_said() -> list[Column]:
    """What a model said of a part, in the champion's row (``inspections``) and a challenger's
    (``challenger_results``) alike: new Column objects each call (a column belongs to one table)."""
    return [required("verdict", String(16)), optional("score", Float), required("threshold", Float),
            optional("reasoning", Text), optional("raw_reply", Text), optional("parse_status", String(20)),
            # A bundle that reads mirror views (score.views > 1; migration 0008): each view's score in the order of
            # inspection/view_votes.py's FLIPS (null where its reply did not parse; ``score`` is the mean of the rest),
            # which view's reasoning is shown (0 = the photo as it came), and whether the views fell on both sides of
            # the threshold (the verdict then depends on how the part lay: the history's review queue). Null with
            # one view.
            optional("view_scores", JSON(none_as_null=True)), optional("shown_view", Integer),
            optional("views_disagree", Boolean)]


inspections = Table(
    "inspections", metadata,
    Column("id", Integer, primary_key=True),
    required("created_at", DateTime()),
    required("camera", String(200)),
    required("source_path", Text),
    optional("archived_path", Text),
    required("sha256", String(64), unique=True),
    required("size_bytes", Integer),
    *_model_said(),
    optional("bundle_id", Integer, ForeignKey("bundles.id")),
    optional("real_params", JSON),
    optional("real_fallback", Boolean),
    required("reasoning_tokens", Integer, default=0),
    required("tokens_used", Integer, default=0),
    optional("image_width", Integer),
    optional("image_height", Integer),
    optional("queue_ms", Float),
    optional("load_ms", Float),
    optional("model_ms", Float),
    optional("real_ms", Float),
    optional("latency_ms", Float),
    optional("error", Text),
    # Retention (migration 0005): when it deleted the archived (or failed) file, the row staying; and when it
    # reduced a reviewed row past rows_days to a tombstone (maps, alerts and reply gone, reviews kept).
    optional("photo_removed_at", DateTime()),
    optional("tombstoned_at", DateTime()),
    Index("ix_inspections_created_at", "created_at"),
    Index("ix_inspections_camera_created_at", "camera", "created_at"),
    Index("ix_inspections_verdict_created_at", "verdict", "created_at"),
    # Rows whose file is not (yet) in the archive: few in move mode; the crash-window repair reads them.
    Index("ix_inspections_unarchived", "id", sqlite_where=text("archived_path IS NULL"),
          postgresql_where=text("archived_path IS NULL")),
    # Rows whose archived file is still there, oldest first: what retention's archive budgets pick from.
    Index("ix_inspections_live_photos", "created_at", sqlite_where=text(LIVE_PHOTO),
          postgresql_where=text(LIVE_PHOTO)),
)

# Anomaly map and mask as PNG blobs, apart so history queries stay light.
artifacts = Table(
    "artifacts", metadata,
    Column("inspection_id", Integer, ForeignKey("inspections.id", ondelete="CASCADE"), primary_key=True),
    required("map_png", LargeBinary),
    required("mask_png", LargeBinary),
    # Each reasoning token's own attention map, its place in the reasoning and whether ReAL kept it
    # (store/token_maps.py); null for rows recorded before migration 0004.
    optional("token_maps", LargeBinary),
)

# A person's verdict on an inspection; never overwrites the model's. The newest review of a row counts.
reviews = Table(
    "reviews", metadata,
    Column("id", Integer, primary_key=True),
    # RESTRICT (migration 0005; CASCADE before): the store itself refuses to delete a reviewed inspection, so
    # reviews, the line's training labels, never vanish with their row. Retention keeps such rows as tombstones.
    required("inspection_id", Integer, ForeignKey("inspections.id", ondelete="RESTRICT"), index=True),
    required("label", String(16)),
    optional("note", Text),
    required("reviewer", String(200)),
    required("created_at", DateTime()),
)

# A challenger bundle's result on an image the champion inspected (migration 0006): the same verdict, score,
# reasoning and map fields, never an alert, never a file moved. One per inspection and bundle.
challenger_results = Table(
    "challenger_results", metadata,
    Column("id", Integer, primary_key=True),
    required("inspection_id", Integer, ForeignKey("inspections.id", ondelete="CASCADE")),
    required("bundle_id", Integer, ForeignKey("bundles.id")),
    required("created_at", DateTime()),
    *_model_said(),
    optional("real_fallback", Boolean),
    optional("model_ms", Float),
    optional("error", Text),
    optional("map_png", LargeBinary),
    optional("mask_png", LargeBinary),
    UniqueConstraint("inspection_id", "bundle_id", name="uq_challenger_results_inspection_bundle"),
    Index("ix_challenger_results_bundle_created", "bundle_id", "created_at"),
)

# A file inspectd moved into the archive or the failed folder that no inspection row points to (migration 0005).
# A duplicate (bytes recorded already) is archived without a row of its own, and rows_days may delete a row
# before archive_days removes its photo (and a failed file's ``.error.json``). Retention deletes only files the
# store names, so these are named here, with the camera whose box archived them, and go by the archive's own
# budgets. No foreign key: the row it came from may be gone.
archive_files = Table(
    "archive_files", metadata,
    Column("id", Integer, primary_key=True),
    required("path", Text),
    required("camera", String(200)),
    required("size_bytes", Integer),
    required("created_at", DateTime()),
    optional("inspection_id", Integer),  # the row it was or duplicates
    Index("ix_archive_files_created_at", "created_at"),
)

# Outbox: written with its inspection, sent and marked by the relay.
alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True),
    # Empty for alerts about the box itself (disk guard); rule names the event then.
    optional("inspection_id", Integer, ForeignKey("inspections.id", ondelete="CASCADE")),
    required("rule", String(200)),
    required("channel", String(200)),
    required("camera", String(200)),
    required("idempotency_key", String(200), unique=True),
    required("payload", JSON),
    required("status", String(16), default=AlertStatus.PENDING.value),
    required("attempts", Integer, default=0),
    required("next_attempt_at", DateTime()),
    optional("last_error", Text),
    required("created_at", DateTime()),
    optional("delivered_at", DateTime()),
    Index("ix_alerts_status_next_attempt", "status", "next_attempt_at"),
    Index("ix_alerts_rule_camera_created", "rule", "camera", "created_at"),
    Index("ix_alerts_inspection_id", "inspection_id"),
)


class ModelChangeStatus(str, enum.Enum):
    """Values of ``model_changes.status``."""

    REQUESTED = "requested"  # written by ``inspectd models promote|rollback`` or the console; the daemon applies it
    APPLIED = "applied"  # the daemon's reload loaded it, verified its hashes and passed the canary
    FAILED = "failed"  # refused by the daemon (``detail`` says why); the models in use stayed

    def __str__(self) -> str:
        return self.value


# A promotion or rollback of the champion/challenger pair: who asked, when, which bundles (paths and manifest
# digests) before and after, the comparison on reviewed parts at that moment, and what the daemon made of it. The
# pair a daemon runs is its config's (model.bundle, model.challenger.bundle) unless the newest applied change
# recorded against that same config file and pair says otherwise (``promotion/selection.py``).
model_changes = Table(
    "model_changes", metadata,
    Column("id", Integer, primary_key=True),
    required("created_at", DateTime()),
    required("action", String(16)),  # promote | rollback
    required("actor", String(200)),
    required("status", String(16), default=ModelChangeStatus.REQUESTED.value),
    required("config_path", Text),
    required("config_champion", Text),  # the config's model.bundle when it was asked
    optional("config_challenger", Text),
    required("champion_path", Text),  # the pair after the change
    required("champion_digest", String(64)),
    optional("challenger_path", Text),
    optional("challenger_digest", String(64)),
    required("previous_champion_path", Text),  # the pair before it
    required("previous_champion_digest", String(64)),
    optional("previous_challenger_path", Text),
    optional("previous_challenger_digest", String(64)),
    required("forced", Boolean, default=False),
    optional("reason", Text),  # the person's words
    optional("comparison", JSON),  # figures on reviewed parts, and the rule
    optional("detail", Text),  # why the daemon refused it
    optional("decided_at", DateTime()),  # applied or failed at
    Index("ix_model_changes_config_status", "config_path", "status"),
)

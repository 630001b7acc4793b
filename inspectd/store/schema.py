"""Tables of the inspection history (SQLAlchemy 2 ORM).

The schema is created and changed only by the Alembic migrations in
``migrations/``; these classes are how the code reads and writes it.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class BundleRow(Base):
    """Every model bundle that produced an inspection."""

    __tablename__ = "bundles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str] = mapped_column(String(400))
    quantization: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime())


LIVE_PHOTO = "archived_path IS NOT NULL AND photo_removed_at IS NULL"


class InspectionRow(Base):
    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    camera: Mapped[str] = mapped_column(String(200))
    source_path: Mapped[str] = mapped_column(Text)
    archived_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float] = mapped_column(Float)
    reasoning: Mapped[str | None] = mapped_column(Text, nullable=True)
    raw_reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    parse_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id"), nullable=True)
    real_params: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    real_fallback: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    image_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queue_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    load_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    real_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Retention (migration 0005): when it deleted the archived (or failed) file, the row staying; and when it
    # reduced a reviewed row past rows_days to a tombstone (maps, alerts and reply gone, reviews kept).
    photo_removed_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    tombstoned_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)

    __table_args__ = (
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


class ArtifactRow(Base):
    """Anomaly map and mask as PNG blobs, apart so history queries stay light."""

    __tablename__ = "artifacts"

    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), primary_key=True)
    map_png: Mapped[bytes] = mapped_column(LargeBinary)
    mask_png: Mapped[bytes] = mapped_column(LargeBinary)
    # Each reasoning token's own attention map, its place in the reasoning and whether ReAL kept it
    # (store/token_maps.py); null for rows recorded before migration 0004.
    token_maps: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ReviewLabel(str, enum.Enum):
    """Values of ``reviews.label``: what a person says the part is."""

    GOOD = "good"
    DEFECT = "defect"


class ReviewRow(Base):
    """A person's verdict on an inspection; never overwrites the model's. The newest review of a row counts."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # RESTRICT (migration 0005; CASCADE before): the store itself refuses to delete a reviewed inspection, so
    # reviews, the line's training labels, never vanish with their row. Retention keeps such rows as tombstones.
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="RESTRICT"), index=True)
    label: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime())


class ChallengerResultRow(Base):
    """A challenger bundle's result on an image the champion inspected (migration 0006): the same verdict,
    score, reasoning and map fields, never an alert, never a file moved. One per inspection and bundle."""

    __tablename__ = "challenger_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime())
    verdict: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float] = mapped_column(Float)
    reasoning: Mapped[str | None] = mapped_column(Text, nullable=True)
    raw_reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    parse_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    real_fallback: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    model_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    map_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    mask_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    __table_args__ = (
        UniqueConstraint("inspection_id", "bundle_id", name="uq_challenger_results_inspection_bundle"),
        Index("ix_challenger_results_bundle_created", "bundle_id", "created_at"),
    )


class ArchiveFileRow(Base):
    """A file inspectd moved into the archive or the failed folder that no inspection row points to (migration 0005).

    A duplicate (bytes recorded already) is archived without a row of its own, and rows_days may delete a row
    before archive_days removes its photo (and a failed file's ``.error.json``). Retention deletes only files
    the store names, so these are named here, with the camera whose box archived them, and go by the archive's
    own budgets. No foreign key: the row it came from may be gone.
    """

    __tablename__ = "archive_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    camera: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    inspection_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the row it was or duplicates

    __table_args__ = (Index("ix_archive_files_created_at", "created_at"),)


class AlertStatus(str, enum.Enum):
    """Values of ``alerts.status``."""

    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after alerts.retry.max_attempts
    SUPPRESSED = "suppressed"  # never sent: its rule's cooldown was running (payload: suppressed_by, cooldown_s)

    def __str__(self) -> str:
        return self.value


OPEN_ALERT_STATUSES = (AlertStatus.PENDING.value, AlertStatus.FAILED.value)


class AlertRow(Base):
    """Outbox: written with its inspection, sent and marked by the relay."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Empty for alerts about the box itself (disk guard); rule names the event then.
    inspection_id: Mapped[int | None] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"),
                                                      nullable=True)
    rule: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    camera: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime())
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)

    __table_args__ = (
        Index("ix_alerts_status_next_attempt", "status", "next_attempt_at"),
        Index("ix_alerts_rule_camera_created", "rule", "camera", "created_at"),
        Index("ix_alerts_inspection_id", "inspection_id"),
    )

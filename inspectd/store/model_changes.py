"""Rows of ``model_changes``: promotions and rollbacks asked for, and the daemon's answer to each.

Only what reads and writes the table lives here; which pair a daemon runs and the rule a promotion must pass
are ``inspectd/promotion/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from inspectd.store.clock import utcnow
from inspectd.store.schema import ModelChangeRow, ModelChangeStatus

# the columns a listing shows, in order (``inspectd models changes``, the console's Models page)
CHANGE_COLUMNS = ("id", "created_at", "action", "actor", "status", "champion_path", "challenger_path", "forced",
                  "reason", "detail", "decided_at")


@dataclass(frozen=True)
class ModelChange:
    """One row, detached from its session."""

    id: int
    created_at: datetime
    action: str
    actor: str
    status: str
    config_path: str
    config_champion: str
    config_challenger: str | None
    champion_path: str
    champion_digest: str
    challenger_path: str | None
    challenger_digest: str | None
    previous_champion_path: str
    previous_champion_digest: str
    previous_challenger_path: str | None
    previous_challenger_digest: str | None
    forced: bool
    reason: str | None
    comparison: dict | None
    detail: str | None
    decided_at: datetime | None

    @classmethod
    def of(cls, row: ModelChangeRow) -> ModelChange:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


def add_change(engine: Engine, **values) -> ModelChange:
    """Record a requested change (the caller checked it); returns it with its id."""
    row = ModelChangeRow(created_at=utcnow(), status=ModelChangeStatus.REQUESTED.value, **values)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return ModelChange.of(row)


def changes_for(engine: Engine, config_path: str, statuses: tuple[str, ...] | None = None) -> list[ModelChange]:
    """The changes recorded against one config file, newest first."""
    query = select(ModelChangeRow).where(ModelChangeRow.config_path == config_path)
    if statuses is not None:
        query = query.where(ModelChangeRow.status.in_(statuses))
    with Session(engine) as session:
        return [ModelChange.of(row) for row in session.scalars(query.order_by(ModelChangeRow.id.desc()))]


def newest_requested_id(engine: Engine, config_path: str) -> int | None:
    """The newest change waiting for the daemon of this config: one indexed read, cheap enough every second."""
    with Session(engine) as session:
        return session.scalar(select(ModelChangeRow.id)
                              .where(ModelChangeRow.config_path == config_path,
                                     ModelChangeRow.status == ModelChangeStatus.REQUESTED.value)
                              .order_by(ModelChangeRow.id.desc()).limit(1))


def change(engine: Engine, change_id: int) -> ModelChange | None:
    with Session(engine) as session:
        row = session.get(ModelChangeRow, change_id)
        return None if row is None else ModelChange.of(row)


def recent_changes(engine: Engine, limit: int = 50) -> list[ModelChange]:
    """Every config's changes, newest first."""
    with Session(engine) as session:
        return [ModelChange.of(row) for row in
                session.scalars(select(ModelChangeRow).order_by(ModelChangeRow.id.desc()).limit(limit))]


def decide(engine: Engine, change_id: int, status: ModelChangeStatus, detail: str | None = None) -> None:
    """Mark a requested change applied or failed (a change already decided stays as it was)."""
    with Session(engine) as session, session.begin():
        session.execute(update(ModelChangeRow)
                        .where(ModelChangeRow.id == change_id,
                               ModelChangeRow.status == ModelChangeStatus.REQUESTED.value)
                        .values(status=status.value, detail=detail, decided_at=utcnow()))

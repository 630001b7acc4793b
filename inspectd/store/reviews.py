"""Reviews: a person's good/defect label on an inspection, beside (never over) the model's verdict.

The console is the one writer here. On SQLite it writes through a connection
whose authorizer refuses any change to a table other than ``reviews``, but
for an INSERT into ``model_changes`` (a promotion or rollback asked from the
Models page; the daemon applies it and marks it, the console never updates
or deletes one), so a bug in the console cannot touch the daemon's rows; on PostgreSQL give the
console's role SELECT on everything and INSERT on ``reviews`` and
``model_changes`` only (with USAGE on their id sequences).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.engine import make_url

from inspectd.verdict import Verdict
from inspectd.store.clock import utcnow
from inspectd.store.database import StoreError
from inspectd.store.tables import ReviewLabel, inspections, reviews

_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
# the console's writes: (action, table); anything else that changes a table is refused
_CONSOLE_WRITES = {(sqlite3.SQLITE_INSERT, "reviews"), (sqlite3.SQLITE_UPDATE, "reviews"),
                   (sqlite3.SQLITE_DELETE, "reviews"), (sqlite3.SQLITE_INSERT, "model_changes")}
_ALLOWED_READS_AND_TRANSACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_TRANSACTION,
                                   sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_PRAGMA}


@dataclass(frozen=True)
class Review:
    inspection_id: int
    label: str
    note: str | None
    reviewer: str
    created_at: datetime


def _reviews_only(action: int, table: str | None, *_: object) -> int:
    """Reviews, and new rows of ``model_changes`` (never an update or delete of one: the daemon decides them)."""
    if action in _WRITES:
        return sqlite3.SQLITE_OK if (action, table) in _CONSOLE_WRITES else sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _ALLOWED_READS_AND_TRANSACTIONS else sqlite3.SQLITE_DENY


def review_engine(url: str) -> Engine:
    """An engine that can write reviews and add model changes, nothing else (SQLite: enforced by an authorizer)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    path = parsed.database

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, timeout=10, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout=10000")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.set_authorizer(_reviews_only)
        return connection

    return create_engine(parsed, creator=connect)


def add_review(engine: Engine, inspection_id: int, label: str, note: str | None, reviewer: str) -> Review:
    review = Review(inspection_id, ReviewLabel(label).value, (note or "").strip()[:2000] or None, reviewer, utcnow())
    with engine.begin() as connection:
        if connection.scalar(select(inspections.c.id).where(inspections.c.id == inspection_id)) is None:
            raise StoreError(f"inspection {inspection_id} does not exist")
        connection.execute(insert(reviews).values(**dataclasses.asdict(review)))
    return review


def reviews_of(engine: Engine, inspection_ids: list[int]) -> dict[int, list[Review]]:
    """Every review of these rows, oldest first; the last one is the row's label."""
    if not inspection_ids:
        return {}
    r = reviews.c
    query = (select(r.inspection_id, r.label, r.note, r.reviewer, r.created_at)
             .where(r.inspection_id.in_(inspection_ids)).order_by(r.id))
    out: dict[int, list[Review]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            out.setdefault(row.inspection_id, []).append(Review(*row))
    return out


def agrees(verdict: str, label: str) -> bool | None:
    """Whether a review confirms the model: defect = anomalous, good = normal; None for unknown/failed rows."""
    if verdict not in (Verdict.ANOMALOUS, Verdict.NORMAL):
        return None
    return (verdict == Verdict.ANOMALOUS) == (label == ReviewLabel.DEFECT)

"""Reviews: a person's good/defect label on an inspection, beside (never over) the model's verdict.

The console is the one writer here. On SQLite it writes through a connection
whose authorizer refuses any change to a table other than ``reviews``, so a
bug in the console cannot touch the daemon's rows; on PostgreSQL give the
console's role SELECT on everything and INSERT on ``reviews`` only.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from inspectd.verdict import Verdict
from inspectd.store.clock import utcnow
from inspectd.store.database import StoreError
from inspectd.store.schema import InspectionRow, ReviewLabel, ReviewRow

_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
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
    if action in _WRITES:
        return sqlite3.SQLITE_OK if table == "reviews" else sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _ALLOWED_READS_AND_TRANSACTIONS else sqlite3.SQLITE_DENY


def review_engine(url: str) -> Engine:
    """An engine that can write reviews and nothing else (SQLite: enforced by an authorizer)."""
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
    with Session(engine) as session, session.begin():
        if session.scalar(select(InspectionRow.id).where(InspectionRow.id == inspection_id)) is None:
            raise StoreError(f"inspection {inspection_id} does not exist")
        session.add(ReviewRow(**dataclasses.asdict(review)))
    return review


def reviews_of(engine: Engine, inspection_ids: list[int]) -> dict[int, list[Review]]:
    """Every review of these rows, oldest first; the last one is the row's label."""
    if not inspection_ids:
        return {}
    query = select(ReviewRow).where(ReviewRow.inspection_id.in_(inspection_ids)).order_by(ReviewRow.id)
    out: dict[int, list[Review]] = {}
    with Session(engine) as session:
        for row in session.scalars(query):
            out.setdefault(row.inspection_id, []).append(
                Review(row.inspection_id, row.label, row.note, row.reviewer, row.created_at))
    return out


def agrees(verdict: str, label: str) -> bool | None:
    """Whether a review confirms the model: defect = anomalous, good = normal; None for unknown/failed rows."""
    if verdict not in (Verdict.ANOMALOUS, Verdict.NORMAL):
        return None
    return (verdict == Verdict.ANOMALOUS) == (label == ReviewLabel.DEFECT)

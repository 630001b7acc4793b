"""The alerts outbox: what goes into it (payload, key, cooldown), written inside the caller's transaction.

The relay (``relay.py``) sends what is here; rules (``rules.py``) say which
inspections raise alerts. Alerts about the box itself (the disk guard) carry
no inspection.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspectd.alerts.rules import matching_alerts
from inspectd.config import AlertRule
from inspectd.store.schema import AlertRow, AlertStatus, InspectionRow

log = logging.getLogger("inspectd.alerts")



def alert_key(identity: str, rule: str, channel: str) -> str:
    """Stable per (image bytes or event, rule, channel): a resend after a crash carries the same key."""
    return hashlib.sha256(f"{identity}|{rule}|{channel}".encode()).hexdigest()


def _row(inspection_id: int | None, rule: str, channel: str, camera: str, key: str, payload: dict,
         now: datetime) -> AlertRow:
    return AlertRow(inspection_id=inspection_id, rule=rule, channel=channel, camera=camera, idempotency_key=key,
                    payload=payload, status=AlertStatus.PENDING.value, attempts=0, next_attempt_at=now,
                    created_at=now)


def add_inspection_alerts(session: Session, rules: tuple[AlertRule, ...], row: InspectionRow,
                          now: datetime) -> int:
    """Queue the alerts ``row`` raises (rules matched); returns how many will be sent. One held back by its
    rule's cooldown is stored as ``suppressed``."""
    added = 0
    for draft in matching_alerts(rules, row.camera, row.verdict, row.score):
        payload = {
            "inspection_id": row.id,
            "rule": draft.rule,
            "camera": row.camera,
            "verdict": row.verdict,
            "score": row.score,
            "threshold": round(row.threshold, 4),
            "reasoning": row.reasoning,
            "error": row.error,
            "source_path": row.source_path,
            "sha256": row.sha256,
            "created_at": now.isoformat(timespec="milliseconds") + "Z",
        }
        alert = _row(row.id, draft.rule, draft.channel, row.camera, alert_key(row.sha256, draft.rule, draft.channel),
                     payload, now)
        in_force = _cooldown_in_force(session, draft.rule, draft.channel, row.camera, draft.cooldown_s, now)
        if in_force is not None:  # kept, not sent: the console and `inspectd alerts` show what the cooldown held
            log.info("alert %s/%s for #%d suppressed by the cooldown (%g s) of alert #%d", draft.rule, draft.channel,
                     row.id, draft.cooldown_s, in_force)
            alert.status = AlertStatus.SUPPRESSED.value
            alert.payload = {**payload, "suppressed_by": in_force, "cooldown_s": draft.cooldown_s}
        else:
            added += 1
        session.add(alert)
    return added


def _cooldown_in_force(session: Session, rule: str, channel: str, camera: str, cooldown_s: float,
                       now: datetime) -> int | None:
    """The alert (sent or still to send) of this rule, channel and camera within the last ``cooldown_s``; a
    suppressed one does not count, so a steady stream of defects still raises one alert per cooldown."""
    if cooldown_s <= 0:
        return None
    return session.scalar(
        select(AlertRow.id)
        .where(
            AlertRow.rule == rule,
            AlertRow.camera == camera,
            AlertRow.channel == channel,
            AlertRow.status != AlertStatus.SUPPRESSED.value,
            AlertRow.created_at > now - timedelta(seconds=cooldown_s),
        )
        .order_by(AlertRow.id.desc())
        .limit(1)
    )


def add_system_alerts(session: Session, channels: tuple[str, ...], event: str, details: dict,
                      now: datetime) -> int:
    """Queue one alert per channel about the box itself (``event``, e.g. ``disk_low``); returns how many."""
    payload = system_payload(event, details, now)
    for channel in channels:
        session.add(_row(None, event, channel, "", alert_key(f"{event}|{payload['created_at']}", event, channel),
                         payload, now))
    return len(channels)


def system_payload(event: str, details: dict, now: datetime) -> dict:
    """What an alert about the box carries: the event, when, which box (several may share a channel and a store;
    an event names no camera), and the event's own fields (``details``)."""
    return {"event": event, "created_at": now.isoformat(timespec="milliseconds") + "Z", "host": socket.gethostname(),
            **details}

"""The outbox relay: send pending alerts, retry with backoff and jitter.

Alerts are written in the same transaction as their inspection, so none is
lost to a crash; the relay marks each delivered after its channel accepts it.
A crash between sending and marking resends it under the same idempotency
key, which receivers use to drop the repeat (at-least-once delivery).
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from inspectd.alerts.channels import Delivery, DeliveryError, send
from inspectd.config import AlertSettings
from inspectd.store.clock import utcnow
from inspectd.store.schema import AlertRow, AlertStatus, InspectionRow
from inspectd.threads import LoopThread

log = logging.getLogger("inspectd.alerts")


def backoff_s(attempts: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff, each delay scaled by a random factor in [0.5, 1.0] (equal jitter)."""
    delay = min(max_s, base_s * (2 ** max(0, attempts - 1)))
    return delay * (0.5 + 0.5 * rng.random())


class AlertRelay(LoopThread):
    def __init__(self, engine: Engine, settings: AlertSettings, seed: int | None = None) -> None:
        super().__init__("inspectd-alerts")
        self.engine = engine
        self.settings = settings
        self._wake = threading.Event()
        self._rng = random.Random(seed)

    def stop(self, timeout: float | None = 30) -> None:
        self._wake.set()
        super().stop(timeout)

    def wake(self) -> None:
        self._wake.set()

    def reload(self, settings: AlertSettings) -> None:
        self.settings = settings

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # the relay must outlive a bad row or a DB hiccup
                log.exception("alert relay pass failed; retrying")
            self._wake.wait(0.5)
            self._wake.clear()

    def deliver_due(self, limit: int = 100) -> int:
        now = utcnow()
        with Session(self.engine) as session:
            due = session.execute(
                select(AlertRow, InspectionRow.archived_path)
                .outerjoin(InspectionRow, InspectionRow.id == AlertRow.inspection_id)
                .where(AlertRow.status == AlertStatus.PENDING.value, AlertRow.next_attempt_at <= now)
                .order_by(AlertRow.id)
                .limit(limit)
            ).all()
            # Where the photo is now: the file is moved into the archive after the alert was queued with its row.
            work = [(row.id, row.channel, row.idempotency_key,
                     {**row.payload, "archived_path": archived} if row.inspection_id is not None else dict(row.payload),
                     row.attempts) for row, archived in due]
        channels = {c.name: c for c in self.settings.channels}
        sent = 0
        for alert_id, channel_name, key, payload, attempts in work:
            if self._stop.is_set():
                break
            channel = channels.get(channel_name)
            try:
                if channel is None:
                    raise DeliveryError(f"channel {channel_name!r} is no longer configured")
                send(channel, Delivery(key, payload))
            except DeliveryError as exc:
                self._failed(alert_id, attempts + 1, str(exc))
                continue
            self._update(alert_id, status=AlertStatus.DELIVERED.value, attempts=attempts + 1, delivered_at=utcnow(), last_error=None)
            sent += 1
        return sent

    def _failed(self, alert_id: int, attempts: int, error: str) -> None:
        retry = self.settings.retry
        if attempts >= retry.max_attempts:
            log.error("alert %d gave up after %d attempts: %s", alert_id, attempts, error)
            self._update(alert_id, status=AlertStatus.FAILED.value, attempts=attempts, last_error=error)
            return
        delay = backoff_s(attempts, retry.base_s, retry.max_s, self._rng)
        log.warning("alert %d attempt %d failed (%s); next try in %.1f s", alert_id, attempts, error, delay)
        self._update(
            alert_id, attempts=attempts, last_error=error, next_attempt_at=utcnow() + timedelta(seconds=delay)
        )

    def _update(self, alert_id: int, **values) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(AlertRow).where(AlertRow.id == alert_id).values(**values))


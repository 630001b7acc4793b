"""One definition of the stats' "day": per day, shift and camera in the plant's time zone (``console.time_zone``).

Both ``inspectd stats`` and the console's stats page read here, so they give
the same numbers for the same rows. Rows are counted per UTC hour in SQL (one
GROUP BY over the time index) and the hours are placed into local days and
shifts here, so the zone and the shift hours are settings, not the database's.
Zones whose offset is not a whole hour place rows by their UTC hour (a row is
at most 59 minutes off, only in such zones).

The SQL view ``inspection_daily_stats`` stays for SQL users: it counts UTC days.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, case, func, select

from inspectd.errors import InspectdError
from inspectd.store.reviews import agrees
from inspectd.store.tables import inspections, reviews
from inspectd.verdict import Verdict

# What `inspectd stats` prints per day and camera (the SQL view's columns, in the plant's days).
DAILY_COLUMNS = ("day", "camera", "inspections", "anomalous", "normal", "unknown", "failed", "anomaly_rate",
                 "mean_latency_ms", "mean_model_ms")


@dataclass
class Tally:
    anomalous: int = 0
    normal: int = 0
    unknown: int = 0
    failed: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0
    model_sum: float = 0.0
    model_n: int = 0

    @property
    def other(self) -> int:
        return self.unknown + self.failed

    @property
    def inspections(self) -> int:
        return self.anomalous + self.normal + self.unknown + self.failed

    @property
    def rate(self) -> float | None:
        """anomalous / (anomalous + normal); None without either."""
        judged = self.anomalous + self.normal
        return self.anomalous / judged if judged else None


@dataclass
class Stats:
    zone: str
    days: list[str]
    cameras: list[str]
    by_day: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (day, camera)
    by_shift: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (shift label, camera)
    shifts: list[str] = field(default_factory=list)
    scores: dict[str, list[int]] = field(default_factory=dict)  # camera -> 10 bins over [0, 1]
    reviews: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (reviewed, agreeing)

    def daily_rows(self) -> list[dict]:
        """Per day and camera, newest day first: the columns of ``DAILY_COLUMNS``."""
        rows = []
        for (day, camera), t in sorted(self.by_day.items(), key=lambda item: (_neg(item[0][0]), item[0][1])):
            rows.append({"day": day, "camera": camera, "inspections": t.inspections, "anomalous": t.anomalous,
                         "normal": t.normal, "unknown": t.unknown, "failed": t.failed, "anomaly_rate": t.rate,
                         "mean_latency_ms": t.latency_sum / t.latency_n if t.latency_n else None,
                         "mean_model_ms": t.model_sum / t.model_n if t.model_n else None})
        return rows


def _neg(day: str) -> tuple[int, ...]:
    return tuple(-int(part) for part in day.split("-"))


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InspectdError(f"time zone {name!r} is not an IANA zone (e.g. UTC, Europe/Berlin)") from None


def day_start(moment: datetime, zone: str) -> datetime:
    """The start (naive UTC, as the store keeps times) of the plant's day that holds ``moment`` (naive UTC)."""
    tz = zone_of(zone)
    local = moment.replace(tzinfo=timezone.utc).astimezone(tz)
    midnight = datetime.combine(local.date(), time(), tzinfo=tz)
    return midnight.astimezone(timezone.utc).replace(tzinfo=None)


def _hour_bucket(engine: Engine):
    if engine.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H", inspections.c.created_at)
    return func.to_char(func.date_trunc("hour", inspections.c.created_at), "YYYY-MM-DD HH24")


def shift_label(hour: int, starts: tuple[int, ...]) -> str:
    start = max((h for h in starts if h <= hour), default=starts[-1])
    end = starts[(starts.index(start) + 1) % len(starts)]
    return f"{start:02d}-{end:02d}"


def collect(engine: Engine, days: int | None, zone: str = "UTC", shifts: tuple[int, ...] = (6, 14, 22),
            now: datetime | None = None, since: datetime | None = None, camera: str | None = None) -> Stats:
    """Rows of the last ``days`` plant days (today included; None: every day) and since the plant day that holds
    ``since`` (naive UTC; its whole day is counted), optionally of one camera."""
    tz = zone_of(zone)
    now = now or datetime.now(timezone.utc)
    now = now.astimezone(timezone.utc).replace(tzinfo=None) if now.tzinfo else now
    starts = [day_start(since, zone)] if since is not None else []
    if days is not None:
        starts.append(day_start(now - timedelta(days=days - 1), zone))
    start = max(starts) if starts else None
    row, review = inspections.c, reviews.c
    where = [row.created_at >= start] if start is not None else []
    if camera is not None:
        where.append(row.camera == camera)
    bucket = _hour_bucket(engine).label("hour")
    counts = (select(bucket, row.camera, row.verdict, func.count(), func.sum(row.latency_ms), func.count(row.latency_ms),
                     func.sum(row.model_ms), func.count(row.model_ms))
              .where(*where).group_by(bucket, row.camera, row.verdict))
    bins = case(*((row.score < (i + 1) / 10, i) for i in range(9)), else_=9).label("bin")  # portable SQL
    histogram = (select(row.camera, bins, func.count()).where(*where, row.score.is_not(None))
                 .group_by(row.camera, bins))
    latest = select(func.max(review.id)).group_by(review.inspection_id).scalar_subquery()
    agreement = (select(row.camera, row.verdict, review.label, func.count())
                 .join(reviews, review.inspection_id == row.id)
                 .where(review.id.in_(latest), *where)
                 .group_by(row.camera, row.verdict, review.label))
    stats = Stats(zone=zone, days=[], cameras=[], shifts=[shift_label(h, shifts) for h in shifts])
    by_day: dict = defaultdict(Tally)
    by_shift: dict = defaultdict(Tally)
    cameras = set()
    with engine.connect() as connection:
        for hour, name, verdict, n, latency, latency_n, model, model_n in connection.execute(counts):
            local = datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=timezone.utc).astimezone(tz)
            cameras.add(name)
            day = by_day[(local.date().isoformat(), name)]
            for tally in (day, by_shift[(shift_label(local.hour, shifts), name)]):
                if verdict == Verdict.ANOMALOUS:
                    tally.anomalous += n
                elif verdict == Verdict.NORMAL:
                    tally.normal += n
                elif verdict == Verdict.FAILED:
                    tally.failed += n
                else:
                    tally.unknown += n
            day.latency_sum += float(latency or 0)
            day.latency_n += latency_n
            day.model_sum += float(model or 0)
            day.model_n += model_n
        for name, index, n in connection.execute(histogram):
            stats.scores.setdefault(name, [0] * 10)[max(0, min(9, int(index)))] += n
        reviewed: dict = defaultdict(lambda: [0, 0])
        for name, verdict, label, n in connection.execute(agreement):
            reviewed[name][0] += n
            if agrees(verdict, label):
                reviewed[name][1] += n
    stats.cameras = sorted(cameras)
    stats.days = sorted({day for day, _ in by_day})
    stats.by_day, stats.by_shift = dict(by_day), dict(by_shift)
    stats.reviews = {name: (a, b) for name, (a, b) in reviewed.items()}
    return stats

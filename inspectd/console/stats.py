"""Defect rate per day, shift and camera in the plant's time zone; score distribution; review agreement.

Rows are counted per UTC hour in SQL (one GROUP BY over the time index) and
the hours are placed into local days and shifts here, so the zone and the
shift hours are the console's settings, not the database's. Zones whose
offset is not a whole hour place rows to the nearest hour.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, case, func, select

from inspectd.verdict import Verdict
from inspectd.store.reviews import agrees
from inspectd.store.schema import InspectionRow, ReviewRow


@dataclass
class Tally:
    anomalous: int = 0
    normal: int = 0
    other: int = 0

    @property
    def rate(self) -> float | None:
        judged = self.anomalous + self.normal
        return self.anomalous / judged if judged else None


@dataclass
class Stats:
    days: list[str]
    cameras: list[str]
    by_day: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (day, camera)
    by_shift: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (shift label, camera)
    shifts: list[str] = field(default_factory=list)
    scores: dict[str, list[int]] = field(default_factory=dict)  # camera -> 10 bins over [0, 1]
    reviews: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (reviewed, agreeing)


def _hour_bucket(engine: Engine):
    if engine.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H", InspectionRow.created_at)
    return func.to_char(func.date_trunc("hour", InspectionRow.created_at), "YYYY-MM-DD HH24")


def shift_label(hour: int, starts: tuple[int, ...]) -> str:
    start = max((h for h in starts if h <= hour), default=starts[-1])
    end = starts[(starts.index(start) + 1) % len(starts)]
    return f"{start:02d}-{end:02d}"


def collect(engine: Engine, days: int, zone: str, shifts: tuple[int, ...], now: datetime | None = None) -> Stats:
    tz = ZoneInfo(zone)
    now = now or datetime.now(timezone.utc)
    since = (now - timedelta(days=days)).replace(tzinfo=None)
    bucket = _hour_bucket(engine).label("hour")
    row = InspectionRow
    counts = (select(bucket, row.camera, row.verdict, func.count()).where(row.created_at >= since)
              .group_by(bucket, row.camera, row.verdict))
    bins = case(*((row.score < (i + 1) / 10, i) for i in range(9)), else_=9).label("bin")  # portable SQL
    histogram = (select(row.camera, bins, func.count()).where(row.created_at >= since, row.score.is_not(None))
                 .group_by(row.camera, bins))
    latest = select(func.max(ReviewRow.id)).group_by(ReviewRow.inspection_id).scalar_subquery()
    agreement = (select(row.camera, row.verdict, ReviewRow.label, func.count())
                 .join(ReviewRow, ReviewRow.inspection_id == row.id)
                 .where(ReviewRow.id.in_(latest), row.created_at >= since)
                 .group_by(row.camera, row.verdict, ReviewRow.label))
    stats = Stats(days=[], cameras=[], shifts=[shift_label(h, shifts) for h in shifts])
    by_day: dict = defaultdict(Tally)
    by_shift: dict = defaultdict(Tally)
    cameras = set()
    with engine.connect() as connection:
        for hour, camera, verdict, n in connection.execute(counts):
            local = datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=timezone.utc).astimezone(tz)
            cameras.add(camera)
            for tally in (by_day[(local.date().isoformat(), camera)], by_shift[(shift_label(local.hour, shifts),
                                                                               camera)]):
                if verdict == Verdict.ANOMALOUS:
                    tally.anomalous += n
                elif verdict == Verdict.NORMAL:
                    tally.normal += n
                else:
                    tally.other += n
        for camera, index, n in connection.execute(histogram):
            stats.scores.setdefault(camera, [0] * 10)[max(0, min(9, int(index)))] += n
        reviewed: dict = defaultdict(lambda: [0, 0])
        for camera, verdict, label, n in connection.execute(agreement):
            reviewed[camera][0] += n
            if agrees(verdict, label):
                reviewed[camera][1] += n
    stats.cameras = sorted(cameras)
    stats.days = sorted({day for day, _ in by_day})
    stats.by_day, stats.by_shift = dict(by_day), dict(by_shift)
    stats.reviews = {camera: (a, b) for camera, (a, b) in reviewed.items()}
    return stats

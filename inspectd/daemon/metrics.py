"""Prometheus metrics and a health check of the running daemon.

Every daemon owns its ``DaemonMetrics`` (its own registry: no module-level
state); the recorder and the main loop feed it, and with ``metrics.enabled``
a small HTTP server serves ``/metrics`` (Prometheus text format) and
``/healthz`` (200 while every thread and the model process are alive, else 503
with the cause). Alert counts, and how each challenger bundle run in the
shadow compares with its champion over the last 24 h, are read from the
store at scrape time, so they include what other processes see.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from inspectd.store.clock import utcnow
from inspectd.store.schema import OPEN_ALERT_STATUSES, AlertRow, AlertStatus, BundleRow

if TYPE_CHECKING:
    from inspectd.daemon.model_process import BundleInfo
    from inspectd.daemon.retention import Removed

log = logging.getLogger("inspectd.metrics")

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _AlertCounts:
    """Alerts by status, counted in the store when scraped.

    Open alerts (pending, failed) are few: counted over the (status,
    next_attempt_at) index. Delivered ones grow without bound, and counting
    them by status (a GROUP BY, or a range of the status index) took 10-16 ms a
    scrape at 100k alerts; the table's row count (SQLite walks its narrowest
    index) less the open and the suppressed ones is the same number in ~2 ms.
    Every ``AlertStatus`` but delivered is counted over the index (a new one must be added here).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        family = GaugeMetricFamily("inspectd_alerts", "alerts in the outbox by status", labels=["status"])
        try:
            with Session(self.engine) as session, session.begin():  # one snapshot for the three numbers
                total = session.scalar(select(func.count()).select_from(AlertRow))
                counts = {s: session.scalar(select(func.count()).select_from(AlertRow).where(AlertRow.status == s))
                          for s in (*OPEN_ALERT_STATUSES, AlertStatus.SUPPRESSED.value)}
        except Exception as exc:  # a scrape must not fail because the store is busy
            log.warning("alert counts not read: %s", exc)
            return
        counts[AlertStatus.DELIVERED.value] = total - sum(counts.values())
        for status in AlertStatus:
            family.add_metric([status.value], counts[status.value])
        yield family


class _ModelComparison:
    """Champion against challenger over the inspections of the last 24 h, per bundle pair, counted in the store
    when scraped: one GROUP BY (``model_comparison.pair_counts``, the numbers ``inspectd models compare``
    starts from), no bootstrap. Rates with nothing to divide by (no reviewed defect, say) are left out.
    Unknown/failed verdicts are left out as there: agreement over images both models decided, miss and
    false-alarm rates over reviewed images both decided.

    The GROUP BY reads every comparison of the window (~0.2 s at 100k a day on SQLite), so a result is reused
    for ``MAX_AGE_S``: scrapes every 15 s cost one count a minute. ``describe`` reads nothing (the registry
    calls it when the collector is registered).
    """

    WINDOW = timedelta(hours=24)
    MAX_AGE_S = 60.0
    PAIR = ["champion", "champion_sha256", "challenger", "challenger_sha256"]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._read: tuple[float, dict, dict] | None = None  # (monotonic time, counts, bundle names)

    def describe(self):
        yield from self._families({}, {})

    def collect(self):
        from inspectd.store.model_comparison import pair_counts

        with self._lock:
            if self._read is None or time.monotonic() - self._read[0] > self.MAX_AGE_S:
                try:
                    counts = pair_counts(self.engine, since=utcnow() - self.WINDOW)
                    ids = sorted({i for key in counts for i in key if i is not None})
                    with Session(self.engine) as session:
                        names = {i: (name, sha) for i, name, sha in session.execute(
                            select(BundleRow.id, BundleRow.name, BundleRow.sha256).where(BundleRow.id.in_(ids)))
                        } if ids else {}
                except Exception as exc:  # a scrape must not fail because the store is busy
                    log.warning("champion/challenger counts not read: %s", exc)
                    return
                self._read = (time.monotonic(), counts, names)
            _, counts, names = self._read
        yield from self._families(counts, names)

    def _families(self, counts: dict, names: dict):
        images = GaugeMetricFamily("inspectd_challenger_images", "images both the champion and the challenger "
                                   "inspected in the last 24 h", labels=self.PAIR)
        agreement = GaugeMetricFamily("inspectd_challenger_agreement_ratio", "share of the last 24 h's images "
                                      "both decided (anomalous/normal) on which their verdicts agree",
                                      labels=self.PAIR)
        reviewed = GaugeMetricFamily("inspectd_challenger_reviewed_images", "of the last 24 h's images both "
                                     "inspected, those reviewed (newest review)", labels=self.PAIR)
        miss = GaugeMetricFamily("inspectd_challenger_miss_ratio", "reviewed defects (both models decided, last "
                                 "24 h) the model called normal", labels=[*self.PAIR, "model"])
        alarm = GaugeMetricFamily("inspectd_challenger_false_alarm_ratio", "reviewed good parts (both models "
                                  "decided, last 24 h) the model called anomalous", labels=[*self.PAIR, "model"])
        for (champion_id, challenger_id), pair in counts.items():
            labels = [*names.get(champion_id, (str(champion_id), "")),
                      *names.get(challenger_id, (str(challenger_id), ""))]
            images.add_metric(labels, pair.images)
            reviewed.add_metric(labels, pair.reviewed)
            if pair.agreement_rate is not None:
                agreement.add_metric(labels, pair.agreement_rate)
            for model in ("champion", "challenger"):
                for family, rate in ((miss, pair.miss_rate(model)), (alarm, pair.false_alarm_rate(model))):
                    if rate is not None:
                        family.add_metric([*labels, model], rate)
        yield from (images, agreement, reviewed, miss, alarm)


class DaemonMetrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inspections = Counter("inspectd_inspections", "inspections recorded", ["camera", "verdict"], registry=r)
        self.stage_seconds = Histogram("inspectd_stage_seconds", "time per image in each stage (model: the image's "
                                       "share of its batch)", ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.last_inspection = Gauge("inspectd_last_inspection_timestamp_seconds",
                                     "Unix time of the last recorded inspection", registry=r)
        self.queue_depth = Gauge("inspectd_queue_depth", "files waiting for the model", registry=r)
        self.in_flight = Gauge("inspectd_files_in_flight", "files between intake and the store", registry=r)
        self.bundle = Gauge("inspectd_bundle_info", "the model bundle in use (value 1)",
                            ["name", "sha256", "quantization"], registry=r)
        self.disk_paused = Gauge("inspectd_disk_guard_paused", "1 while the disk guard takes no new file",
                                 registry=r)
        self.disk_free = Gauge("inspectd_disk_free_bytes", "free bytes where the daemon writes", ["path"],
                               registry=r)
        self.retention_removed = Counter("inspectd_retention_removed", "what retention removed: maps, rows, "
                                         "tombstoned (reviewed rows kept without maps, alerts and reply), files, "
                                         "bytes", ["what"], registry=r)
        r.register(_AlertCounts(engine))
        r.register(_ModelComparison(engine))

    def inspection(self, camera: str, verdict: str, timings: dict[str, float], store_s: float, at: float) -> None:
        self.inspections.labels(camera, verdict).inc()
        if timings:
            self.stage_seconds.labels("decode").observe(timings.get("load", 0.0))
            self.stage_seconds.labels("model").observe(
                sum(timings.get(k, 0.0) for k in ("preprocess", "generate", "decode")))
            self.stage_seconds.labels("real").observe(timings.get("real", 0.0))
        self.stage_seconds.labels("store").observe(store_s)
        self.last_inspection.set(at)

    def retained(self, removed: Removed) -> None:
        """One retention pass's ``Removed`` (daemon/retention.py) added to the counters."""
        for what in ("maps", "rows", "tombstoned", "files", "bytes"):
            self.retention_removed.labels(what).inc(getattr(removed, what))

    def archived(self, seconds: float) -> None:
        self.stage_seconds.labels("archive").observe(seconds)

    def use_bundle(self, bundle: BundleInfo) -> None:
        self.bundle.clear()
        self.bundle.labels(bundle.manifest.name, bundle.digest, bundle.manifest.quantization).set(1)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on their own thread."""

    def __init__(self, metrics: DaemonMetrics, address: str, port: int, problem: Callable[[], str | None]) -> None:
        outer = self
        self.metrics = metrics
        self.problem = problem  # what keeps the daemon from inspecting (named in the 503's body), or None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] == "/metrics":
                    body, status, kind = generate_latest(outer.metrics.registry), 200, CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] == "/healthz":
                    problem = outer.problem()
                    body = b"ok\n" if problem is None else f"{problem}\n".encode("utf-8")
                    status, kind = 200 if problem is None else 503, "text/plain; charset=utf-8"
                else:
                    body, status, kind = b"not found: /metrics or /healthz\n", 404, "text/plain; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="inspectd-metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics (health: /healthz)", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""The daemon's Prometheus endpoint and health check, scraped over HTTP from the real subprocess."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspectd.bundle.files import manifest_digest
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config
from tests.test_daemon import png_bytes

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_inspections_stages_alerts_and_name_the_bundle(format_bundle, tmp_path):
    port = _free_port()
    config = write_config(
        tmp_path, format_bundle, metrics={"enabled": True, "port": port},
        alerts={"channels": [{"type": "log", "name": "file", "path": "var/alerts.jsonl"}],
                "rules": [{"name": "all", "verdicts": ["anomalous", "normal", "unknown", "failed"],
                           "channels": ["file"], "cooldown_s": 0}]})
    db, drop = tmp_path / "var" / "inspectd.db", tmp_path / "drop-line1"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        (drop / "a.png").write_bytes(png_bytes(95_001))
        (drop / "b.png").write_bytes(png_bytes(95_002))
        (drop / "broken.png").write_bytes(b"not an image")
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM inspections")[0][0] == 3, 60, "three rows")
        wait_for(lambda: _scrape(port).get(("inspectd_alerts", (("status", "delivered"),))) == 3, 30,
                 "alerts delivered")
        samples = _scrape(port)
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert health.status == 200 and health.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    finally:
        assert daemon.stop() == 0
    verdicts = dict(db_rows(db, "SELECT verdict, count(*) FROM inspections GROUP BY verdict"))
    for verdict, count in verdicts.items():
        assert samples[("inspectd_inspections_total", (("camera", "line1"), ("verdict", verdict)))] == count
    assert verdicts["failed"] == 1
    for stage in ("decode", "model", "real", "store", "archive"):
        assert samples[("inspectd_stage_seconds_count", (("stage", stage),))] >= 2, stage
    assert samples[("inspectd_bundle_info", (("name", "tiny-format"), ("quantization", "none"),
                                             ("sha256", manifest_digest(format_bundle))))] == 1
    assert samples[("inspectd_last_inspection_timestamp_seconds", ())] > 1.7e9
    assert samples[("inspectd_queue_depth", ())] == 0
    assert samples[("inspectd_disk_guard_paused", ())] == 0
    free = {labels: value for (name, labels), value in samples.items() if name.startswith("inspectd_disk_free")}
    assert free and all(value > 0 for value in free.values()), " ".join(sorted({name for name, _ in samples}))[-400:]


def test_alert_gauges_equal_the_outbox_by_status(store_url):
    """Delivered alerts are the table's rows less the open ones: exact on SQLite and PostgreSQL."""
    from datetime import datetime

    from prometheus_client import generate_latest
    from sqlalchemy.orm import Session

    from inspectd.daemon.metrics import DaemonMetrics
    from inspectd.store.database import migrate, open_engine
    from inspectd.store.schema import AlertRow

    engine = open_engine(store_url)
    migrate(engine)
    now = datetime(2026, 11, 25)
    with Session(engine) as session, session.begin():
        for i, status in enumerate(["delivered"] * 5 + ["pending"] * 2 + ["failed"] + ["suppressed"] * 3):
            session.add(AlertRow(inspection_id=None, rule="disk_low", channel="log", camera="", payload={},
                                 idempotency_key=f"k{i}", status=status, attempts=1, next_attempt_at=now,
                                 created_at=now))
    text = generate_latest(DaemonMetrics(engine).registry).decode()
    gauges = {s.labels["status"]: s.value for f in text_string_to_metric_families(text) if f.name == "inspectd_alerts"
              for s in f.samples}
    assert gauges == {"delivered": 5, "pending": 2, "failed": 1, "suppressed": 3}

"""Console and metrics latency on a large store: history with filters, an inspection page, a picture, a scrape.

Builds a SQLite store of N rows (default 1,000,000; synthetic rows through the real migrations, 2 cameras,
~10 % anomalous, one review per 100 rows, a token map on the newest rows), serves the real console app with
uvicorn on loopback and times requests end to end (HTTP included, so the server's own time is below these).
Also the daemon's Prometheus scrape with one alert per anomalous row in the outbox
(``inspectd_alerts`` counts them in the store at each scrape). Prints the median and p95 of repeated requests. Run: python benchmarks/console_latency.py [--rows N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspectd.config import ConsoleSettings  # noqa: E402
from inspectd.daemon.metrics import DaemonMetrics, MetricsServer  # noqa: E402
from inspectd.console.app import ConsoleContext, create_app  # noqa: E402
from inspectd.console.auth import CsrfTokens  # noqa: E402
from inspectd.data.archived_photos import PhotoRoots  # noqa: E402
from inspectd.inspection.render import mask_image, png_bytes  # noqa: E402
from inspectd.store import token_maps  # noqa: E402
from inspectd.store.database import migrate, open_engine  # noqa: E402
from inspectd.store.reviews import review_engine  # noqa: E402


def fill(path: Path, rows: int) -> None:
    engine = open_engine(f"sqlite:///{path}")
    migrate(engine)
    raw = engine.raw_connection()
    cursor = raw.cursor()
    rng = random.Random(0)
    start = datetime(2026, 1, 1)
    mask = png_bytes(mask_image(np.zeros((168, 168), dtype=bool)))
    tokens = token_maps.pack(np.random.default_rng(0).random((20, 6, 6)), np.array([[i * 5, i * 5 + 4] for i in range(20)]),
                             np.ones(20, dtype=bool))
    batch = []
    for i in range(1, rows + 1):
        anomalous = rng.random() < 0.1
        score = rng.uniform(0.5, 1) if anomalous else rng.uniform(0, 0.5)
        batch.append((i, (start + timedelta(seconds=i * 2)).isoformat(sep=" "), f"line{i % 2 + 1}", f"/srv/drop/{i}.png",
                      f"{i:064x}", 1000, "anomalous" if anomalous else "normal", score, 0.5,
                      "there is a scratch near the upper left of the surface" if anomalous else "clean surface",
                      "ok", 20, 5))
        if len(batch) == 20000 or i == rows:  # the last, partial batch too
            cursor.executemany(
                "INSERT INTO inspections (id, created_at, camera, source_path, sha256, size_bytes, verdict, score, "
                "threshold, reasoning, parse_status, reasoning_tokens, tokens_used) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
            batch.clear()
    reviews = [(i, "defect" if rng.random() < 0.5 else "good", "bench", start.isoformat(sep=" "))
               for i in range(1, rows + 1, 100)]
    alerts = [(i, "anomaly", "log", f"line{i % 2 + 1}", f"a{i}", "{}", "delivered" if i % 50 else "failed", 1,
               start.isoformat(sep=" "), start.isoformat(sep=" ")) for i in range(1, rows + 1, 10)]
    cursor.executemany("INSERT INTO alerts (inspection_id, rule, channel, camera, idempotency_key, payload, status, "
                       "attempts, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)", alerts)
    cursor.executemany("INSERT INTO reviews (inspection_id, label, reviewer, created_at) VALUES (?,?,?,?)", reviews)
    cursor.executemany("INSERT INTO artifacts (inspection_id, map_png, mask_png, token_maps) VALUES (?,?,?,?)",
                       [(i, mask, mask, tokens) for i in range(rows - 99, rows + 1)])
    raw.commit()
    raw.close()
    engine.dispose()


def alerts_in(engine) -> list:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT id FROM alerts").fetchall()


def timed(url: str, repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
            assert response.status == 200, url
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    import uvicorn

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "inspectd.db"
        started = time.perf_counter()
        fill(db, args.rows)
        print(f"store: {args.rows:,} rows, {db.stat().st_size / 1e6:.0f} MB, built in {time.perf_counter() - started:.0f} s")
        url = f"sqlite:///{db}"
        context = ConsoleContext(reader=open_engine(url, create=False), writer=review_engine(url),
                                 settings=ConsoleSettings(), roots=PhotoRoots((Path(folder),), 10**7), users=None,
                                 csrf=CsrfTokens())
        server = uvicorn.Server(uvicorn.Config(create_app(context), host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        newest = args.rows
        cases = [
            ("history, first page", "/history"),
            ("history, camera + verdict", "/history?camera=line2&verdict=anomalous"),
            ("history, score range", "/history?min_score=0.9&max_score=0.95"),
            ("history, one day a month back", "/history?since=2026-01-05T00:00&until=2026-01-06T00:00"),
            ("history, reviewed=yes", "/history?reviewed=yes"),
            ("history, reviewed=no + anomalous", "/history?reviewed=no&verdict=anomalous"),
            ("history, a page deep (cursor)", f"/history?before=2026-01-10T00:00~{newest}"),
            ("inspection page", f"/inspections/{newest}"),
            ("inspection page, old row", "/inspections/17"),
            ("one token's map (png)", f"/inspections/{newest}/tokens/3.png"),
            ("stats, 14 days", "/stats"),
        ]
        print(f"{'request':38s} {'median ms':>10s} {'p95 ms':>8s}")
        for name, path in cases:
            timed(base + path, 2)  # warm the page cache
            median, p95 = timed(base + path, args.repeats)
            print(f"{name:38s} {median:10.1f} {p95:8.1f}")
        metrics = DaemonMetrics(context.reader)
        for i in range(1000):
            metrics.inspection(f"line{i % 2 + 1}", "normal", {"load": 0.002, "generate": 0.1, "real": 0.001}, 0.003,
                               time.time())
        scrape = MetricsServer(metrics, "127.0.0.1", 0, lambda: None)
        scrape.start()
        timed(f"http://127.0.0.1:{scrape.server.server_address[1]}/metrics", 2)
        median, p95 = timed(f"http://127.0.0.1:{scrape.server.server_address[1]}/metrics", args.repeats)
        print(f"{'metrics scrape (' + format(len(alerts_in(context.reader)), ',') + ' alerts)':38s} {median:10.1f} {p95:8.1f}")
        scrape.stop()
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":
    main()

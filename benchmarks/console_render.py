"""Console pages while large pictures render: /history latency idle and while photos and maps of a 36 MP photo
are rendered, and the console's peak memory.

Builds a SQLite store through the real migrations with ROWS inspections, each with its own archived 36 MP JPEG
(one picture, a few distinct trailing bytes each so that every row has its own sha256) and full-size map and
mask PNGs, as the daemon stores them; starts a real ``inspectd serve`` subprocess (OMP_NUM_THREADS=1) and times
requests end to end. Busy: two client threads fetch photo.jpg, heat.png, outline.png and tokens/0.png of every
row (each a first request: rendered, not cached) while the main thread times /history back to back. Prints
the medians, the busy/idle ratio (target <= 2), each picture's time and the console's peak RSS (VmHWM).

``--tree DIR`` serves from another source tree, e.g. the code before this change for a before figure:
``git archive HEAD inspectd | tar -x -C /tmp/old && ln -s $PWD/models /tmp/old/models`` then
``--tree /tmp/old --rows 1`` (there one 36 MP heat map alone takes most of a minute).

Run: OMP_NUM_THREADS=1 python benchmarks/console_render.py [--megapixels 36] [--rows 4] [--requests 20]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import queue
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inspectd.inspection.render import map_image, png_bytes  # noqa: E402
from inspectd.store import token_maps  # noqa: E402
from inspectd.store.database import migrate, open_engine  # noqa: E402


def build(root: Path, width: int, height: int, rows: int) -> Path:
    """The store, archive and config; returns the config path."""
    archive, var = root / "archive", root / "var"
    archive.mkdir()
    var.mkdir()
    (root / "drop-line1").mkdir()
    rng = np.random.default_rng(0)
    small = Image.fromarray((rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    small.resize((width, height), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
    photo = buffer.getvalue()
    y, x = np.ogrid[0:30, 0:40]
    grid = np.exp(-((x - 13) ** 2 + (y - 10) ** 2) / 18.0).astype(np.float32)
    anomaly = map_image(grid).resize((width, height), Image.Resampling.BILINEAR)
    heat, mask = png_bytes(anomaly), png_bytes(anomaly.point(lambda v: 255 if v > 127 else 0))
    tokens = token_maps.pack(rng.random((8, 24, 24)), np.array([[i * 5, i * 5 + 4] for i in range(8)]),
                             np.ones(8, dtype=bool))
    db = var / "inspectd.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    connection = sqlite3.connect(db)
    for number in range(1, rows + 1):
        data = photo + number.to_bytes(4, "big")  # after the JPEG's end: ignored by decoders, a new sha256
        path = archive / f"part-{number}.jpg"
        path.write_bytes(data)
        connection.execute(
            "INSERT INTO inspections (id, created_at, camera, source_path, archived_path, sha256, size_bytes, verdict,"
            " score, threshold, reasoning, parse_status, reasoning_tokens, tokens_used, image_width, image_height)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (number, f"2026-01-01 00:00:{number:02d}", "line1", str(root / "drop-line1" / path.name), str(path),
             hashlib.sha256(data).hexdigest(), len(data), "anomalous", 0.9, 0.5, "a scratch near the upper left",
             "ok", 8, 8, width, height))
        connection.execute("INSERT INTO artifacts (inspection_id, map_png, mask_png, token_maps) VALUES (?,?,?,?)",
                           (number, heat, mask, tokens))
    connection.commit()
    connection.close()
    config = root / "inspectd.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"bundle": str(REPO / "models" / "tiny-cgro"), "device": "cpu"},
        "watch": {"folders": [{"path": str(root / "drop-line1"), "camera": "line1"}]},
        "store": {"url": f"sqlite:///{db}"},
        "archive": {"folder": str(archive), "failed_folder": str(root / "failed")},
        "images": {"max_pixels": 50_000_000},
    }))
    return config


def get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        response.read()
        assert response.status == 200, url
    return (time.perf_counter() - started) * 1000


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megapixels", type=float, default=36.0, help="photo size (3:2), default 36 MP")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20, help="idle /history requests timed")
    parser.add_argument("--tree", type=Path, default=REPO, help="source tree the console runs from")
    args = parser.parse_args()
    height = int((args.megapixels * 1e6 / 1.5) ** 0.5)
    width = int(height * 1.5)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        config = build(Path(folder), width, height, args.rows)
        print(f"store: {args.rows} rows with a {width}x{height} ({width * height / 1e6:.1f} MP) photo and full-size "
              f"maps, built in {time.perf_counter() - started:.1f} s; console from {args.tree}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        console = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "--config", str(config), "serve",
                                    "--port", str(port)], cwd=args.tree, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    get(base + "/healthz")
                    break
                except OSError:
                    if console.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"console did not start: {console.stderr.read().decode()[-2000:]}")
                    time.sleep(0.2)
            for _ in range(3):
                get(base + "/history")
            idle = sorted(get(base + "/history") for _ in range(args.requests))
            idle_rss = peak_rss_mb(console.pid)

            todo: queue.Queue[str] = queue.Queue()
            for number in range(1, args.rows + 1):
                for name in ("photo.jpg", "heat.png", "outline.png", "tokens/0.png"):
                    todo.put(f"/inspections/{number}/{name}")
            pictures: list[tuple[str, float]] = []

            def fetch() -> None:
                while True:
                    try:
                        path = todo.get_nowait()
                    except queue.Empty:
                        return
                    pictures.append((path, get(base + path)))

            workers = [threading.Thread(target=fetch) for _ in range(2)]
            busy_started = time.perf_counter()
            for worker in workers:
                worker.start()
            time.sleep(0.05)
            busy = []
            while any(worker.is_alive() for worker in workers):
                busy.append(get(base + "/history"))
            for worker in workers:
                worker.join()
            busy_s = time.perf_counter() - busy_started
            busy.sort()
            repeat = statistics.median(get(base + path) for path, _ in pictures)
            peak = peak_rss_mb(console.pid)
        finally:
            console.terminate()
            console.wait(timeout=30)

    def summary(samples: list[float]) -> str:
        p95 = samples[max(0, math.ceil(0.95 * len(samples)) - 1)]
        return (f"median {statistics.median(samples):8.1f} ms  p95 {p95:8.1f} ms"
                f"  max {samples[-1]:8.1f} ms  (n={len(samples)})")

    print(f"/history idle:                {summary(idle)}")
    print(f"/history while pictures render: {summary(busy) if busy else 'none completed'}")
    if busy:
        print(f"ratio busy/idle median: {statistics.median(busy) / statistics.median(idle):.2f} (target <= 2)")
    by_kind: dict[str, list[float]] = {}
    for path, ms in pictures:
        by_kind.setdefault(path.split("/", 3)[3], []).append(ms)
    print(f"{len(pictures)} pictures rendered in {busy_s:.1f} s (2 clients); per picture, first request: "
          + ", ".join(f"{kind} {statistics.median(ms):.0f} ms" for kind, ms in by_kind.items()))
    print(f"the same pictures again (served from the render cache, where there is one): median {repeat:.1f} ms")
    print(f"console peak RSS: {idle_rss:.0f} MB idle, {peak:.0f} MB after the renders")


if __name__ == "__main__":
    main()

"""Console pictures: rendered off the event loop in a bounded pool, capped in pixels, cached, 409 on a changed photo.

A camera photo (and its full-size map) rendered on the console's one event loop held every page of every user
for seconds; these tests pin down that pages answer while pictures render, that nothing served is larger than
``photos.LONGEST_SIDE`` (and the layers keep the photo's size, so they line up), and that a repeated picture is
not rendered again.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from inspectd.console import photos
from inspectd.console.render_cache import RenderCache
from inspectd.inspection.render import heat_layer, map_image, png_bytes
from inspectd.store import token_maps
from inspectd.store.database import migrate, open_engine
from tests.console_harness import ConsoleProcess, request
from tests.daemon_harness import write_config

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tiny-cgro"


# --- the pool and the cache ---------------------------------------------------------------------------------

def test_a_repeated_key_is_rendered_once():
    cache, calls = RenderCache(), []

    def render():
        calls.append(1)
        return b"picture"

    async def main():
        return [await cache.get(("1", "heat"), render) for _ in range(3)]

    assert anyio.run(main) == [b"picture"] * 3
    assert len(calls) == 1 and cache.renders == 1 and cache.hits == 2


def test_concurrent_requests_for_one_key_share_one_render():
    cache, calls, release = RenderCache(), [], threading.Event()

    def render():
        calls.append(1)
        assert release.wait(10)
        return b"picture"

    async def main():
        got = []

        async def one():
            got.append(await cache.get("key", render))

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)
            await anyio.sleep(0.2)
            release.set()
        return got

    assert anyio.run(main) == [b"picture"] * 4 and len(calls) == 1


def test_renders_run_off_the_loop_at_most_workers_at_once():
    """While three renders block in threads, the loop keeps running other work; two run at once, not three."""
    cache, release, lock = RenderCache(workers=2), threading.Event(), threading.Lock()
    running, most = [0], [0]

    def render():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        assert release.wait(10)
        with lock:
            running[0] -= 1
        return b"x"

    async def main():
        ticks = 0
        async with anyio.create_task_group() as group:
            for key in range(3):
                group.start_soon(cache.get, key, render)
            for _ in range(20):  # the loop is free: these sleeps end on time while every render still blocks
                await anyio.sleep(0.01)
                ticks += 1
            release.set()
        return ticks

    started = time.monotonic()
    assert anyio.run(main) == 20 and time.monotonic() - started < 5
    assert most[0] == 2 and cache.renders == 3


def test_the_cache_keeps_a_byte_budget_least_recently_used_first():
    cache, rendered = RenderCache(budget_bytes=25), []

    def render(key):
        rendered.append(key)
        return key.encode() * (26 if key == "huge" else 10)

    async def main():
        for key in ("a", "b", "a", "c", "huge", "a"):  # 'a' used again after 'b': 'c' evicts 'b', not 'a'
            await cache.get(key, lambda key=key: render(key))

    anyio.run(main)
    assert rendered == ["a", "b", "c", "huge"]  # 'huge' (over the budget) served, not kept
    assert "a" in cache and "c" in cache and "b" not in cache and "huge" not in cache
    assert cache.bytes == 20 and len(cache) == 2


def test_a_failed_render_is_not_kept():
    cache, calls = RenderCache(), []

    def render():
        calls.append(1)
        if len(calls) == 1:
            raise LookupError("not there yet")
        return b"ok"

    async def main():
        with pytest.raises(LookupError):
            await cache.get("k", render)
        return await cache.get("k", render)

    assert anyio.run(main) == b"ok" and len(calls) == 2


# --- pixels ---------------------------------------------------------------------------------------------------

def _noise_jpeg(width: int, height: int, seed: int = 0, quality: int = 85) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((max(1, height // 16), max(1, width // 16), 3)) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    small.resize((width, height), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _map_pngs(width: int, height: int) -> tuple[bytes, bytes]:
    """A full-size map and mask PNG, as the daemon stores them (a hot spot upper left)."""
    y, x = np.ogrid[0:30, 0:40]
    small = np.exp(-((x - 13) ** 2 + (y - 10) ** 2) / 18.0).astype(np.float32)
    anomaly = map_image(small).resize((width, height), Image.Resampling.BILINEAR)
    return png_bytes(anomaly), png_bytes(anomaly.point(lambda v: 255 if v > 127 else 0))


def _size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_the_photo_and_its_layers_are_capped_to_one_size():
    """A 6000x4000 photo: served at 2048x1365, and heat, outline and token layers at exactly that size."""
    width, height = 6000, 4000
    data = _noise_jpeg(width, height)
    assert _size(photos.photo_jpeg(data, "big.jpg", 10**8)) == (2048, 1365) == photos.fitted((width, height), 2048)
    assert max(_size(photos.photo_jpeg(data, "big.jpg", 10**8, photos.THUMB_SIDE))) == 160
    heat, mask = _map_pngs(width, height)
    assert _size(photos.heat_png(heat)) == _size(photos.outline_png(mask)) == (2048, 1365)
    assert _size(photos.token_png(np.random.default_rng(0).random((6, 6)), (width, height))) == (2048, 1365)
    buffer = io.BytesIO()  # other formats are decoded whole, then scaled to the same size
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, "PNG")
    assert _size(photos.photo_jpeg(buffer.getvalue(), "big.png", 10**8)) == (2048, 1365)


def test_small_pictures_keep_their_size_and_colours():
    """Under the cap nothing is scaled, and the heat colours are heat_layer's own."""
    values = np.random.default_rng(1).integers(0, 256, (40, 60)).astype(np.uint8)
    served = np.asarray(Image.open(io.BytesIO(photos.heat_png(png_bytes(Image.fromarray(values, mode="L"))))))
    assert np.array_equal(served, np.asarray(heat_layer(values / 255.0)))
    assert _size(photos.photo_jpeg(_noise_jpeg(300, 200), "small.jpg", 10**6)) == (300, 200)
    with pytest.raises(Exception, match="over the limit"):
        photos.photo_jpeg(_noise_jpeg(300, 200), "small.jpg", 300 * 200 - 1)


# --- the console --------------------------------------------------------------------------------------------

def _seed(root: Path, parts: list[dict]) -> Path:
    """A store written through the real migrations with one row per part and its archived photo (with the
    photo's true sha256, so the console's check passes), map, mask and token maps; returns the config."""
    config = write_config(root, SHIPPED, images={"max_pixels": 50_000_000})
    (root / "archive").mkdir(exist_ok=True)
    (root / "var").mkdir(exist_ok=True)
    db = root / "var" / "inspectd.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    connection = sqlite3.connect(db)
    spans = np.array([[i * 5, i * 5 + 4] for i in range(4)])
    tokens = token_maps.pack(np.random.default_rng(0).random((4, 6, 6)), spans, np.ones(4, dtype=bool))
    for number, part in enumerate(parts, start=1):
        width, height = part["size"]
        data = _noise_jpeg(width, height, seed=number)
        path = root / "archive" / f"part-{number}.jpg"
        path.write_bytes(data)
        heat, mask = _map_pngs(width, height)
        connection.execute(
            "INSERT INTO inspections (id, created_at, camera, source_path, archived_path, sha256, size_bytes, verdict,"
            " score, threshold, reasoning, parse_status, reasoning_tokens, tokens_used, image_width, image_height)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (number, f"2026-01-01 00:00:{number:02d}", "line1", f"/srv/drop/part-{number}.jpg", str(path),
             hashlib.sha256(data).hexdigest(), len(data), "anomalous", 0.9, 0.5, "a scratch near the upper left",
             "ok", 4, 4, width, height))
        connection.execute("INSERT INTO artifacts (inspection_id, map_png, mask_png, token_maps) VALUES (?,?,?,?)",
                           (number, heat, mask, tokens))
    connection.commit()
    connection.close()
    return config


def test_a_repeated_token_picture_is_not_rendered_again(tmp_path, monkeypatch):
    from starlette.testclient import TestClient

    from inspectd.config import ConsoleSettings
    from inspectd.console.app import ConsoleContext, create_app
    from inspectd.console.auth import CsrfTokens
    from inspectd.data.archived_photos import PhotoRoots
    from inspectd.store.reviews import review_engine

    _seed(tmp_path, [{"size": (320, 240)}])
    url = f"sqlite:///{tmp_path / 'var' / 'inspectd.db'}"
    calls = []
    real = photos.token_png
    monkeypatch.setattr(photos, "token_png", lambda *a, **k: calls.append(a) or real(*a, **k))
    context = ConsoleContext(reader=open_engine(url, create=False), writer=review_engine(url),
                             settings=ConsoleSettings(), roots=PhotoRoots(((tmp_path / "archive").resolve(),), 10**7),
                             users=None, csrf=CsrfTokens())
    with TestClient(create_app(context), base_url="http://127.0.0.1") as client:  # a loopback Host
        first = client.get("/inspections/1/tokens/2.png")
        second = client.get("/inspections/1/tokens/2.png")
        assert first.status_code == second.status_code == 200 and first.content == second.content
        assert len(calls) == 1
        assert client.get("/inspections/1/tokens/3.png").status_code == 200 and len(calls) == 2


@pytest.mark.slow
def test_a_real_console_answers_pages_while_a_large_photo_renders(tmp_path):
    """``inspectd serve`` over a 15 MP photo and full-size maps: /history answers while they render (it waited
    for all of them on the event loop: seconds); what is served is capped and lines up; a rewritten photo: 409."""
    width, height = 4800, 3200
    config = _seed(tmp_path, [{"size": (width, height)}, {"size": (300, 200)}])
    console = ConsoleProcess(config)
    try:
        console.wait_ready()
        assert request(console.url + "/history")[0] == 200  # templates loaded
        pictures = {}

        def fetch(name):
            started = time.monotonic()
            pictures[name] = (*request(f"{console.url}/inspections/1/{name}"), time.monotonic() - started)

        threads = [threading.Thread(target=fetch, args=(name,)) for name in
                   ("heat.png", "outline.png", "photo.jpg", "tokens/1.png", "thumb.jpg")]
        for thread in threads:
            thread.start()
            time.sleep(0.02)
        time.sleep(0.1)
        started = time.monotonic()
        status, _, body = request(console.url + "/history")
        waited = time.monotonic() - started
        for thread in threads:
            thread.join(60)
        assert status == 200 and b'href="/inspections/1"' in body
        assert waited < 1.5, (waited, {name: p[-1] for name, p in pictures.items()})
        assert all(p[0] == 200 for p in pictures.values()), {name: (p[0], p[2][:200]) for name, p in pictures.items()}
        served = photos.fitted((width, height), photos.LONGEST_SIDE)
        assert served == (2048, 1365)
        for name in ("photo.jpg", "heat.png", "outline.png", "tokens/1.png"):
            assert _size(pictures[name][2]) == served, name
        assert max(_size(pictures["thumb.jpg"][2])) == photos.THUMB_SIDE

        (tmp_path / "archive" / "part-2.jpg").write_bytes(_noise_jpeg(300, 200, seed=99))  # rewritten in place
        status, headers, body = request(console.url + "/inspections/2/photo.jpg")
        assert status == 409 and headers["content-type"].startswith("text/plain"), (status, body[:300])
        assert b"not the one inspected" in body
    finally:
        console.stop()

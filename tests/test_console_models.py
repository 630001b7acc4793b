"""The console's models page (``/models``) and a disagreement side by side (``/models/disagreements/N``), over a
migrated SQLite store with two bundles, photos, both models' maps and reviews; the figures are
``store/model_comparison.py``'s ``compare()`` (checked by hand in tests/test_model_comparison.py, and here once).

The store (bundle 1 champ-a is the champion, 2 chall-b a challenger run in the shadow; camera line1, the last hour):

    id  champion (A)      challenger B      newest review
     1  anomalous 0.90    anomalous 0.80    defect
     2  anomalous 0.70    normal    0.40    defect
     3  normal    0.30    anomalous 0.60    defect
     4  normal    0.20    normal    0.10    good (after defect)
     5  anomalous 0.60    normal    0.30    good
     6  normal    0.10    normal    0.40    good
     7  normal    0.20    unknown   null    -      (challenger: no reply, no maps)
     8  failed    null    normal    0.30    -
     9  normal    0.20    -                 -      (no challenger result)

By hand: images 8, both decided 6 (1-6), agreeing 1, 4, 6 -> 50.0 %; disagreements 5, 3, 2 (newest first);
reviewed 6. Miss rate A 1/3 (3), B 1/3 (2); false alarms A 1/3 (5), B 0 -> difference -33.3 points. AUROC A
8/9 = 0.889, B 8.5/9 = 0.944, difference +0.056.
"""

from __future__ import annotations

import hashlib
import io
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from inspectd.data.synthetic import make_sample
from inspectd.inspection.render import map_image, png_bytes
from inspectd.store.clock import utcnow
from inspectd.store.database import migrate, open_engine
from inspectd.store.model_comparison import compare
from inspectd.store.schema import ArtifactRow, BundleRow, ChallengerResultRow, InspectionRow, ReviewRow
from tests.daemon_harness import write_config

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tiny-cgro"
SIZE = (320, 240)
CHAMPION = [("anomalous", 0.90), ("anomalous", 0.70), ("normal", 0.30), ("normal", 0.20), ("anomalous", 0.60),
            ("normal", 0.10), ("normal", 0.20), ("failed", None), ("normal", 0.20)]
CHALLENGER = [("anomalous", 0.80), ("normal", 0.40), ("anomalous", 0.60), ("normal", 0.10), ("normal", 0.30),
              ("normal", 0.40), ("unknown", None), ("normal", 0.30)]  # ids 1-8
REVIEWS = [(1, "defect"), (2, "defect"), (3, "defect"), (4, "defect"), (4, "good"), (5, "good"), (6, "good")]
REASONING = {"champion": "a dark scratch across the {where}", "challenger": "the surface is {what} near the {where}"}


def _maps(center: tuple[float, float], peak: float, sigma: float = 28.0) -> tuple[bytes, bytes]:
    """A full-size map (one blob, ``peak`` high) and its mask (the blob above 0.5), as the daemon stores them."""
    y, x = np.ogrid[0:SIZE[1], 0:SIZE[0]]
    heat = peak * np.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / (2 * sigma ** 2))
    return png_bytes(map_image(heat)), png_bytes(map_image((heat > 0.5).astype(np.float64)))


def seed_models_store(root: Path, with_challenger: bool = True) -> tuple[Path, str]:
    """The store of the module's docstring under ``root`` (photos in root/archive with their true sha256, the
    champion's maps in ``artifacts``, the challenger's in ``challenger_results``); returns (config, store url)."""
    config = write_config(root, SHIPPED, images={"max_pixels": 50_000_000})
    (root / "archive").mkdir(exist_ok=True)
    (root / "var").mkdir(exist_ok=True)
    url = f"sqlite:///{root / 'var' / 'inspectd.db'}"
    engine = open_engine(url)
    migrate(engine)
    now, spots = utcnow(), {}
    with Session(engine) as session, session.begin():
        for i, name in ((1, "champ-a"), (2, "chall-b")):
            session.add(BundleRow(id=i, sha256=hashlib.sha256(name.encode()).hexdigest(), name=name,
                                  base_model="tiny", quantization="none", path=f"/bundles/{name}",
                                  first_seen=now - timedelta(days=30)))
        session.flush()
        for i, (verdict, score) in enumerate(CHAMPION, 1):
            sample = make_sample(i, SIZE[1], anomalous=i in (1, 2, 3))
            buffer = io.BytesIO()
            sample.image.resize(SIZE).convert("RGB").save(buffer, "JPEG", quality=90)
            data = buffer.getvalue()
            path = root / "archive" / f"part-{i}.jpg"
            path.write_bytes(data)
            where = sample.location or "middle"
            ys, xs = np.nonzero(sample.mask)
            spot = (float(xs.mean()) * SIZE[0] / SIZE[1], float(ys.mean())) if xs.size else (90.0 + 10 * i, 80.0)
            session.add(InspectionRow(
                id=i, created_at=now - timedelta(minutes=60 - i), camera="line1", source_path=f"/drop/part-{i}.jpg",
                archived_path=str(path), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                verdict=verdict, score=score, threshold=0.5, bundle_id=1, parse_status="ok",
                reasoning=REASONING["champion"].format(where=where) if score is not None else None,
                reasoning_tokens=0, tokens_used=0, image_width=SIZE[0], image_height=SIZE[1], model_ms=410.0))
            session.flush()
            if score is not None:
                heat, mask = _maps(spot, score)
                spots[i] = spot
                session.add(ArtifactRow(inspection_id=i, map_png=heat, mask_png=mask))
        if with_challenger:
            for i, (verdict, score) in enumerate(CHALLENGER, 1):
                x, y = spots.get(i, (160.0, 120.0))
                heat, mask = _maps((x - 40, y - 25), score) if score is not None else (None, None)
                what = "scratched" if verdict == "anomalous" else "clean, only a reflection"
                session.add(ChallengerResultRow(
                    inspection_id=i, bundle_id=2, created_at=now, verdict=verdict, score=score, threshold=0.45,
                    reasoning=REASONING["challenger"].format(what=what, where="lower right") if score else None,
                    raw_reply="???" if score is None else None, parse_status="ok" if score else "unparsed",
                    model_ms=620.0, map_png=heat, mask_png=mask))
        for n, (i, label) in enumerate(REVIEWS):
            session.add(ReviewRow(inspection_id=i, label=label, reviewer="ann", note="checked at the line" if n == 4
                                  else None, created_at=now + timedelta(seconds=n)))
            session.flush()
    engine.dispose()
    return config, url


def _client(root: Path, url: str):
    from starlette.testclient import TestClient

    from inspectd.config import ConsoleSettings
    from inspectd.console.app import ConsoleContext, create_app
    from inspectd.console.auth import CsrfTokens
    from inspectd.data.archived_photos import PhotoRoots
    from inspectd.store.reviews import review_engine

    context = ConsoleContext(reader=open_engine(url, create=False), writer=review_engine(url),
                             settings=ConsoleSettings(), roots=PhotoRoots(((root / "archive").resolve(),), 10**7),
                             users=None, csrf=CsrfTokens())
    return TestClient(create_app(context), base_url="http://127.0.0.1")  # a loopback Host


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return root, seed_models_store(root)[1]


@pytest.fixture(scope="module")
def client(store):
    with _client(*store) as client:
        yield client


def _text(html: str) -> str:
    """The page's text with tags dropped and spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'")


def _interval(low: float | None, high: float | None, auroc: bool, signed: bool = False) -> str:
    if low is None:
        return ""
    scale, unit = (1, "") if auroc else (100, " %")
    fmt = ("{:+.3f}" if signed else "{:.3f}") if auroc else ("{:+.1f}" if signed else "{:.1f}")
    return f"[{fmt.format(low * scale)}, {fmt.format(high * scale)}]{unit}"


def test_the_page_shows_the_figures_compare_gives(client, store):
    response = client.get("/models")
    assert response.status_code == 200, response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    text = _text(html)
    [pair] = compare(open_engine(store[1], create=False)).pairs  # every row is in the last hour: all of them
    assert pair.images == 8 and pair.decided == 6 and pair.agreeing == 3 and pair.disagreements_total == 3
    assert "champ-a" in text and "chall-b" in text
    assert pair.champion.sha256[:12] in text and pair.challenger.sha256[:12] in text
    assert re.search(r'class="big images">8<', html) and re.search(r'class="big agreement">50\.0 %<', html)
    assert "agreement: 3 of 6 both decided" in text and re.search(r'class="big disagreeing">3<', html)
    assert re.search(r'class="big reviewed">6<', html)
    # left out, as the module counts them
    assert "2 images on which a model answered unknown or failed" in text
    assert "Champion verdicts: anomalous 3, failed 1, normal 4; null scores 1." in text
    assert "Challenger verdicts: anomalous 2, normal 5, unknown 1; null scores 1." in text
    # the reviewed figures: by hand, and every interval as compare() gives it
    rows = {m: " " + _text(re.search(rf'<tr class="metric-{m}">(.*?)</tr>', html, re.S).group(1)).strip() + " "
            for m in ("miss_rate", "false_alarm_rate", "auroc")}
    assert rows["miss_rate"].startswith(" miss rate") and " 33.3 % " in rows["miss_rate"]
    assert "+0.0 %" in rows["miss_rate"]
    assert " 33.3 % " in rows["false_alarm_rate"] and " 0.0 % " in rows["false_alarm_rate"]
    assert "-33.3 %" in rows["false_alarm_rate"]
    assert " 0.889 " in rows["auroc"] and " 0.944 " in rows["auroc"] and "+0.056" in rows["auroc"]
    for metric in (pair.miss_rate, pair.false_alarm_rate, pair.auroc):
        row, auroc = rows[metric.name], metric.name == "auroc"
        for model in ("champion", "challenger", "difference"):
            estimate = getattr(metric, model)
            assert estimate.low is not None, (metric.name, model)
            assert _interval(estimate.low, estimate.high, auroc, model == "difference") in row, (metric.name, model)
        assert f"{metric.n} ({metric.positives} defect, {metric.negatives} good)" in row
    assert "1000 resamples" in text and "95 % interval" in text
    # the newest disagreements, newest first, each linked side by side
    links = re.findall(r'href="/models/disagreements/(\d+)\?challenger=2"', html)
    assert links == ["5", "3", "2"]
    assert client.get("/models/disagreements/5?challenger=2").status_code == 200


def test_the_window_and_the_camera_filter(client):
    assert "chall-b" in client.get("/models?days=1").text
    assert "chall-b" in client.get("/models?days=366&camera=line1").text
    other = client.get("/models?camera=line2")
    assert other.status_code == 200 and "No challenger results in this span" in other.text
    assert "chall-b" not in other.text


def test_a_store_without_challenger_says_how_to_configure_one(tmp_path):
    _, url = seed_models_store(tmp_path, with_challenger=False)
    with _client(tmp_path, url) as client:
        response = client.get("/models")
        assert response.status_code == 200
        text = _text(response.text)
        assert "No challenger has run" in text and "model.challenger" in text and "challenger:" in text
        assert client.get("/models/disagreements/2").status_code == 404


@pytest.mark.parametrize("query, names", [
    ("days=0", "days"), ("days=abc", "days"), ("days=367", "days"), ("days=%C2%B2", "days"),
    ("days=1&days=2", "days"), ("color=red", "color"), ("camera=a%0Ab", "camera"), ("camera=" + "x" * 201, "camera"),
])
def test_bad_parameters_are_a_400_naming_them(client, query, names):
    response = client.get(f"/models?{query}")
    assert response.status_code == 400 and names in response.text, (query, response.text[:300])


def test_a_disagreement_side_by_side(client, store):
    response = client.get("/models/disagreements/2")
    assert response.status_code == 200, response.text
    html = response.text
    champion = _text(re.search(r'<section class="model champion".*?</section>', html, re.S).group(0))
    challenger = _text(re.search(r'<section class="model challenger" id="challenger-2".*?</section>', html,
                                 re.S).group(0))
    assert "champ-a" in champion and "anomalous" in champion and "0.7000" in champion and "0.5000" in champion
    assert "a dark scratch across the" in champion
    assert "chall-b" in challenger and "normal" in challenger and "0.4000" in challenger and "0.4500" in challenger
    assert "the surface is clean, only a reflection near the lower right" in challenger
    assert "reviewed: defect" in html and "by ann" in html
    layers = re.findall(r'src="(/inspections/2/[^"]+)"', html)
    assert layers == ["/inspections/2/photo.jpg", "/inspections/2/heat.png", "/inspections/2/outline.png",
                      "/inspections/2/photo.jpg", "/inspections/2/challenger/2/heat.png",
                      "/inspections/2/challenger/2/outline.png"]
    bodies = {}
    for url in layers[1:3] + layers[4:]:
        picture = client.get(url)
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png", url
        bodies[url] = picture.content
        assert Image.open(io.BytesIO(picture.content)).size == SIZE, url  # lines up with the photo
    assert bodies["/inspections/2/heat.png"] != bodies["/inspections/2/challenger/2/heat.png"]  # its own map
    # the heat layer rendered as the champion's is: the challenger's stored map through photos.heat_png
    from inspectd.console import photos

    with Session(open_engine(store[1], create=False)) as session:
        row = session.query(ChallengerResultRow).filter_by(inspection_id=2, bundle_id=2).one()
        assert bodies["/inspections/2/challenger/2/heat.png"] == photos.heat_png(row.map_png)
        assert bodies["/inspections/2/challenger/2/outline.png"] == photos.outline_png(row.mask_png)
    reviews = _text(client.get("/models/disagreements/4").text)
    assert "good by ann" in reviews and "checked at the line" in reviews and "defect by ann" in reviews


def test_a_result_without_maps_shows_its_reply_and_no_layer(client):
    html = client.get("/models/disagreements/7").text
    section = re.search(r'<section class="model challenger".*?</section>', html, re.S).group(0)
    assert "unknown" in section and "No anomaly map from this challenger" in section and "???" in section
    assert "/challenger/2/heat.png" not in html


@pytest.mark.parametrize("path, says", [
    ("/models/disagreements/999", "inspection 999 does not exist"),
    ("/models/disagreements/9", "inspection 9 has no challenger result"),
    ("/models/disagreements/2?challenger=3", "inspection 2 has no result of challenger bundle 3"),
    ("/models/disagreements/99999999999999999999", "does not exist"),
    ("/inspections/999/challenger/2/heat.png", "inspection 999 does not exist"),
    ("/inspections/9/challenger/2/heat.png", "inspection 9 has no result of challenger bundle 2"),
    ("/inspections/2/challenger/3/outline.png", "inspection 2 has no result of challenger bundle 3"),
    ("/inspections/2/challenger/99999999999999999999/heat.png", "has no result of challenger bundle"),
    ("/inspections/7/challenger/2/outline.png", "the result of challenger bundle 2 on inspection 7 has no anomaly map"),
])
def test_unknown_ids_are_a_404_naming_what_is_missing(client, path, says):
    response = client.get(path)
    assert response.status_code == 404 and says in response.text, (path, response.status_code, response.text[:300])
    if path.endswith(".png"):
        assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("query, names", [("challenger=x", "challenger"), ("challenger=1&challenger=2", "challenger"),
                                          ("bundle=2", "bundle")])
def test_bad_side_by_side_parameters_are_a_400(client, query, names):
    response = client.get(f"/models/disagreements/2?{query}")
    assert response.status_code == 400 and names in response.text, response.text[:300]


def test_the_guards_wrap_the_models_pages(client):
    assert client.get("/models", headers={"host": "rebind.test"}).status_code == 400
    picture = client.get("/inspections/2/challenger/2/heat.png", headers={"host": "rebind.test"})
    assert picture.status_code == 400
    page = client.get("/models/disagreements/2")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<a href="/models">Models</a>' in client.get("/history").text

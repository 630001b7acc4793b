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
# inspection 2's mirror views (the rest were recorded with one view): the champion's agree, the challenger's split
VIEWS = {("champion", 2): {"view_scores": [0.72, 0.69, 0.71, 0.68], "shown_view": 0, "views_disagree": False},
         ("challenger", 2): {"view_scores": [0.90, 0.05, None, 0.25], "shown_view": 3, "views_disagree": True}}
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
                reasoning_tokens=0, tokens_used=0, image_width=SIZE[0], image_height=SIZE[1], model_ms=410.0,
                **VIEWS.get(("champion", i), {})))
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
                    model_ms=620.0, map_png=heat, mask_png=mask, **VIEWS.get(("challenger", i), {})))
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
    # days=1 is the current calendar day; the seeded rows are up to an hour old, so in the first hour after
    # midnight they are yesterday's: a two-day window holds them at any time of day
    assert "chall-b" in client.get("/models?days=2").text
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
    # each side's mirror views, so a reviewer sees which verdict hung on how the part lay
    assert "0.720 · 0.690 · 0.710 · 0.680; 4 of 4 at or above the threshold 0.500" in champion
    assert "disagree" not in champion
    assert ("0.900 · 0.050 · no reply · 0.250; 1 of 3 at or above the threshold 0.450: the views disagree"
            in challenger and "Reasoning shown: mirrored both ways" in challenger)
    assert re.search(r'class="view-votes views-split"', html) and html.count("view-votes") == 2
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


# --- promotion and rollback from the console -------------------------------------------------------------------
# The same store, its two bundles given the manifest digests of two real bundles (the champion tiny-cgro, the
# challenger magnetic-tile-cgro), so that ``promotion/requests.request_change`` finds their comparison; the
# console is the real app with a users file (ann may promote, bob may not) and the whole configuration.

PROMOTER = ("ann", "correct horse battery")
VIEWER = ("bob", "staple battery horse")
REAL_CHAMPION = SHIPPED
REAL_CHALLENGER = SHIPPED.parent / "magnetic-tile-cgro"


def _basic(user: tuple[str, str]) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


def seed_promotion_store(root: Path, promotion: dict) -> tuple[Path, str]:
    """``seed_models_store`` with real bundles as champion and challenger in the config and the store."""
    import yaml

    from inspectd.bundle.files import manifest_digest

    config, url = seed_models_store(root)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["challenger"] = {"bundle": str(REAL_CHALLENGER)}
    raw["model"]["promotion"] = promotion
    config.write_text(yaml.safe_dump(raw))
    engine = open_engine(url)
    with Session(engine) as session, session.begin():
        for bundle_id, folder in ((1, REAL_CHAMPION), (2, REAL_CHALLENGER)):
            row = session.get(BundleRow, bundle_id)
            row.sha256, row.name, row.path = manifest_digest(folder), folder.name, str(folder)
    engine.dispose()
    return config, url


def _console(root: Path, url: str, config: Path, users: bool = True):
    from starlette.testclient import TestClient

    from inspectd.config import ConsoleSettings, load_settings
    from inspectd.console.app import ConsoleContext, create_app
    from inspectd.console.auth import CsrfTokens, Users, hash_password
    from inspectd.data.archived_photos import PhotoRoots
    from inspectd.store.reviews import review_engine

    listed = None
    if users:
        listed = root / "console-users"
        listed.write_text(f"# the console's users\nann:{hash_password(PROMOTER[1])}:promote\n"
                          f"bob:{hash_password(VIEWER[1])}\n")
    context = ConsoleContext(reader=open_engine(url, create=False), writer=review_engine(url),
                             settings=ConsoleSettings(), roots=PhotoRoots(((root / "archive").resolve(),), 10**7),
                             users=Users.load(listed) if listed else None, csrf=CsrfTokens(),
                             config=load_settings(config))
    return TestClient(create_app(context), base_url="http://127.0.0.1", follow_redirects=False)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def _changes(url: str) -> list[tuple]:
    engine = open_engine(url, create=False)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(
                "SELECT id, action, actor, status, forced, reason, champion_path, challenger_path FROM model_changes "
                "ORDER BY id")]
    finally:
        engine.dispose()


def test_a_user_with_the_right_promotes_sees_it_wait_then_applied_and_rolls_back(tmp_path):
    from inspectd.store.model_changes import decide
    from inspectd.store.schema import ModelChangeStatus

    config, url = seed_promotion_store(tmp_path, {"min_reviewed": 6, "margin": 0.02})
    with _console(tmp_path, url, config) as client:
        page = client.get("/models", headers=_basic(PROMOTER))
        assert page.status_code == 200, page.text
        text = _text(page.text)
        assert "champion tiny-cgro" in text and "challenger magnetic-tile-cgro" in text
        assert f"the configuration file {config}" in text
        assert 'id="promote-form"' in page.text and 'id="rollback-form"' in page.text
        assert "Nothing to roll back now" in text and re.search(r'id="rollback"\s+disabled', page.text)
        assert "None recorded" in text and "data-waiting-change" not in page.text

        posted = client.post("/models/promote", headers=_basic(PROMOTER),
                             data={"csrf": _csrf(page.text), "reason": "better on\nreviewed parts"})
        assert posted.status_code == 303 and posted.headers["location"] == "/models", posted.text
        assert _changes(url) == [(1, "promote", "ann", "requested", 0, "better on reviewed parts",
                                  str(REAL_CHALLENGER.resolve()), str(REAL_CHAMPION.resolve()))]

        waiting = client.get("/models", headers=_basic(PROMOTER))
        text = _text(waiting.text)
        assert 'data-waiting-change="1"' in waiting.text and '<script src="/static/model_changes.js">' in waiting.text
        assert "Change 1 (promote by ann): requested — waiting for the daemon" in text
        assert "No daemon of this configuration is running now" in text
        row = _text(re.search(r'<tr id="change-1".*?</tr>', waiting.text, re.S).group(0))
        assert "promote" in row and "ann" in row and "requested waiting for the daemon" in row
        assert "better on reviewed parts" in row and "forced" not in row
        assert "6 reviewed parts miss rate 33.3 % → 33.3 % false-alarm rate 33.3 % → 0.0 % AUROC 0.889 → 0.944" \
            in row
        assert re.search(r'id="promote"\s+disabled', waiting.text), "no second request while one waits"
        assert "champion tiny-cgro" in text  # the pair that runs stays until the daemon applies the change
        assert client.get("/models/changes/1", headers=_basic(PROMOTER)).json() == \
            {"id": 1, "status": "requested", "detail": None}
        # a second request while one waits is refused, naming it
        again = client.post("/models/promote", headers=_basic(PROMOTER), data={"csrf": _csrf(page.text)})
        assert again.status_code == 409 and "change 1 is still waiting for the daemon" in _text(again.text)

        engine = open_engine(url)  # writable, as the daemon's
        decide(engine, 1, ModelChangeStatus.APPLIED)  # as the daemon marks it once its reload applied it
        applied = client.get("/models", headers=_basic(PROMOTER))
        text = _text(applied.text)
        assert "champion magnetic-tile-cgro" in text and "challenger tiny-cgro" in text
        assert "chosen by change 1: promote by ann, applied" in text and "data-waiting-change" not in applied.text
        assert re.search(r'<tr id="change-1" class="change status-applied">', applied.text)
        assert "Brings back the pair before change 1: champion tiny-cgro" in text
        assert client.get("/models/changes/1", headers=_basic(PROMOTER)).json()["status"] == "applied"

        back = client.post("/models/rollback", headers=_basic(PROMOTER),
                           data={"csrf": _csrf(applied.text), "reason": "alarms at night"})
        assert back.status_code == 303
        assert _changes(url)[1] == (2, "rollback", "ann", "requested", 0, "alarms at night",
                                    str(REAL_CHAMPION.resolve()), str(REAL_CHALLENGER.resolve()))
        decide(engine, 2, ModelChangeStatus.FAILED, "canary: the reply did not parse")
        engine.dispose()
        failed = client.get("/models", headers=_basic(PROMOTER))
        row = _text(re.search(r'<tr id="change-2".*?</tr>', failed.text, re.S).group(0))
        assert "failed" in row and "canary: the reply did not parse" in row
        assert "champion magnetic-tile-cgro" in _text(failed.text)  # a failed change is not run
        assert client.get("/models/changes/99", headers=_basic(PROMOTER)).status_code == 404


def test_a_refused_promotion_shows_every_reason_records_nothing_and_may_be_forced(tmp_path):
    from inspectd.config import load_settings
    from inspectd.promotion.requests import pair_comparison
    from inspectd.promotion.rule import judge
    from inspectd.promotion.selection import config_pair

    config, url = seed_promotion_store(tmp_path, {"min_reviewed": 20, "margin": 0.0})
    engine = open_engine(url)
    with engine.begin() as connection:  # only defects reviewed: neither the false-alarm rate nor AUROC compare
        connection.exec_driver_sql("DELETE FROM reviews WHERE label = 'good'")
    settings = load_settings(config)
    problems = judge(pair_comparison(engine, config_pair(settings)), settings.model.promotion).problems
    engine.dispose()
    assert len(problems) == 3, problems
    with _console(tmp_path, url, config) as client:
        page = client.get("/models", headers=_basic(PROMOTER))
        refused = client.post("/models/promote", headers=_basic(PROMOTER),
                              data={"csrf": _csrf(page.text), "reason": "the line needs it"})
        assert refused.status_code == 409, refused.text
        listed = re.findall(r"<li>(.*?)</li>", re.search(r'<ul id="refused-problems">(.*?)</ul>', refused.text,
                                                          re.S).group(1), re.S)
        assert [_text(item).strip() for item in listed] == problems
        assert "Promote refused; nothing was recorded" in _text(refused.text)
        assert "force past the rule" in _text(refused.text) and 'value="the line needs it"' in refused.text
        assert _changes(url) == []

        forced = client.post("/models/promote", headers=_basic(PROMOTER),
                             data={"csrf": _csrf(page.text), "reason": "the line needs it", "force": "yes"})
        assert forced.status_code == 303, forced.text
        assert _changes(url) == [(1, "promote", "ann", "requested", 1, "the line needs it",
                                  str(REAL_CHALLENGER.resolve()), str(REAL_CHAMPION.resolve()))]
        row = _text(re.search(r'<tr id="change-1".*?</tr>',
                              client.get("/models", headers=_basic(PROMOTER)).text, re.S).group(0))
        assert "forced" in row and problems[0] in row
        # nothing to roll back: the daemon runs the file's pair (the promotion waits); refused, said so
        rolled = client.post("/models/rollback", headers=_basic(PROMOTER), data={"csrf": _csrf(page.text)})
        assert rolled.status_code == 409 and "change 1 is still waiting for the daemon" in _text(rolled.text)
        assert client.post("/models/promote", headers=_basic(PROMOTER),
                           data={"csrf": _csrf(page.text), "force": "on please"}).status_code == 400


def test_without_the_right_no_form_and_a_post_is_403(tmp_path):
    config, url = seed_promotion_store(tmp_path, {"min_reviewed": 0, "margin": 1.0})
    with _console(tmp_path, url, config) as client:
        page = client.get("/models", headers=_basic(VIEWER))
        assert page.status_code == 200
        assert "promote-form" not in page.text and "rollback-form" not in page.text
        assert "Your login (bob) has no promote right" in _text(page.text)
        token = _csrf(client.get("/inspections/1", headers=_basic(VIEWER)).text)  # his review form's token
        for action in ("promote", "rollback"):
            refused = client.post(f"/models/{action}", headers=_basic(VIEWER), data={"csrf": token, "reason": "x"})
            assert refused.status_code == 403 and "bob has no promote right" in refused.text, refused.text
        # the right holder: without the token, or from another site, refused too
        ann = client.get("/models", headers=_basic(PROMOTER))
        assert client.post("/models/promote", headers=_basic(PROMOTER), data={"reason": "x"}).status_code == 403
        assert client.post("/models/promote", headers=_basic(PROMOTER),
                           data={"csrf": token}).status_code == 403  # bob's token
        assert client.post("/models/promote", headers={**_basic(PROMOTER), "Origin": "http://evil.test"},
                           data={"csrf": _csrf(ann.text)}).status_code == 403
        assert client.post("/models/promote", data={"csrf": _csrf(ann.text)}).status_code == 401
        assert _changes(url) == []


def test_without_a_users_file_there_are_no_forms_and_no_posts(tmp_path):
    config, url = seed_promotion_store(tmp_path, {"min_reviewed": 0, "margin": 1.0})
    with _console(tmp_path, url, config, users=False) as client:
        page = client.get("/models")
        assert page.status_code == 200 and "promote-form" not in page.text and "rollback-form" not in page.text
        text = _text(page.text)
        assert "Promoting from the console needs a users file" in text and "--right promote" in text
        assert "inspectd models promote" in text and "champion tiny-cgro" in text
        token = _csrf(client.get("/inspections/1").text)
        posted = client.post("/models/promote", data={"csrf": token})
        assert posted.status_code == 403 and "console.users_file" in posted.text
        assert _changes(url) == []


def test_the_consoles_writer_may_add_a_change_and_nothing_else(tmp_path):
    import sqlalchemy.exc

    from inspectd.store.model_changes import add_change, decide
    from inspectd.store.reviews import review_engine
    from inspectd.store.schema import ModelChangeStatus

    _, url = seed_promotion_store(tmp_path, {"min_reviewed": 0, "margin": 1.0})
    writer = review_engine(url)
    try:
        added = add_change(writer, action="promote", actor="ann", config_path="/c.yaml", config_champion="/a",
                           config_challenger="/b", champion_path="/b", champion_digest="b" * 64,
                           challenger_path="/a", challenger_digest="a" * 64, previous_champion_path="/a",
                           previous_champion_digest="a" * 64, previous_challenger_path="/b",
                           previous_challenger_digest="b" * 64, forced=False, reason=None, comparison=None)
        assert added.id == 1
        for sql in ("UPDATE model_changes SET status = 'applied'", "DELETE FROM model_changes",
                    "UPDATE inspections SET verdict = 'normal'", "DELETE FROM inspections",
                    "INSERT INTO bundles (sha256, name, base_model, quantization, path, first_seen) "
                    "VALUES ('x', 'x', 'x', 'x', 'x', '2026-01-01')"):
            with pytest.raises(sqlalchemy.exc.DatabaseError, match="not authorized"):
                with writer.begin() as connection:
                    connection.exec_driver_sql(sql)
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="not authorized"):
            decide(writer, 1, ModelChangeStatus.APPLIED)
    finally:
        writer.dispose()
    assert _changes(url)[0][3] == "requested"


def test_rights_in_the_users_file_and_console_user_writes_them(tmp_path):
    import subprocess
    import sys

    from inspectd.console.auth import Users, UsersFileError, hash_password

    hashed = hash_password("correct horse battery")
    users = tmp_path / "console-users"
    users.write_text(f"ann:{hashed}:promote\nbob:{hashed}\ncid:{hashed}:promote,promote\n")
    loaded = Users.load(users)
    assert loaded.may("ann", "promote") and not loaded.may("bob", "promote") and loaded.may("cid", "promote")
    assert not loaded.may("nobody", "promote") and not loaded.may(None, "promote")
    for rights, named in (("promote,admin", "'admin'"), ("", "an empty right"), ("promote,", "an empty right")):
        users.write_text(f"ann:{hashed}\nbob:{hashed}:{rights}\n")
        with pytest.raises(UsersFileError) as caught:
            Users.load(users)
        assert f"{users}, line 2: unknown right {named}" in str(caught.value), caught.value
    made = subprocess.run([sys.executable, "-m", "inspectd.cli", "console-user", "dee", "--password-stdin",
                           "--right", "promote"], input="correct horse battery\n", capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("dee:scrypt$") and line.endswith(":promote")
    users.write_text(line + "\n")
    assert Users.load(users).may("dee", "promote")
    wrong = subprocess.run([sys.executable, "-m", "inspectd.cli", "console-user", "dee", "--password-stdin",
                            "--right", "admin"], input="correct horse battery\n", capture_output=True, text=True,
                           timeout=120)
    assert wrong.returncode == 2 and "invalid choice: 'admin'" in wrong.stderr

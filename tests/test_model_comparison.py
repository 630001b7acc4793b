"""Champion against challenger (store/model_comparison.py, ``inspectd models compare``, the daemon's gauges) on a
hand-counted store, SQLite and PostgreSQL.

The store (bundles: 1 champ-a, the champion; 2 chall-b and 3 chall-c, challengers run in the shadow). Inspections
1-10 on camera line1 in the last hour (id order = time order), 11 three days ago, 12 on camera line2:

    id  champion (A)      challenger B      newest review        challenger C
     1  anomalous 0.90    anomalous 0.80    defect               anomalous 0.95
     2  anomalous 0.70    normal    0.40    defect               anomalous 0.85
     3  normal    0.30    anomalous 0.60    defect
     4  normal    0.20    normal    0.10    good (after defect)
     5  anomalous 0.60    normal    0.30    good
     6  normal    0.10    normal    0.40    good
     7  normal    0.20    normal    0.20    -
     8  anomalous 0.80    anomalous 0.90    -
     9  normal    0.40    unknown   null    defect
    10  failed    null    normal    0.30    -
    11  normal    0.10    anomalous 0.70    -                    (3 days old)
    12  normal    0.20    normal    0.20    -                    (camera line2)
    13  normal    0.20    -                 good                 (no challenger result: not compared)

By hand, A vs B on line1 since 2 days ago (ids 1-10):
- images 10; both decided: 1-8 (9: B unknown, 10: A failed) -> decided 8, undecided 2.
- agree: 1, 4, 6, 7, 8 -> 5/8 = 0.625; disagreements 2, 3, 5 -> newest first [5, 3, 2].
- reviewed 7 (1-6, 9); 9 is left out (B unknown, null score): rates and AUROC on 1-6, defects {1, 2, 3},
  goods {4 (newest review good), 5, 6}.
- A misses 3 -> 1/3; A false alarms 5 -> 1/3. B misses 2 -> 1/3; B false alarms none -> 0.
  Differences B - A: miss 0, false alarm -1/3.
- AUROC A: defects {.9, .7, .3} vs goods {.2, .6, .1}: .9 beats 3, .7 beats 3, .3 beats 2 -> 8/9.
  AUROC B: defects {.8, .4, .6} vs goods {.1, .3, .4}: .8 beats 3, .4 beats 2 and ties 1 (1/2), .6 beats 3
  -> 8.5/9 = 17/18. Difference 17/18 - 16/18 = 1/18.
A vs C: images 2 (1, 2), both anomalous on both -> agreement 1; reviewed defects 2, both caught -> miss 0 and 0;
no good part reviewed -> false-alarm rate and AUROC undefined (None).
The daemon's gauges (last 24 h, every camera): A vs B adds 12 (agreeing normal/normal) -> images 11,
agreement 6/9; the rates as above (12 is not reviewed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from inspectd.store.clock import utcnow
from inspectd.store.database import migrate, open_engine
from inspectd.store.model_comparison import compare, paired_bootstrap
from inspectd.store.schema import BundleRow, ChallengerResultRow, InspectionRow, ReviewRow
from tests.conftest import REPO

CHAMPION = [  # id: (verdict, score) of the champion, A
    ("anomalous", 0.90), ("anomalous", 0.70), ("normal", 0.30), ("normal", 0.20), ("anomalous", 0.60),
    ("normal", 0.10), ("normal", 0.20), ("anomalous", 0.80), ("normal", 0.40), ("failed", None),
    ("normal", 0.10), ("normal", 0.20), ("normal", 0.20)]
CHALLENGER_B = [("anomalous", 0.80), ("normal", 0.40), ("anomalous", 0.60), ("normal", 0.10), ("normal", 0.30),
                ("normal", 0.40), ("normal", 0.20), ("anomalous", 0.90), ("unknown", None), ("normal", 0.30),
                ("anomalous", 0.70), ("normal", 0.20)]  # ids 1-12
CHALLENGER_C = {1: ("anomalous", 0.95), 2: ("anomalous", 0.85)}
REVIEWS = [(1, "defect"), (2, "defect"), (3, "defect"), (4, "defect"), (4, "good"), (5, "good"), (6, "good"),
           (9, "defect"), (13, "good")]  # in order written: 4's newest review is good


def _seed(url: str):
    engine = open_engine(url)
    migrate(engine)
    now = utcnow()
    with Session(engine) as session, session.begin():
        for i, name in enumerate(("champ-a", "chall-b", "chall-c"), 1):
            session.add(BundleRow(id=i, sha256=f"{i}" * 64, name=name, base_model="tiny", quantization="none",
                                  path=f"/bundles/{name}", first_seen=now - timedelta(days=30)))
        session.flush()
        for i, (verdict, score) in enumerate(CHAMPION, 1):
            created = now - timedelta(days=3) if i == 11 else now - timedelta(minutes=60 - i)
            session.add(InspectionRow(id=i, created_at=created, camera="line2" if i == 12 else "line1",
                                      source_path=f"/drop/{i}.png", sha256=f"{i:064x}", size_bytes=100,
                                      verdict=verdict, score=score, threshold=0.5, bundle_id=1))
        session.flush()
        for i, (verdict, score) in enumerate(CHALLENGER_B, 1):
            session.add(ChallengerResultRow(inspection_id=i, bundle_id=2, created_at=now, verdict=verdict,
                                            score=score, threshold=0.5))
        for i, (verdict, score) in CHALLENGER_C.items():
            session.add(ChallengerResultRow(inspection_id=i, bundle_id=3, created_at=now, verdict=verdict,
                                            score=score, threshold=0.5))
        for n, (i, label) in enumerate(REVIEWS):
            session.add(ReviewRow(inspection_id=i, label=label, reviewer="eng", created_at=now + timedelta(seconds=n)))
            session.flush()  # ids in the order written
    return engine, now


def _contains(estimate) -> None:
    assert estimate.low is not None and estimate.low <= estimate.value <= estimate.high, estimate


def test_hand_counted_comparison(store_url):
    engine, now = _seed(store_url)
    result = compare(engine, since=now - timedelta(days=2), camera="line1", disagreements=10)
    assert [(p.champion.name, p.challenger.name) for p in result.pairs] == [("champ-a", "chall-b"),
                                                                           ("champ-a", "chall-c")]
    b, c = result.pairs
    assert (b.images, b.decided, b.agreeing, b.undecided, b.disagreements_total) == (10, 8, 5, 2, 3)
    assert b.agreement_rate == pytest.approx(0.625)
    assert b.champion_verdicts == {"anomalous": 4, "failed": 1, "normal": 5}
    assert b.challenger_verdicts == {"anomalous": 3, "normal": 6, "unknown": 1}
    assert (b.champion_null_scores, b.challenger_null_scores) == (1, 1)
    assert (b.reviewed, b.reviewed_decided, b.reviewed_scored) == (7, 6, 6)
    assert (b.miss_rate.positives, b.miss_rate.negatives, b.auroc.n) == (3, 3, 6)

    expected = {"miss_rate": (1 / 3, 1 / 3, 0.0), "false_alarm_rate": (1 / 3, 0.0, -1 / 3),
                "auroc": (8 / 9, 17 / 18, 1 / 18)}
    for metric in (b.miss_rate, b.false_alarm_rate, b.auroc):
        champion, challenger, difference = expected[metric.name]
        assert metric.champion.value == pytest.approx(champion), metric.name
        assert metric.challenger.value == pytest.approx(challenger), metric.name
        assert metric.difference.value == pytest.approx(difference), metric.name
        for estimate in (metric.champion, metric.challenger, metric.difference):
            _contains(estimate)
    assert b.false_alarm_rate.challenger.low == b.false_alarm_rate.challenger.high == 0.0  # no false alarm at all
    assert b.auroc.challenger.high == 1.0 and b.auroc.champion.low < 8 / 9

    assert [d.inspection_id for d in b.disagreements] == [5, 3, 2]
    five = b.disagreements[0]
    assert (five.camera, five.champion_verdict, five.champion_score, five.challenger_verdict,
            five.challenger_score, five.review) == ("line1", "anomalous", 0.6, "normal", 0.3, "good")
    assert compare(engine, since=now - timedelta(days=2), camera="line1",
                   disagreements=2).pairs[0].disagreements == b.disagreements[:2]

    assert (c.images, c.decided, c.agreeing, c.agreement_rate, c.reviewed) == (2, 2, 2, 1.0, 2)
    assert c.miss_rate.champion.value == c.miss_rate.challenger.value == 0.0
    assert c.false_alarm_rate.champion.value is None and c.false_alarm_rate.difference.low is None
    assert c.auroc.challenger.value is None and c.disagreements == []

    # seeded: the same intervals again; the window and camera filters
    assert compare(engine, since=now - timedelta(days=2), camera="line1", disagreements=10) == result
    everything = compare(engine).pairs[0]
    assert (everything.images, everything.decided, everything.agreeing) == (12, 10, 6)
    assert compare(engine, since=now - timedelta(days=2)).pairs[0].images == 11
    assert compare(engine, camera="nowhere").pairs == []


def test_bootstrap_is_paired_seeded_and_brackets_the_estimates():
    rows = [(i, "defect" if i % 3 == 0 else "good", "anomalous" if i % 4 == 0 else "normal", (i * 37 % 100) / 100,
             "anomalous" if i % 3 == 0 or i % 7 == 0 else "normal", (i * 53 % 100) / 100) for i in range(60)]
    first, again = paired_bootstrap(rows, seed=7), paired_bootstrap(rows, seed=7)
    assert first == again
    other = paired_bootstrap(rows, seed=8)
    assert other["auroc"].champion.value == first["auroc"].champion.value
    assert other["auroc"].champion.low != first["auroc"].champion.low  # the seed moves only the intervals
    for metric in first.values():
        for estimate in (metric.champion, metric.challenger, metric.difference):
            _contains(estimate)
    # the challenger catches every defect: its miss rate is 0 in every resample
    assert first["miss_rate"].challenger.value == first["miss_rate"].challenger.high == 0.0
    empty = paired_bootstrap([])
    assert empty["auroc"].champion.value is None and empty["miss_rate"].n == 0


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", "models", "compare", "--db", url, *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done


def test_cli_table_csv_and_json(tmp_path):
    import csv
    import io

    url = f"sqlite:///{tmp_path / 'store.db'}"
    _seed(url)
    table = _cli(url, "--camera", "line1", "--since", "2d").stdout
    assert "champion champ-a (id 1, 111111111111) vs challenger chall-b (id 2, 222222222222)" in table
    assert "images both inspected: 10; both decided: 8, agreeing 5 (agreement 0.625)" in table
    assert "reviewed: 7; both decided 6 (3 defect, 3 good), both scored 6" in table
    auroc = next(line for line in table.splitlines() if line.startswith("auroc"))
    assert auroc.split()[:3] == ["auroc", "6", "0.889"] and "0.944" in auroc and "0.056" in auroc
    assert "newest disagreements (3 of 3)" in table

    rows = list(csv.DictReader(io.StringIO(_cli(url, "--camera", "line1", "--since", "2d", "--format",
                                                "csv").stdout)))
    by = {(r["challenger"], r["metric"], r["model"]): r for r in rows}
    assert by[("chall-b", "images", "both")]["value"] == "10"
    assert by[("chall-b", "agreement_rate", "both")]["value"] == "0.625"
    assert by[("chall-b", "false_alarm_rate", "difference")]["value"] == "-0.333"
    assert by[("chall-b", "auroc", "champion")]["value"] == "0.889"
    assert by[("chall-c", "false_alarm_rate", "champion")]["value"] == ""

    document = json.loads(_cli(url, "--camera", "line1", "--since", "2d", "--format", "json",
                               "--disagreements", "2").stdout)
    pair = document["pairs"][0]
    assert (pair["images"], pair["agreeing"], pair["challenger"]["name"]) == (10, 5, "chall-b")
    assert pair["auroc"]["challenger"]["value"] == pytest.approx(17 / 18)
    assert [d["inspection_id"] for d in pair["disagreements"]] == [5, 3]
    assert document["resamples"] == 1000 and "left out" in document["treatment"]


def test_a_store_without_challenger_results_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(open_engine(url))
    table = _cli(url)
    assert "no challenger results in the store (all time)" in table.stdout
    done = _cli(url, "--format", "csv", "--camera", "line1")
    assert done.stdout.startswith("champion,champion_id,challenger") and len(done.stdout.splitlines()) == 1
    assert "no challenger results in the store (all time, camera line1)" in done.stderr
    document = json.loads(_cli(url, "--format", "json").stdout)
    assert document["pairs"] == [] and "no challenger results" in document["message"]


def test_the_models_command_loads_no_numpy():
    code = "import sys, inspectd.cli.main, inspectd.cli.models\nprint('numpy' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.strip() == "False", done.stderr


def test_daemon_gauges_compare_the_last_24_hours(store_url):
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from inspectd.daemon.metrics import DaemonMetrics

    engine, now = _seed(store_url)
    metrics = DaemonMetrics(engine)
    text = generate_latest(metrics.registry).decode()
    samples = {(s.name, s.labels.get("challenger"), s.labels.get("model")): s.value
               for f in text_string_to_metric_families(text) if f.name.startswith("inspectd_challenger")
               for s in f.samples}
    b = {key[0].removeprefix("inspectd_challenger_") + (f":{key[2]}" if key[2] else ""): v
         for key, v in samples.items() if key[1] == "chall-b"}
    assert b == pytest.approx({"images": 11, "agreement_ratio": 6 / 9, "reviewed_images": 7,
                               "miss_ratio:champion": 1 / 3, "miss_ratio:challenger": 1 / 3,
                               "false_alarm_ratio:champion": 1 / 3, "false_alarm_ratio:challenger": 0.0})
    c = {key[0].removeprefix("inspectd_challenger_") + (f":{key[2]}" if key[2] else ""): v
         for key, v in samples.items() if key[1] == "chall-c"}
    assert c == {"images": 2, "agreement_ratio": 1.0, "reviewed_images": 2, "miss_ratio:champion": 0.0,
                 "miss_ratio:challenger": 0.0}  # no good part reviewed: no false-alarm rate
    labels = next(s.labels for f in text_string_to_metric_families(text) if f.name == "inspectd_challenger_images"
                  for s in f.samples if s.labels["challenger"] == "chall-b")
    assert labels == {"champion": "champ-a", "champion_sha256": "1" * 64, "challenger": "chall-b",
                      "challenger_sha256": "2" * 64}

    # read at most once a minute: a new comparison shows once the last reading is older than that
    with Session(engine) as session, session.begin():
        session.add(ChallengerResultRow(inspection_id=3, bundle_id=3, created_at=now, verdict="normal", score=0.1,
                                        threshold=0.5))

    def images_of_c() -> float:
        return next(s.value for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
                    if f.name == "inspectd_challenger_images" for s in f.samples if s.labels["challenger"] == "chall-c")

    assert images_of_c() == 2
    collector = next(c for c in metrics.registry._collector_to_names if type(c).__name__ == "_ModelComparison")
    collector.MAX_AGE_S = 0.0
    assert images_of_c() == 3

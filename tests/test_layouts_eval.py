"""Dataset readers on generated and real folders, and inspectd eval end to end."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from inspectd.data.layouts import DatasetError, LabelledImage, read_dataset, read_labelled_folder, read_mvtec
from inspectd.data.synthetic import make_sample, write_mvtec_layout
from inspectd.evaluation.runner import CategoryReport, EvalReport, _report, format_table
from inspectd.inspection.result import InspectionResult
from inspectd.metrics.intervals import percent_interval, rate_interval
from inspectd.verdict import Verdict
from tests.conftest import REPO, SHARED_DATASETS


def test_synthetic_generator_is_deterministic_with_exact_masks(tmp_path):
    a, b = make_sample(123, 128), make_sample(123, 128)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and np.array_equal(a.mask, b.mask)
    defective = make_sample(5, 128, anomalous=True)
    clean = make_sample(5, 128, anomalous=False)
    assert defective.mask.any() and not clean.mask.any()
    changed = np.abs(np.asarray(defective.image, float) - np.asarray(clean.image, float)).sum(-1) > 0
    assert defective.defect in defective.description() and defective.location in defective.description()
    assert changed.any()
    written = write_mvtec_layout(tmp_path, "tiles", range(12), size=96)
    dataset = read_mvtec(tmp_path / "tiles")
    assert len(dataset.images) == len(written) == 12
    for image in dataset.images:
        if image.anomalous:
            with Image.open(image.mask_path) as mask:
                assert np.asarray(mask).max() == 255


def test_real_magnetic_tile_layout_reads():
    root = SHARED_DATASETS / "magnetic_tile"
    if not root.is_dir():
        pytest.skip(f"shared dataset not present at {root}")
    dataset = read_mvtec(root)
    assert dataset.categories() == ["magnetic_tile"]
    assert sum(not i.anomalous for i in dataset.images) == 16
    assert {i.defect for i in dataset.images if i.anomalous} == {"blowhole", "break", "crack", "fray", "uneven"}
    assert all(i.mask_path.is_file() for i in dataset.images if i.anomalous)


def test_layout_errors_name_the_files(tmp_path):
    write_mvtec_layout(tmp_path, "cat", range(6), size=64)
    (tmp_path / "cat" / "test" / "good" / "README.txt").write_text("notes")
    assert [p.name for p in read_mvtec(tmp_path).skipped] == ["README.txt"]
    defect_dir = next(p for p in (tmp_path / "cat" / "test").iterdir() if p.name != "good")
    image = next(defect_dir.iterdir())
    mask = tmp_path / "cat" / "ground_truth" / defect_dir.name / f"{image.stem}_mask.png"
    Image.new("L", (10, 10)).save(mask)
    with pytest.raises(DatasetError, match=r"mask is \(10, 10\) but .* is \(64, 64\)"):
        read_mvtec(tmp_path)
    mask.unlink()
    with pytest.raises(DatasetError, match="defect image without its mask"):
        read_mvtec(tmp_path)
    with pytest.raises(DatasetError, match="neither a category"):
        read_mvtec(tmp_path / "cat" / "ground_truth")


def test_labelled_folder(tmp_path):
    for folder, seeds in (("good", range(3)), ("scratch", range(3, 5))):
        (tmp_path / folder).mkdir()
        for seed in seeds:
            make_sample(seed, 64).image.save(tmp_path / folder / f"{seed}.png")
    dataset = read_labelled_folder(tmp_path)
    assert [i.anomalous for i in dataset.images] == [False, False, False, True, True]
    with pytest.raises(DatasetError, match="no good/ folder"):
        read_labelled_folder(tmp_path / "scratch")
    only_good = tmp_path / "only-good"
    (only_good / "good").mkdir(parents=True)
    make_sample(9, 64).image.save(only_good / "good" / "9.png")
    with pytest.raises(DatasetError, match="needs both"):
        read_labelled_folder(only_good)


def test_eval_command_reports_tables_and_json(format_bundle, tmp_path):
    write_mvtec_layout(tmp_path / "synth", "tiles", range(10), size=96)
    write_mvtec_layout(tmp_path / "synth", "plates", range(10, 18), size=96)
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.cli", "eval", str(tmp_path / "synth"), "--bundle", str(format_bundle),
         "--device", "cpu", "--out", str(out), "--by-defect"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "synth/tiles" in done.stdout and "synth/plates" in done.stdout and "macro average" in done.stdout
    report = json.loads(out.read_text())
    plain = [c for c in report["categories"] if "/" not in c["category"]]
    assert [c["category"] for c in plain] == ["plates", "tiles"]
    # --by-defect: one row per defect kind, each with all the category's good images, outside the averages.
    tiles = next(c for c in plain if c["category"] == "tiles")
    kinds = [c for c in report["categories"] if c["category"].startswith("tiles/")]
    good = tiles["images"] - tiles["anomalous"]
    assert kinds and sum(c["anomalous"] for c in kinds) == tiles["anomalous"]
    assert all(c["images"] - c["anomalous"] == good for c in kinds)
    mean = sum(c["metrics"]["image_auroc"] for c in plain) / 2
    assert report["datasets"]["synth"]["image_auroc"] == pytest.approx(mean)
    for category in report["categories"]:
        for metric in ("image_auroc", "image_aupr", "image_acc", "pixel_auroc", "pixel_aupr", "pixel_acc",
                       "pixel_auroc_all_tokens"):
            assert 0.0 <= category["metrics"][metric] <= 1.0, (metric, category)
    assert set(report["overall"]) >= {"image_auroc", "pixel_auroc", "pixel_auroc_all_tokens", "peak_on_defect",
                                      "reply_agreement"}
    for category in plain:  # with masks, the pooled pixel figures get their bootstrap interval over the images too
        for metric in ("pixel_auroc", "pixel_aupr"):
            low, high = category["intervals"][metric]
            assert 0.0 <= low <= high <= 1.0, (metric, category["category"])
        printed = next(line for line in done.stdout.splitlines()
                       if line.split()[:1] == [f"synth/{category['category']}"] and "img AUROC" in line)
        assert f"px AUROC {percent_interval(category['intervals']['pixel_auroc'])}" in printed
    # The shipped default config overrides ReAL parameters (the demo's): the report records the ones used and
    # the table says that its figures are not the bundle card's.
    from inspectd.bundle.load import load_bundle
    from inspectd.config import default_config_path, load_settings
    from inspectd.inspection.build import overridden_real

    settings, bundle = load_settings(default_config_path(), require_paths=False), load_bundle(format_bundle, "cpu")
    assert report["real"] == settings.real.apply(bundle.manifest.real).model_dump(mode="json")
    assert report["threshold"] == bundle.manifest.threshold
    changed = overridden_real(settings, bundle)
    assert changed and f"ReAL overrides ({'; '.join(changed)}): the figures are the daemon's" in done.stdout
    for category in plain:  # every defect image has a mask: each one's peak is checked, and the rate is theirs
        assert category["peaks_checked"] == category["anomalous"] > 0
        assert category["metrics"]["peak_on_defect"] == category["peaks_on_defect"] / category["peaks_checked"]
        decided = category["images"] - category["unknown"] - category["failed"]
        assert category["metrics"]["reply_agreement"] == pytest.approx(1 - category["replies_disagreeing"] / decided)


def test_eval_refuses_a_limit_below_two_naming_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", "eval", str(tmp_path), "--limit", "0"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "--limit: 0 is too few" in done.stderr and "Traceback" not in done.stderr


def _eval(*argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", "eval", *argv, "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


FIGURES = 12  # printed columns after n and unparsed


def _rows(stdout: str) -> dict[str, list[str]]:
    """The printed table's rows by label: [n, unparsed, 12 figures]; n is "" on the mean rows."""
    rows = {}
    for line in stdout.splitlines()[2:]:
        cells = line.split()
        if len(cells) < FIGURES + 2 or not cells[-FIGURES - 1].isdigit():
            continue  # a note below the table
        both = cells[-FIGURES - 2].isdigit()
        counts = cells[-FIGURES - 2:-FIGURES] if both else ["", cells[-FIGURES - 1]]
        rows[" ".join(cells[:-FIGURES - 2] if both else cells[:-FIGURES - 1])] = counts + cells[-FIGURES:]
    return rows


def _smallest(folder, count: int):
    return sorted(folder.iterdir(), key=lambda p: (Image.open(p).size[0] * Image.open(p).size[1], p.name))[:count]


def test_eval_scores_an_ok_ng_folder_of_real_photos_per_defect_kind_without_pixel_figures(format_bundle, tmp_path):
    source = SHARED_DATASETS / "magnetic_tile_train"
    if not source.is_dir():
        pytest.skip(f"shared dataset not present at {source}")
    line = tmp_path / "line1"
    for kind, count in (("good", 3), ("blowhole", 2), ("crack", 2)):
        (line / kind).mkdir(parents=True)
        for path in _smallest(source / kind, count):
            (line / kind / path.name).write_bytes(path.read_bytes())
    single = tmp_path / "line2"  # good/ + defect/: one kind, so no per-kind rows
    for kind, seeds in (("good", range(2)), ("defect", range(2, 4))):
        (single / kind).mkdir(parents=True)
        for seed in seeds:
            make_sample(seed, 96, anomalous=kind == "defect").image.save(single / kind / f"{seed}.png")
    out = tmp_path / "report.json"
    done = _eval(str(line), str(single), "--bundle", str(format_bundle), "--out", str(out))
    report = json.loads(out.read_text())
    categories = {f"{c['dataset']}/{c['category']}": c for c in report["categories"]}
    assert list(categories) == ["line1/line1", "line1/line1/blowhole", "line1/line1/crack", "line2/line2"]
    assert [(c["images"], c["anomalous"]) for c in categories.values()] == [(7, 4), (5, 2), (5, 2), (4, 2)]
    rows = _rows(done.stdout)
    for label, category in categories.items():
        assert category["masks"] is False
        figures = category["metrics"]
        assert all(math.isnan(figures[k]) for k in ("pixel_auroc", "pixel_aupr", "pixel_acc",
                                                    "pixel_auroc_all_tokens", "pixel_aupr_all_tokens"))
        for key in ("image_auroc", "image_aupr", "image_acc", "image_miss_rate", "image_false_alarm_rate"):
            assert 0.0 <= figures[key] <= 1.0, (label, key)
        # ACC, misses and false alarms count the same images (an unparsed reply is a miss or a false alarm).
        good, defects = category["images"] - category["anomalous"], category["anomalous"]
        wrong = figures["image_miss_rate"] * defects + figures["image_false_alarm_rate"] * good
        assert figures["image_acc"] == pytest.approx(1 - wrong / category["images"])
        n, unparsed, *cells = rows[label]
        assert (int(n), int(unparsed)) == (category["images"], category["unknown"])
        assert cells[5:11] == ["n/a"] * 6 and "n/a" not in cells[:3]  # no masks: no pixel figure, no peak check
        assert cells[11] == f"{100 * figures['reply_agreement']:.1f}"  # replies are read without masks
        # Under the table, each row's 95 % intervals: a figure from 4-7 images may move a long way.
        intervals = category["intervals"]
        assert intervals["image_auroc"][0] <= figures["image_auroc"] <= intervals["image_auroc"][1]
        missed, flagged = round(figures["image_miss_rate"] * defects), round(figures["image_false_alarm_rate"] * good)
        assert intervals["image_miss_rate"] == pytest.approx(list(rate_interval(missed, defects)))
        assert intervals["image_false_alarm_rate"] == pytest.approx(list(rate_interval(flagged, good)))
        printed = next(line for line in done.stdout.splitlines() if line.split()[:1] == [label] and "img AUROC" in line)
        assert printed.split(None, 1)[1] == (
            f"img AUROC {percent_interval(intervals['image_auroc'])}, miss {percent_interval(intervals['image_miss_rate'])}"
            f", false alarm {percent_interval(intervals['image_false_alarm_rate'])}")
    assert "95 % intervals (AUROC and AUPR: bootstrap over the images; miss and false alarm: Wilson):" in done.stdout
    assert "no masks in line1, line2 (image-level labels): pixel figures n/a" in done.stdout
    assert math.isnan(report["overall"]["pixel_auroc"]) and 0.0 <= report["overall"]["image_auroc"] <= 1.0


def test_eval_prints_the_unparsed_count_on_mvtec_too(random_bundle, tmp_path):
    """An untrained model's free text never parses: the table says how many, not only the JSON."""
    write_mvtec_layout(tmp_path / "synth", "tiles", range(4), size=64)
    out = tmp_path / "report.json"
    done = _eval(str(tmp_path / "synth"), "--bundle", str(random_bundle), "--out", str(out))
    (tiles,) = json.loads(out.read_text())["categories"]
    assert tiles["unknown"] == 4 and tiles["masks"] is True
    rows = _rows(done.stdout)
    assert rows["synth/tiles"][:2] == ["4", "4"] and rows["synth (mean)"][:2] == ["", "4"]
    assert rows["macro average"][:2] == ["", "4"]
    assert rows["synth/tiles"][7] != "n/a"  # masks: pixel figures exist (a blank map for an unparsed reply)
    assert "4 unparsed replies (verdict unknown) and 0 unreadable images score 0.5" in done.stdout
    assert "no masks" not in done.stdout


def test_eval_refuses_a_folder_of_neither_layout_naming_both(tmp_path):
    for kind in ("ok", "ng"):
        (tmp_path / "line" / kind).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"nor a labelled folder \(good/.*subfolders found: ng/, ok/"):
        read_dataset(tmp_path / "line")
    (tmp_path / "line" / "good").mkdir()
    make_sample(1, 64).image.save(tmp_path / "line" / "good" / "1.png")
    make_sample(2, 64).image.save(tmp_path / "line" / "ng" / "2.png")
    dataset = read_dataset(tmp_path / "line")
    assert dataset.layout == "labelled" and {i.defect for i in dataset.images if i.anomalous} == {"ng"}
    write_mvtec_layout(tmp_path / "mvtec", "tiles", range(4), size=64)
    assert read_dataset(tmp_path / "mvtec").layout == read_dataset(tmp_path / "mvtec" / "tiles").layout == "mvtec"


def test_a_report_written_before_these_columns_still_prints():
    """The export's model card reads eval JSON written by older versions: no masks flag, no miss rates."""
    old = {"bundle": "b", "bundle_sha256": "0" * 64, "datasets": {"d": {"image_auroc": 0.9, "pixel_auroc": 0.8}},
           "overall": {"image_auroc": 0.9, "pixel_auroc": 0.8},
           "categories": [{"dataset": "d", "category": "c", "images": 10, "anomalous": 5, "unknown": 2, "failed": 0,
                           "real_fallbacks": 0, "seconds": 1.0, "pixel_tie_error": 0.0,
                           "metrics": {"image_auroc": 0.9, "pixel_auroc": 0.8}}]}
    report = EvalReport(old["bundle"], old["bundle_sha256"], [CategoryReport(**c) for c in old["categories"]],
                        old["datasets"], old["overall"])
    rows = _rows(format_table(report))
    assert rows["d/c"][:3] == ["10", "2", "90.0"] and rows["d/c"][5] == "n/a" and rows["d/c"][7] == "80.0"


def _decided(path, anomalous: bool, verdict: Verdict, reply: str) -> tuple[LabelledImage, InspectionResult]:
    image = LabelledImage(path, anomalous, "line", "crack" if anomalous else None)
    score = 0.9 if verdict is Verdict.ANOMALOUS else 0.1
    return image, InspectionResult(source=str(path), verdict=verdict, threshold=0.5, score=score, reply=reply)


def test_reply_agreement_counts_a_reply_shown_beside_a_verdict_it_contradicts(tmp_path):
    """The engineer reads the reply beside the verdict: "clean ... no" beside ANOMALOUS is a disagreement,
    as is a reply with no yes/no at all; an unparsed (undecided) image is not counted either way."""
    clean, crack = "<think>the surface is clean</think><answer>no</answer>", \
        "<think>a crack in the upper left</think><answer>yes</answer>"
    pairs = [
        _decided(tmp_path / "1.png", True, Verdict.ANOMALOUS, crack),
        _decided(tmp_path / "2.png", False, Verdict.NORMAL, clean),
        _decided(tmp_path / "3.png", True, Verdict.ANOMALOUS, clean),  # contradicts its verdict
        _decided(tmp_path / "4.png", False, Verdict.NORMAL, "Yes, there is a crack."),  # contradicts it too
        _decided(tmp_path / "5.png", True, Verdict.ANOMALOUS, "<think>crack</think>"),  # says no yes/no
        (LabelledImage(tmp_path / "6.png", True, "line", "crack"),
         InspectionResult(source="6.png", verdict=Verdict.UNKNOWN, threshold=0.5, reply="a crack")),
    ]
    report = _report(None, "d", "line", pairs, bins=16, seconds=0.0)  # no masks: the inspector is not read
    assert report.replies_disagreeing == 3 and report.unknown == 1
    assert report.metrics["reply_agreement"] == pytest.approx(2 / 5)
    assert math.isnan(report.metrics["peak_on_defect"]) and report.peaks_checked == 0


def test_eval_counts_the_verdicts_whose_mirror_views_disagree(tmp_path):
    """A four-view bundle's verdict can hang on how the part lay (views on both sides of the threshold): the
    report counts those images and the table's notes say how many."""
    def with_views(path, anomalous, *scores):
        image, result = _decided(path, anomalous, Verdict.ANOMALOUS, "<think>a crack</think><answer>yes</answer>")
        views = tuple(replace(result, score=score) for score in scores)
        return image, replace(result, score=sum(scores) / len(scores), views=views)

    pairs = [with_views(tmp_path / "1.png", True, 0.9, 0.8, 0.95, 0.7),
             with_views(tmp_path / "2.png", True, 0.98, 0.98, 0.05, 0.05),  # its verdict hangs on how the part lay
             with_views(tmp_path / "3.png", False, 0.6, 0.2, 0.7, 0.9)]
    report = _report(None, "d", "line", pairs, bins=16, seconds=0.0)
    assert report.views_disagreeing == 2
    table = format_table(EvalReport("b", "0" * 64, [report], {"d": report.metrics}, report.metrics))
    assert "the mirror views fell on both sides of the threshold in 2 of 3 images" in table


def test_a_config_without_real_overrides_scores_the_bundle_as_built(format_bundle, tmp_path):
    from inspectd.bundle.load import load_bundle
    from inspectd.config import load_settings
    from inspectd.inspection.build import build_inspector, overridden_real

    bundle = load_bundle(format_bundle, "cpu")
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"model:\n  bundle: {format_bundle}\n", encoding="utf-8")
    settings = load_settings(plain, require_paths=False)
    assert overridden_real(settings, bundle) == []
    assert build_inspector(settings, bundle).real == bundle.manifest.real
    words = tmp_path / "words.yaml"
    words.write_text(f"model:\n  bundle: {format_bundle}\nreal:\n  ignored_words: [the, a]\n"
                     f"  layer_start: {bundle.manifest.real.layer_start}\n", encoding="utf-8")
    overridden = load_settings(words, require_paths=False)
    assert overridden_real(overridden, bundle) == ["ignored_words: [] -> ['the', 'a']"]
    assert build_inspector(overridden, bundle).options.real_overrides == ("ignored_words: [] -> ['the', 'a']",)
    assert build_inspector(settings, bundle).options.real_overrides == ()


def test_the_peak_check_uses_the_grid_the_map_resolves():
    """A tiled result's map is as fine as its tiles' token grids over the photo, whichever run's explanation is
    shown; an untiled one's is its token maps' grid (a mirror view's when the shown run has none)."""
    from inspectd.evaluation.runner import map_grid
    from inspectd.real.evidence import TokenEvidence

    def run(size, grid, evidence=True):
        maps = np.zeros((2, *grid), dtype=np.float32)
        ev = TokenEvidence(maps=maps, relevance=np.ones(2, dtype=np.float32)) if evidence else None
        return InspectionResult(source="p.png", verdict=Verdict.NORMAL, threshold=0.5, score=0.1, image_size=size,
                                evidence=ev)

    whole = run((300, 200), (6, 6))
    assert map_grid(whole) == (6, 6)
    tiles = tuple(run((180, 120), (6, 6)) for _ in range(4))  # tiles of 60 % of a 300 x 200 photo
    assert map_grid(replace(whole, tiles=tiles)) == (10, 10)
    assert map_grid(replace(run((300, 200), (6, 6), evidence=False), views=(whole,))) == (6, 6)

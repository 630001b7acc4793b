"""Dataset readers on generated and real folders, and inspectd eval end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from inspectd.data.layouts import DatasetError, read_labelled_folder, read_mvtec
from inspectd.data.synthetic import make_sample, write_mvtec_layout
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
    assert set(report["overall"]) >= {"image_auroc", "pixel_auroc", "pixel_auroc_all_tokens"}


def test_eval_refuses_a_limit_below_two_naming_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", "eval", str(tmp_path), "--limit", "0"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "--limit: 0 is too few" in done.stderr and "Traceback" not in done.stderr

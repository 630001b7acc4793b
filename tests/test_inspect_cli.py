"""``inspectd inspect`` as a user runs it: a real subprocess on a real tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectd.bundle.load import load_bundle
from inspectd.data.synthetic import make_sample
from inspectd.inspection.inspector import Inspector, InspectorOptions
from inspectd.verdict import Verdict
from tests.conftest import REPO


def _run(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "inspectd.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd or REPO, env=env
    )


@pytest.fixture()
def mixed_folder(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    make_sample(11, 112, anomalous=True).image.resize((160, 112)).save(folder / "wide.png")
    make_sample(12, 112, anomalous=False).image.save(folder / "square.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    full = (folder / "wide.png").read_bytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 2])
    Image.new("L", (9000, 9000)).save(folder / "bomb.png")
    return folder


def test_inspect_reports_each_file_and_exits_non_zero_on_bad_ones(format_bundle, mixed_folder, tmp_path):
    out = tmp_path / "out"
    names = ["wide.png", "empty.png", "square.jpg", "notes.png", "truncated.png", "bomb.png", "missing.png"]
    done = _run("inspect", *[str(mixed_folder / n) for n in names], "--bundle", str(format_bundle),
                "--device", "cpu", "--json", "--out", str(out))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    results = {Path(r["source"]).name: r for r in report["results"]}
    assert list(results) == names
    for bad, reason in [("empty.png", "empty"), ("notes.png", "not an image"), ("truncated.png", "truncated"),
                        ("bomb.png", "decompression bomb"), ("missing.png", "does not exist")]:
        assert results[bad]["verdict"] == "failed" and reason in results[bad]["error"]
        assert f"{bad}: " in done.stderr
    for good, size in [("wide.png", (160, 112)), ("square.jpg", (112, 112))]:
        entry = results[good]
        assert entry["verdict"] in ("anomalous", "normal"), entry
        assert entry["parse_status"] == "ok" and 0.0 <= entry["score"] <= 1.0
        assert entry["reasoning"] and entry["reasoning_tokens"] > 0
        for kind in ("map", "mask"):
            with Image.open(entry["outputs"][kind]) as png:
                assert png.size == size
        with Image.open(entry["outputs"]["overlay"]) as png:  # the photo below a band naming the verdict
            assert png.width == size[0] and png.height > size[1]
        with Image.open(entry["outputs"]["map"]) as png:  # the shipped config's score-gated map peaks at the score
            assert png.mode == "L" and abs(int(np.asarray(png).max()) - round(255 * entry["score"])) <= 1
    assert report["bundle"] == "tiny-format" and len(report["bundle_sha256"]) == 64


def test_text_output_and_clean_exit(format_bundle, mixed_folder):
    done = _run("inspect", str(mixed_folder / "square.jpg"), "--bundle", str(format_bundle), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "square.jpg" in done.stdout and "reasoning:" in done.stdout and "score" in done.stdout


def test_bad_config_and_tampered_bundle_exit_2_with_message(format_bundle, tmp_path, mixed_folder):
    config = tmp_path / "bad.yaml"
    config.write_text(f"model:\n  bundle: {format_bundle}\n  colour: blue\n")
    done = _run("--config", str(config), "inspect", str(mixed_folder / "square.jpg"))
    assert done.returncode == 2 and f"{config}: invalid configuration: model.colour: unknown key" in done.stderr
    assert "\\n" not in done.stderr  # one readable line, not a newline printed escaped
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(format_bundle, copy)
    (copy / "MODEL_CARD.md").write_text("changed")
    done = _run("inspect", str(mixed_folder / "square.jpg"), "--bundle", str(copy))
    assert done.returncode == 2 and "MODEL_CARD.md: sha256" in done.stderr


def test_inspector_maps_follow_the_original_size_and_unknown_is_never_guessed(format_bundle, random_bundle, tmp_path):
    bundle = load_bundle(format_bundle, "cpu")
    inspector = Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=2))
    paths = []
    for i, size in enumerate([(150, 90), (90, 150), (120, 120)]):
        path = tmp_path / f"{i}.png"
        make_sample(30 + i, 112).image.resize(size).save(path)
        paths.append(path)
    results = inspector.inspect_files(paths)
    for result, path in zip(results, paths):
        with Image.open(path) as image:
            assert result.anomaly_map.shape == (image.height, image.width)
        assert result.mask.dtype == bool
        assert result.verdict == (Verdict.ANOMALOUS if result.score >= result.threshold else Verdict.NORMAL)
        assert set(result.timings) == {"load", "preprocess", "generate", "decode", "real"}
    untrained = load_bundle(random_bundle, "cpu")
    garbage = Inspector(untrained, untrained.manifest.real, InspectorOptions()).inspect_files(paths[:1])[0]
    assert garbage.verdict == Verdict.UNKNOWN and garbage.score is None and garbage.anomaly_map is None
    assert garbage.parse_status == "unparsable" and garbage.reply

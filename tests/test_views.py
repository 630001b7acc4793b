"""Mirror views: a bundle with score.views scores and maps each image from its mirror images too."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectd.bundle.files import read_manifest, verify_bundle, write_manifest
from inspectd.bundle.load import load_bundle
from inspectd.data.synthetic import make_sample
from inspectd.errors import InspectdError
from inspectd.inspection.inspector import Inspector, InspectorOptions
from inspectd.inspection.result import InspectionResult, Verdict
from inspectd.inspection.views import all_token_view_map, combine_views, turned_back, view_images
from inspectd.real.localize import all_token_map
from inspectd.real.params import RealParams

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tiny-cgro"


def _with_views(tmp_path: Path, views) -> Path:
    folder = tmp_path / f"views-{views}"
    shutil.copytree(SHIPPED, folder)
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.model_copy(update={
        "score": manifest.score.model_copy(update={"views": views}),
        "real": manifest.real.model_copy(update={"map_scaling": "score_gated"})}))
    return folder


def test_views_are_the_mirror_images_and_turn_back_onto_the_image():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20  # no symmetry: every flip is a different image
    views = [np.asarray(v) for v in view_images(Image.fromarray(pixels), 4)]
    assert np.array_equal(views[0], pixels)
    assert np.array_equal(views[1], pixels[:, ::-1]) and np.array_equal(views[2], pixels[::-1, :])
    assert np.array_equal(views[3], pixels[::-1, ::-1])
    for index, view in enumerate(views):
        assert np.array_equal(turned_back(view, index), pixels)


def test_a_bundle_with_four_views_averages_their_scores_and_maps(tmp_path):
    bundle = load_bundle(_with_views(tmp_path, 4), "cpu")
    inspector = Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=3))  # views span batches
    single = load_bundle(_with_views(tmp_path, 1), "cpu")
    alone = Inspector(single, single.manifest.real, InspectorOptions(batch_size=3))
    images = []
    for seed in (3, 4, 5):
        path = tmp_path / f"{seed}.png"
        make_sample(seed, 168, anomalous=seed != 4).image.save(path)
        images.append(path)
    results = inspector.inspect_files(images)
    assert any(r.verdict is Verdict.ANOMALOUS for r in results) and any(r.verdict is Verdict.NORMAL for r in results)
    for path, result in zip(images, results):
        # The same weights with one view, on the mirrored files: what the four views must add up to.
        flipped = []
        for index, view in enumerate(view_images(Image.open(path), 4)):
            flipped.append(tmp_path / f"{path.stem}-view{index}.png")
            view.save(flipped[-1])
        each = alone.inspect_files(flipped)
        assert not each[0].views and len(result.views) == 4
        assert [v.score for v in result.views] == pytest.approx([e.score for e in each], abs=1e-4)
        assert result.score == pytest.approx(np.mean([e.score for e in each]), abs=1e-4)
        assert result.verdict is (Verdict.ANOMALOUS if result.score >= inspector.threshold else Verdict.NORMAL)
        mean = np.mean([turned_back(e.anomaly_map, i) for i, e in enumerate(each)], axis=0)
        assert np.allclose(result.anomaly_map, mean * result.score / mean.max(), atol=1e-4)
        assert float(result.anomaly_map.max()) == pytest.approx(result.score, abs=1e-6)  # gated: peak = score
        assert result.reasoning == each[0].reasoning and result.evidence is result.views[0].evidence
        assert all(v.anomaly_map is None for v in result.views)  # the result does not carry four image-sized maps
        if result.verdict is Verdict.NORMAL:
            assert not result.mask.any()  # score-gated: a passed part shows no region
        baseline = np.mean([turned_back(all_token_map(e.evidence, inspector.real, e.image_size, e.score), i)
                            for i, e in enumerate(each)], axis=0)
        assert np.allclose(all_token_view_map(result, inspector.real), baseline * result.score / baseline.max(),
                           atol=1e-4)  # the Tab. 7 baseline is made as the ReAL map is


def test_the_result_needs_the_unflipped_view_to_parse():
    real = RealParams(map_scaling="score_gated")
    good = InspectionResult("a.png", Verdict.ANOMALOUS, 0.5, score=0.9, reasoning="a crack near the left",
                            image_size=(4, 4), anomaly_map=np.ones((4, 4), np.float32), timings={"generate": 1.0})
    unparsed = InspectionResult("a.png", Verdict.UNKNOWN, 0.5, reply="<think>", timings={"generate": 1.0})
    combined = combine_views([unparsed, good, good, good], 0.5, real)
    assert combined.verdict is Verdict.UNKNOWN and combined.score is None and combined.anomaly_map is None
    assert combined.timings == {"generate": 4.0}  # every view's time is counted
    mixed = combine_views([good, unparsed, good, good], 0.5, real)
    assert mixed.score == pytest.approx(0.9) and mixed.reasoning == "a crack near the left"


def test_views_are_checked_when_the_bundle_is_read(tmp_path):
    assert read_manifest(SHIPPED).score.views == 1  # bundles written before the setting read as one view
    with pytest.raises(InspectdError, match="views"):
        verify_bundle(_with_views(tmp_path, 3))

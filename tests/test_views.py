"""Mirror views: a bundle with score.views scores and maps each image from its mirror images too."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectd.bundle.files import read_manifest, verify_bundle, write_manifest
from inspectd.bundle.load import load_bundle
from inspectd.data.synthetic import make_sample
from inspectd.errors import InspectdError
from inspectd.inspection.inspector import Inspector, InspectorOptions
from inspectd.inspection.result import InspectionResult
from inspectd.verdict import Verdict
from inspectd.inspection.view_votes import view_votes
from inspectd.inspection.views import all_token_view_map, combine_views, turned_back, turned_back_text, view_images
from inspectd.real.localize import TokenEvidence
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
        shown = result.shown_view  # the explanation shown agrees with the verdict
        assert (result.views[shown].score >= inspector.threshold) == (result.verdict is Verdict.ANOMALOUS)
        assert shown == 0 or (each[0].score >= inspector.threshold) != (result.verdict is Verdict.ANOMALOUS)
        assert result.reasoning == turned_back_text(each[shown].reasoning, shown)[0]
        assert np.allclose(result.evidence.maps, turned_back(each[shown].evidence.maps, shown))
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


def test_place_words_of_a_mirror_view_are_turned_back_with_their_token_spans():
    text = "Upper left: a crack, brighter at the top right; the left edge is clean"
    assert turned_back_text(text, 0) == (text, [])
    assert turned_back_text(text, 1)[0] == "Upper right: a crack, brighter at the top left; the right edge is clean"
    assert turned_back_text(text, 2)[0] == "Lower left: a crack, brighter at the bottom right; the left edge is clean"
    assert turned_back_text(text, 3)[0] == "Lower right: a crack, brighter at the bottom left; the right edge is clean"
    assert turned_back_text("leftover cleft", 1)[0] == "leftover cleft"  # whole words only


def test_the_explanation_shown_is_from_a_view_that_agrees_with_the_verdict():
    """View 0 passes the part, the mean of the four flags it: the reasoning, reply and token maps shown are the
    first flagging view's (left-right mirror), its place words and maps turned back onto the image."""
    real = RealParams(map_scaling="score_gated")
    reasoning = "a crack near the upper left"
    token_maps = np.zeros((2, 3, 3))
    token_maps[:, 0, 0] = 1.0  # the view's upper left
    evidence = TokenEvidence(token_maps, np.ones(2), spans=np.array([[2, 7], [17, 27]]))  # "crack", "upper left"

    def view(score, text, ev=None):
        return InspectionResult("a.png", Verdict.ANOMALOUS if score >= 0.5 else Verdict.NORMAL, 0.5, score=score,
                                reasoning=text, reply=f"<think>{text}</think><answer>x</answer>", image_size=(3, 3),
                                anomaly_map=np.full((3, 3), score, np.float32), evidence=ev,
                                timings={"generate": 1.0})

    views = [view(0.1, "the surface is clean and uniform"), view(0.9, reasoning, evidence),
             view(0.8, "a crack near the lower left", evidence), view(0.7, "a crack")]
    combined = combine_views(views, 0.5, real)
    assert combined.verdict is Verdict.ANOMALOUS and combined.score == pytest.approx(0.625)
    assert combined.shown_view == 1 and combined.summary()["shown_view"] == 1
    assert combined.reasoning == "a crack near the upper right"
    assert combined.reply == "<think>a crack near the upper right</think><answer>x</answer>"
    assert combined.evidence.maps[0, 0, 2] == 1.0 and combined.evidence.maps[0, 0, 0] == 0.0  # turned back
    spans = combined.evidence.spans
    assert combined.reasoning[spans[0][0]:spans[0][1]] == "crack"
    assert combined.reasoning[spans[1][0]:spans[1][1]] == "upper right"
    passed = combine_views([view(0.9, reasoning, evidence), view(0.1, "clean"), view(0.2, "clean"),
                            view(0.3, "clean")], 0.5, real)
    assert passed.verdict is Verdict.NORMAL and passed.shown_view == 1 and passed.reasoning == "clean"
    agreeing = combine_views([view(0.9, reasoning, evidence)] * 4, 0.5, real)
    assert agreeing.shown_view == 0 and agreeing.reasoning == reasoning and agreeing.evidence is evidence


def test_the_explanation_shown_says_the_verdict_in_its_own_words():
    """With the reasoning-branch score a reply can answer yes at a score below a high threshold. Measured on a
    magnetic-tile build (threshold 0.77): view 0 replied "there is a blowhole" at 0.72, the mean 0.74 passed the
    part; the reply shown must be a view that says "clean", not view 0 because its score fell below."""
    real = RealParams(map_scaling="score_gated")

    def view(score, answer):
        text = "there is a blowhole near the center" if answer == "yes" else "the tile surface is clean"
        return InspectionResult("a.png", Verdict.ANOMALOUS if score >= 0.77 else Verdict.NORMAL, 0.77, score=score,
                                reasoning=text, reply=f"<think>{text}</think><answer>{answer}</answer>",
                                image_size=(3, 3), anomaly_map=np.full((3, 3), score, np.float32))

    passed = combine_views([view(0.72, "yes"), view(1.0, "yes"), view(0.24, "no"), view(1.0, "yes")], 0.77, real)
    assert passed.verdict is Verdict.NORMAL and passed.shown_view == 2
    assert passed.reply.endswith("<answer>no</answer>") and "clean" in passed.reasoning
    # flagged: a view whose reply names the defect is shown even when its own score is below the threshold
    # and no view both says yes and scores above it
    flagged = combine_views([view(0.3, "no"), view(0.7, "yes"), view(1.0, "no"), view(1.0, "no")], 0.74, real)
    assert flagged.verdict is Verdict.ANOMALOUS and flagged.shown_view == 1 and "blowhole" in flagged.reasoning
    # replies that say nothing either way: the first view whose score is on the verdict's side, as before
    silent = [replace(v, reply="<think>x</think>") for v in (view(0.1, "no"), view(0.9, "no"))]
    assert combine_views(silent, 0.5, real).shown_view == 1


def test_each_views_score_is_kept_and_views_that_disagree_are_named():
    """An engineer sees each mirror view's score beside the mean that decided, and is told when the views fall on
    both sides of the threshold (the verdict then depends on how the part lay)."""
    real = RealParams(map_scaling="score_gated")

    def view(score):
        if score is None:
            return InspectionResult("a.png", Verdict.UNKNOWN, 0.5, reply="<think>", timings={"generate": 1.0})
        text = "there is a crack" if score >= 0.5 else "the tile surface is clean"
        return InspectionResult("a.png", Verdict.ANOMALOUS if score >= 0.5 else Verdict.NORMAL, 0.5, score=score,
                                reasoning=text, reply=f"<think>{text}</think><answer>x</answer>", image_size=(3, 3),
                                anomaly_map=np.full((3, 3), score, np.float32), timings={"generate": 1.0})

    split = combine_views([view(0.2), view(0.9), view(None), view(0.7)], 0.5, real)
    assert split.view_scores == [0.2, 0.9, None, 0.7] and split.score == pytest.approx(0.6)
    assert split.summary()["view_scores"] == [0.2, 0.9, None, 0.7]
    votes = view_votes(split.summary())
    assert votes.split and (votes.above, votes.scored) == (2, 3) and votes.shown == 1
    assert votes.sentence() == ("0.200 · 0.900 · no reply · 0.700; 2 of 3 at or above the threshold 0.500: the views "
                                "disagree, so this verdict depends on how the part lay. Reasoning shown: mirrored "
                                "left-right (place words turned back to the photo)")
    agreeing = view_votes(combine_views([view(0.6), view(0.9), view(0.8), view(0.7)], 0.5, real).summary())
    assert not agreeing.split and agreeing.sentence() == "0.600 · 0.900 · 0.800 · 0.700; 4 of 4 at or above the threshold 0.500"
    one_view = view(0.9)
    assert one_view.view_scores is None and view_votes(one_view.summary()) is None

"""Tiles: a bundle with score.tiles also inspects N x N overlapping tiles of each photo, cut at full resolution."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from inspectd.bundle.files import read_manifest, write_manifest
from inspectd.bundle.load import load_bundle
from inspectd.bundle.manifest import ScoreSpec
from inspectd.data.synthetic import make_sample
from inspectd.errors import InspectdError
from inspectd.inspection.inspector import Inspector, InspectorOptions
from inspectd.inspection.result import InspectionResult
from inspectd.inspection.tiles import all_token_result_map, combine_tiles, tile_boxes, tile_images
from inspectd.real.evidence import TokenEvidence
from inspectd.real.localize import all_token_map
from inspectd.real.params import RealParams
from inspectd.verdict import Verdict

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tiny-cgro"
PHOTO = 280  # px: each 0.6 tile is 168 px (the shipped model's input), so a tile's 6 x 6 grid is 10 x 10 on the photo
# Photos of the synthetic line on which the shipped weights, with 2 x 2 tiles, give: a defect the whole image and
# every tile flag (3), a good part (4), and a defect only the lower right tile flags (20: the whole image passes it).
SEEDS = (3, 4, 20)


def _bundle(tmp_path: Path, name: str, real: dict | None = None, **score) -> Path:
    """The shipped weights with the manifest's score (and ReAL) settings changed, resealed."""
    folder = tmp_path / name
    shutil.copytree(SHIPPED, folder)
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.model_copy(update={"score": manifest.score.model_copy(update=score),
                                                       "real": manifest.real.model_copy(update=real or {})}))
    return folder


def _inspector(folder: Path) -> Inspector:
    bundle = load_bundle(folder, "cpu")
    return Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=3))  # an image's rows span batches


def _photos(tmp_path: Path) -> list[Path]:
    paths = []
    for seed in SEEDS:
        paths.append(tmp_path / f"{seed}.png")
        make_sample(seed, PHOTO).image.save(paths[-1])
    return paths


def _crops(tmp_path: Path, photo: Path) -> list[Path]:
    """The photo's tiles as files (PNG: the same pixels), for inspecting them one by one without tiles."""
    from PIL import Image

    out = []
    for index, tile in enumerate(tile_images(Image.open(photo).convert("RGB"), 2, 0.6)):
        out.append(tmp_path / f"{photo.stem}-tile{index}.png")
        tile.save(out[-1])
    return out


def _stitched_by_hand(maps: list[np.ndarray], scores: list[float], size: int, gated: bool, score: float):
    """What the photo's map must be: each tile's map times its score (gated maps are so already), averaged over
    the tiles covering a pixel, then scaled to peak at one view's peak (1, or the combined score when gated)."""
    total, count = np.zeros((size, size)), np.zeros((size, size))
    for tile_map, tile_score, (left, top, right, bottom) in zip(maps, scores, tile_boxes((size, size), 2, 0.6)):
        count[top:bottom, left:right] += 1
        total[top:bottom, left:right] += tile_map if gated else tile_map * tile_score
    mean = total / count
    return mean / mean.max() * (score if gated else 1.0)


def test_tiles_cover_the_photo_with_overlap():
    boxes = tile_boxes((300, 200), 2, 0.6)
    assert boxes == [(0, 0, 180, 120), (120, 0, 300, 120), (0, 80, 180, 200), (120, 80, 300, 200)]  # row by row
    covered = np.zeros((200, 300), int)
    for left, top, right, bottom in boxes:
        covered[top:bottom, left:right] += 1
    assert covered.min() == 1 and covered.max() == 4  # every pixel seen, the middle by all four tiles
    for size, tiles, share in (((5, 5), 2, 0.5), ((301, 97), 3, 1 / 3), ((1, 1), 3, 0.4)):
        covered = np.zeros(size[::-1], int)
        for left, top, right, bottom in tile_boxes(size, tiles, share):
            covered[top:bottom, left:right] += 1
        assert covered.min() >= 1  # rounding a side down never leaves a seam between tiles


def test_tiles_are_cut_from_the_photo_at_full_resolution():
    from PIL import Image

    pixels = np.arange(200 * 300, dtype=np.uint32).reshape(200, 300).astype(np.uint8)
    tiles = tile_images(Image.fromarray(pixels), 2, 0.6)
    assert [tile.size for tile in tiles] == [(180, 120)] * 4
    assert np.array_equal(np.asarray(tiles[3]), pixels[80:200, 120:300])


@pytest.mark.parametrize("tile_score, map_scaling", [("max", "min_max"), ("whole", "score_gated")])
def test_a_tiled_bundle_scores_the_photo_and_stitches_the_tiles_maps(tmp_path, tile_score, map_scaling):
    """The same weights inspecting the whole photo and each tile alone (no tiles) give what the tiled result must
    add up to: its score, its map stitched from theirs, its explanation from the run whose verdict it has."""
    real = {"map_scaling": map_scaling}
    tiled = _inspector(_bundle(tmp_path, "tiled", real, tiles=2, tile_share=0.6, tile_score=tile_score))
    alone = _inspector(_bundle(tmp_path, "alone", real))
    photos = _photos(tmp_path)
    results = tiled.inspect_files(photos)
    assert {r.verdict for r in results} == {Verdict.ANOMALOUS, Verdict.NORMAL}
    for photo, result in zip(photos, results):
        whole = alone.inspect_files([photo])[0]
        each = alone.inspect_files(_crops(tmp_path, photo))
        assert len(result.tiles) == 4 and all(t.anomaly_map is None and t.mask is None for t in result.tiles)
        assert [t.score for t in result.tiles] == pytest.approx([e.score for e in each], abs=1e-4)
        expected = whole.score if tile_score == "whole" else max([whole.score] + [e.score for e in each])
        assert result.score == pytest.approx(expected, abs=1e-4)
        assert result.verdict is (Verdict.ANOMALOUS if result.score >= tiled.threshold else Verdict.NORMAL)
        gated = map_scaling == "score_gated"
        by_hand = _stitched_by_hand([e.anomaly_map for e in each], [e.score for e in each], PHOTO, gated, result.score)
        assert result.anomaly_map.shape == (PHOTO, PHOTO)
        assert np.allclose(result.anomaly_map, by_hand, atol=1e-4)
        assert np.array_equal(result.mask, result.anomaly_map >= tiled.real.mask_threshold) or (
            gated and result.verdict is Verdict.NORMAL and not result.mask.any())  # gated: a passed part, no mask
        all_tokens = [all_token_map(e.evidence, tiled.real, e.image_size, e.score) for e in each]
        assert np.allclose(all_token_result_map(result, tiled.real),
                           _stitched_by_hand(all_tokens, [e.score for e in each], PHOTO, gated, result.score),
                           atol=1e-4)  # the Tab. 7 baseline is stitched as the ReAL map is
        if result.shown_tile is None:  # the whole image's explanation, its own verdict the combined one
            assert (whole.score >= tiled.threshold) == (result.verdict is Verdict.ANOMALOUS)
            assert result.reasoning == whole.reasoning and result.evidence.maps.shape[1:] == (6, 6)
            continue
        shown = each[result.shown_tile]  # a tile decided: its explanation, its token maps placed on the photo's grid
        assert tile_score == "max" and (shown.score >= tiled.threshold) == (result.verdict is Verdict.ANOMALOUS)
        assert result.reasoning == shown.reasoning and result.reply == shown.reply
        left, top = tile_boxes((PHOTO, PHOTO), 2, 0.6)[result.shown_tile][:2]
        row, col = top * 10 // PHOTO, left * 10 // PHOTO
        placed = result.evidence.maps
        assert placed.shape == (shown.evidence.maps.shape[0], 10, 10)
        assert np.allclose(placed[:, row:row + 6, col:col + 6], shown.evidence.maps, atol=1e-4)
        assert placed.sum() == pytest.approx(placed[:, row:row + 6, col:col + 6].sum())  # zeros outside the tile
        assert result.summary()["shown_tile"] == result.shown_tile
    if tile_score == "max":
        assert results[2].shown_tile == 3  # the defect only the lower right tile saw
        assert results[2].verdict is Verdict.ANOMALOUS and results[2].reasoning == results[2].tiles[3].reasoning


def test_one_tile_leaves_every_result_as_without_the_setting(tmp_path):
    """A manifest written with score.tiles 1 (a key older bundles lack) inspects exactly as the shipped one."""
    folder = _bundle(tmp_path, "one-tile", tiles=1, tile_score="max")
    assert json.loads((folder / "bundle.json").read_text())["score"]["tiles"] == 1
    assert "tiles" not in json.loads((SHIPPED / "bundle.json").read_text())["score"]
    photos = _photos(tmp_path)
    for before, after in zip(_inspector(SHIPPED).inspect_files(photos), _inspector(folder).inspect_files(photos)):
        assert {**before.summary(), "timings_ms": None} == {**after.summary(), "timings_ms": None}
        assert np.array_equal(before.anomaly_map, after.anomaly_map) and np.array_equal(before.mask, after.mask)
        assert np.array_equal(before.evidence.maps, after.evidence.maps)
        assert np.array_equal(before.kept_tokens, after.kept_tokens)
        assert after.tiles == () and after.shown_tile is None


def test_tiles_that_leave_gaps_are_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValidationError, match="score.tiles 3 of tile_share 0.3 leave gaps"):
        ScoreSpec(tiles=3, tile_share=0.3)
    assert ScoreSpec(tiles=1, tile_share=0.3).tiles == 1  # no tiles, nothing to cover
    folder = tmp_path / "gaps"
    shutil.copytree(SHIPPED, folder)
    manifest = read_manifest(folder)  # model_copy does not validate: the file holds what a hand edit would
    write_manifest(folder, manifest.model_copy(update={"score": manifest.score.model_copy(
        update={"tiles": 2, "tile_share": 0.4})}))
    with pytest.raises(InspectdError, match="tile_share"):
        read_manifest(folder)


def _run(score: float | None, reasoning: str = "", evidence: TokenEvidence | None = None,
         size: tuple[int, int] = (180, 120)) -> InspectionResult:
    """One run's result as _inspect_batch makes it: a flat map of 1 (min-max peak), one second of generate."""
    verdict = Verdict.UNKNOWN if score is None else Verdict.ANOMALOUS if score >= 0.5 else Verdict.NORMAL
    return InspectionResult("a.png", verdict, 0.5, score=score, reasoning=reasoning,
                            reply=f"<think>{reasoning}</think>", image_size=size, evidence=evidence,
                            timings={"generate": 1.0},
                            anomaly_map=None if score is None else np.ones(size[::-1], np.float32))


def test_the_highest_tile_decides_with_max_and_explains_on_the_photos_grid():
    """The whole photo passes the part, a tile flags it: with max the verdict is the tile's, and so are the
    reasoning, reply and token maps shown (placed where the tile lies on a grid over the photo)."""
    real = RealParams()  # min_max: a tile's map counts by its score
    boxes = tile_boxes((300, 200), 2, 0.6)
    token_maps = np.zeros((2, 6, 6))
    token_maps[0, 0, 0] = 1.0  # the tile's upper left cell
    evidence = TokenEvidence(token_maps, np.ones(2), spans=np.array([[2, 7], [8, 12]]))
    whole = _run(0.3, "clean", size=(300, 200))
    tiles = [_run(0.2), _run(0.9, "a crack", evidence), _run(None), _run(0.6, "a spot")]
    combined = combine_tiles(whole, tiles, boxes, "max", 0.5, real)
    assert combined.verdict is Verdict.ANOMALOUS and combined.score == pytest.approx(0.9)
    assert combined.shown_tile == 1 and combined.reasoning == "a crack" and combined.reply == "<think>a crack</think>"
    placed = combined.evidence.maps  # a 10 x 10 grid over the photo (6 cells are 0.6 of it); tile 1: columns 4-9
    assert placed.shape == (2, 10, 10) and placed[0, 0, 4] == 1.0 and placed.sum() == 1.0
    assert combined.evidence.spans is evidence.spans and combined.image_size == (300, 200)
    assert combined.anomaly_map.shape == (200, 300)
    # each tile's flat map times its score, averaged where tiles overlap (the unparsed tile counts as zeros),
    # then scaled to peak at 1 (one min-max view's peak): tile 1 alone is the peak
    assert combined.anomaly_map[10, 200] == pytest.approx(1.0)
    assert combined.anomaly_map[10, 10] == pytest.approx(0.2 / 0.9)
    assert combined.anomaly_map[100, 150] == pytest.approx((0.2 + 0.9 + 0 + 0.6) / 4 / 0.9)
    assert np.array_equal(combined.mask, combined.anomaly_map >= real.mask_threshold)
    assert combined.timings == {"generate": 5.0} and all(t.anomaly_map is None for t in combined.tiles)
    kept = combine_tiles(whole, tiles, boxes, "whole", 0.5, real)  # whole: the photo's score and explanation
    assert kept.verdict is Verdict.NORMAL and kept.score == pytest.approx(0.3)
    assert kept.shown_tile is None and kept.reasoning == "clean" and kept.evidence is None
    assert np.allclose(kept.anomaly_map, combined.anomaly_map)  # the map is the tiles' either way


def test_the_explanation_shown_says_the_verdict_in_its_own_words():
    """As for mirror views: the run shown is one whose reply says the combined verdict. The whole photo's score
    (0.6) flags the part while its reply says clean; a tile that names the crack is shown instead. A part passed
    by every score shows the whole photo's "clean" even though a low-scoring tile said yes."""
    real = RealParams()
    boxes = tile_boxes((300, 200), 2, 0.6)

    def said(score, answer, size=(180, 120)):
        text = "there is a crack near the left" if answer == "yes" else "the tile surface is clean"
        return replace(_run(score, text, size=size), reply=f"<think>{text}</think><answer>{answer}</answer>")

    whole = said(0.6, "no", size=(300, 200))
    tiles = [said(0.7, "no"), said(0.55, "yes"), said(0.9, "no"), said(0.2, "no")]
    flagged = combine_tiles(whole, tiles, boxes, "max", 0.5, real)
    assert flagged.verdict is Verdict.ANOMALOUS and flagged.shown_tile == 1 and "crack" in flagged.reasoning
    passed = combine_tiles(said(0.1, "no", size=(300, 200)), [said(0.3, "yes")] + tiles[3:] * 3, boxes, "max",
                           0.5, real)
    assert passed.verdict is Verdict.NORMAL and passed.shown_tile is None and "clean" in passed.reasoning
    # no run's reply says the verdict: the highest-scoring tile on its side, as before words were read
    silent = combine_tiles(said(0.3, "no", size=(300, 200)), [said(0.7, "no"), said(0.9, "no")] + tiles[3:] * 2,
                           boxes, "max", 0.5, real)
    assert silent.verdict is Verdict.ANOMALOUS and silent.shown_tile == 1

def test_the_result_needs_the_whole_photo_to_parse():
    whole = _run(None, size=(300, 200))
    combined = combine_tiles(whole, [_run(0.9)] * 4, tile_boxes((300, 200), 2, 0.6), "max", 0.5, RealParams())
    assert combined.verdict is Verdict.UNKNOWN and combined.score is None and combined.anomaly_map is None
    assert combined.timings == {"generate": 5.0} and combined.shown_tile is None  # every run's time counts


@pytest.mark.parametrize("size, tiles, share, grid, shown", [
    ((40, 47), 3, 0.4, (5, 5), 4),  # the middle tile's box is 4 x 4 cells of the photo's grid: its maps resized
    ((97, 61), 3, 0.45, (5, 7), 8), ((301, 199), 2, 0.55, (4, 6), 1), ((640, 480), 3, 0.4, (6, 8), 3)])
def test_a_tiles_token_maps_land_where_the_tile_lies_on_any_photo(size, tiles, share, grid, shown):
    """Odd photo sizes and token grids: the shown tile's token maps fill its box (to the nearest cell) on a grid
    over the whole photo whose cells are the tile's cells' size, and nothing outside it."""
    boxes = tile_boxes(size, tiles, share)
    left, top, right, bottom = boxes[shown]
    tile_size = (right - left, bottom - top)
    runs = [_run(0.1, size=tile_size)] * len(boxes)
    runs[shown] = _run(0.9, "a crack", TokenEvidence(np.ones((2, *grid)), np.ones(2)), tile_size)
    combined = combine_tiles(_run(0.1, "clean", size=size), runs, boxes, "max", 0.5, RealParams())
    assert combined.shown_tile == shown
    cells_h, cells_w = round(grid[0] * size[1] / tile_size[1]), round(grid[1] * size[0] / tile_size[0])
    placed = combined.evidence.maps
    assert placed.shape == (2, cells_h, cells_w) and np.allclose(np.unique(placed), [0.0, 1.0])
    rows, cols = np.nonzero(placed[0])
    assert abs(rows.min() - top * cells_h / size[1]) <= 0.5 and abs(rows.max() + 1 - bottom * cells_h / size[1]) <= 0.5
    assert abs(cols.min() - left * cells_w / size[0]) <= 0.5 and abs(cols.max() + 1 - right * cells_w / size[0]) <= 0.5

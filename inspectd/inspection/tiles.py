"""Tiled inspection: the photo read whole and as N x N overlapping tiles, one result from them all.

Why: the model reads every image at its input size, so on a large photo a thin defect shrinks below one token
cell. A tile of ``tile_share`` of the photo's side, cut at full resolution and read at the same input size, shows
it 1 / ``tile_share`` times larger, and the tiles' maps, stitched, are that much finer than the whole image's.

Score (``score.tile_score``): ``whole`` keeps the whole image's (its views combined); ``max`` takes the highest of
it and the tiles' scores, so a defect one tile sees clearly flags the part. Map: each tile's map placed at its box,
weighted by its tile's score (a tile scored normal does not light up), averaged where tiles overlap, its peak that
of one view's map. One explanation per verdict, by the rule mirror views follow: the whole image's whenever its
reply and score say the combined verdict; otherwise the highest-scoring tile's that does (a tile's token maps
placed on a token grid over the whole photo, so every consumer of ``evidence.maps`` reads them as it reads the
whole image's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
from PIL import Image

from inspectd.inspection.result import InspectionResult
from inspectd.inspection.views import all_token_view_map, kept_runs, peak_as_one_view, shown_view, summed_timings
from inspectd.real.evidence import TokenEvidence
from inspectd.real.localize import all_token_map, shown_mask
from inspectd.real.params import RealParams
from inspectd.verdict import Verdict

Box = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels, right and bottom exclusive (PIL's crop box)


def tile_side(side: int, tiles: int, share: float) -> int:
    """A tile's side in pixels: ``share`` of the photo's, rounded; never less than side / tiles (rounding down
    must not leave a pixel column between two tiles) nor 0, never more than the photo's."""
    return min(side, max(1, round(share * side), math.ceil(side / tiles)))


def boxes_of(image_size: tuple[int, int], tiles: int, tile_size: tuple[int, int]) -> list[Box]:
    """The tiles' boxes, row by row: top-left corners evenly spaced from the photo's edge to its opposite edge.

    Every box follows from the photo's and a tile's size, so a kept result (which has both) can rebuild them."""
    width, height = image_size
    tile_w, tile_h = tile_size
    lefts = np.linspace(0, width - tile_w, tiles).round().astype(int)
    tops = np.linspace(0, height - tile_h, tiles).round().astype(int)
    return [(int(left), int(top), int(left) + tile_w, int(top) + tile_h) for top in tops for left in lefts]


def tile_boxes(image_size: tuple[int, int], tiles: int, share: float) -> list[Box]:
    """The N x N boxes of ``score.tiles`` N and ``score.tile_share`` on a photo of ``image_size`` (width, height)."""
    width, height = image_size
    return boxes_of(image_size, tiles, (tile_side(width, tiles, share), tile_side(height, tiles, share)))


def tile_images(image: Image.Image, tiles: int, share: float) -> list[Image.Image]:
    """The tiles cut from the photo as it came (full resolution), in the order of ``tile_boxes``."""
    return [image.crop(box) for box in tile_boxes(image.size, tiles, share)]


def _score_weighted(tile_map: np.ndarray, real: RealParams, score: float) -> np.ndarray:
    """A tile's [0, 1] map times its score: a score-gated map is so already; a min-max one peaks at 1 on every
    tile, so a tile the model passed would light up as brightly as the one holding the defect."""
    if real.map_scaling == "score_gated":
        return tile_map
    return (tile_map * np.float32(min(1.0, max(0.0, score)))).astype(np.float32)


def stitched(maps: list[np.ndarray | None], boxes: list[Box], image_size: tuple[int, int]) -> np.ndarray:
    """Maps of the tiles placed at their boxes on the photo, averaged where boxes overlap; a tile without a map
    counts as zeros there (it looked and saw nothing to point at)."""
    width, height = image_size
    total = np.zeros((height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.float32)
    for tile_map, (left, top, right, bottom) in zip(maps, boxes):
        count[top:bottom, left:right] += 1
        if tile_map is not None:
            total[top:bottom, left:right] += tile_map
    return total / np.maximum(count, 1)


def _tiled_map(maps: list[np.ndarray | None], tiles: Sequence[InspectionResult], boxes: list[Box],
               image_size: tuple[int, int], real: RealParams, score: float) -> np.ndarray | None:
    """The photo's map from its tiles' maps (ReAL's or the all-token baseline's, made the same way): weighted by
    the tiles' scores, stitched, its peak that of one view's map at the combined score; None when no tile has one."""
    if all(tile_map is None for tile_map in maps):
        return None
    weighted = [None if tile_map is None else _score_weighted(tile_map, real, tile.score)
                for tile_map, tile in zip(maps, tiles)]
    return peak_as_one_view(stitched(weighted, boxes, image_size), real, score)


def _combined_score(whole: float, tiles: list[InspectionResult], tile_score: Literal["whole", "max"]) -> float:
    """``whole``: the whole image's score; ``max``: the highest of it and the scores of the tiles that parsed."""
    if tile_score == "whole":
        return whole
    return max([whole] + [tile.score for tile in tiles if tile.score is not None])


def _cells(start: int, stop: int, side: int, cells: int) -> tuple[int, int]:
    """A box's pixel span [start, stop) on a side of ``side`` pixels as a span of the ``cells`` grid cells, at
    least one cell wide."""
    first = min(cells - 1, round(start * cells / side))
    return first, max(first + 1, min(cells, round(stop * cells / side)))


def photo_grid(tile_grid: tuple[int, int], tile_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
    """The token grid (rows, columns) over the whole photo whose cells are a tile's cells: the tile's grid
    carried over the photo (a tile of a third of the photo's width with 6 columns gives 18)."""
    (rows, columns), (tile_width, tile_height), (width, height) = tile_grid, tile_size, image_size
    return round(rows * height / tile_height), round(columns * width / tile_width)


def _evidence_on_photo(evidence: TokenEvidence, box: Box, image_size: tuple[int, int]) -> TokenEvidence:
    """A tile's token maps placed on the ``photo_grid``, zeros outside the tile: the store's per-word maps, the
    console and the evaluation's peak check read ``evidence.maps`` as covering the photo."""
    tokens, grid_h, grid_w = evidence.maps.shape
    width, height = image_size
    left, top, right, bottom = box
    photo_h, photo_w = photo_grid((grid_h, grid_w), (right - left, bottom - top), image_size)
    row0, row1 = _cells(top, bottom, height, photo_h)
    col0, col1 = _cells(left, right, width, photo_w)
    maps = evidence.maps
    if (row1 - row0, col1 - col0) != (grid_h, grid_w):  # rounding the box to whole cells changed its size
        maps = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(maps))[None],
                                               size=(row1 - row0, col1 - col0), mode="bilinear",
                                               align_corners=False)[0].numpy()
    placed = np.zeros((tokens, photo_h, photo_w), dtype=evidence.maps.dtype)
    placed[:, row0:row1, col0:col1] = maps
    return replace(evidence, maps=placed)


def _shown_tile(whole: InspectionResult, tiles: list[InspectionResult], threshold: float,
                anomalous: bool) -> int | None:
    """Whose explanation is shown (None: the whole image's), by the rule mirror views follow (``shown_view``):
    the first run whose reply and own score both say the combined verdict, else whose reply says it, else whose
    score does; the whole image first, then the tiles from the highest score down (with ``max`` the highest set
    the combined score). Words first: a reasoning-branch score can fall on one side while the reply says the
    other, and an engineer must never read "clean" beside ANOMALOUS."""
    ranked = sorted((index for index, tile in enumerate(tiles) if tile.score is not None),
                    key=lambda index: -tiles[index].score)
    return shown_view([(None, whole)] + [(index, tiles[index]) for index in ranked], threshold, anomalous)


def combine_tiles(whole: InspectionResult, tiles: list[InspectionResult], boxes: list[Box],
                  tile_score: Literal["whole", "max"], threshold: float, real: RealParams) -> InspectionResult:
    """One result from the whole image's (its views already combined) and its tiles' (in the order of ``boxes``).

    Score per ``tile_score``; map: the tiles' maps stitched (the whole image's when no tile has one), its peak
    that of one view's map at the combined score; the explanation of the run whose verdict is the combined one."""
    timings = summed_timings([whole, *tiles])
    if whole.score is None:  # failed, or the whole image's reply did not parse: its result, as without tiles
        return replace(whole, timings=timings, tiles=kept_runs(tiles))
    score = _combined_score(whole.score, tiles, tile_score)
    anomalous = score >= threshold
    anomaly_map = _tiled_map([tile.anomaly_map for tile in tiles], tiles, boxes, whole.image_size, real, score)
    if anomaly_map is None and whole.anomaly_map is not None:
        anomaly_map = peak_as_one_view(whole.anomaly_map, real, score)
    mask = None if anomaly_map is None else shown_mask(anomaly_map >= real.mask_threshold, real, flagged=anomalous)
    shown = _shown_tile(whole, tiles, threshold, anomalous)
    explained = whole
    if shown is not None:
        tile = tiles[shown]
        evidence = None if tile.evidence is None else _evidence_on_photo(tile.evidence, boxes[shown], whole.image_size)
        explained = replace(tile, evidence=evidence, views=whole.views, shown_view=0)
    return replace(explained, source=whole.source, image_size=whole.image_size,
                   verdict=Verdict.ANOMALOUS if anomalous else Verdict.NORMAL, score=score, anomaly_map=anomaly_map,
                   mask=mask, timings=timings, tiles=kept_runs(tiles), shown_tile=shown)


def all_token_result_map(result: InspectionResult, real: RealParams) -> np.ndarray | None:
    """The all-token baseline (Tab. 7) made the same way as the result's map: stitched from its tiles' all-token
    maps when it has tiles, else over its views or its one image (``all_token_view_map``).

    With tiles but no tile map the result's map is the whole image's, so the baseline is too; that image's token
    evidence is gone only when a tile's explanation was shown (then None: a lenient reply without reasoning)."""
    if not result.tiles or result.score is None:
        return all_token_view_map(result, real)
    boxes = boxes_of(result.image_size, math.isqrt(len(result.tiles)), result.tiles[0].image_size)
    maps = [None if tile.evidence is None or tile.score is None else
            all_token_map(tile.evidence, real, tile.image_size, tile.score) for tile in result.tiles]
    tiled = _tiled_map(maps, result.tiles, boxes, result.image_size, real, result.score)
    if tiled is not None:
        return tiled
    return all_token_view_map(result, real) if result.views or result.shown_tile is None else None

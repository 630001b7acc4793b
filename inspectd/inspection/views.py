"""Mirror views of one image, and one result from the views' results.

Why: a tile and its mirror images are the same part, yet a small model's score
and map differ between them; averaging them removes part of that noise. On the
magnetic-tile validation split (docs/experiments.md, "Mirror views") four views raised the
shipped bundle's image AUROC on the held-out real photos from 87.2 to 89.4 and
the drawn defects' per-kind pixel AUROC from 86.8 to 88.8.

One explanation per verdict: the reasoning, the reply and the per-token
evidence shown are those of the first view, in the order above, whose reply
and own score both say the combined verdict (``shown_view``; the unflipped
view whenever it does; on the magnetic-tile hold-out it disagreed with the
four views' mean in 28 of 314 images, so an engineer read "clean and
uniform" beside ANOMALOUS). A flipped
view's explanation is turned back onto the image as it came: its place words
are mirrored ("left" <-> "right" for a left-right flip, "upper" <-> "lower"
and "top" <-> "bottom" for a top-bottom one) with the token spans moved to
match, and its token maps are flipped back. A result needs the unflipped view
to parse; the other views add to the score and the map when they parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from inspectd.inspection.result import InspectionResult
from inspectd.inspection.view_votes import FLIPS
from inspectd.model.reply import reply_says
from inspectd.verdict import Verdict
from inspectd.real.localize import all_token_map, scaled, shown_mask
from inspectd.real.params import RealParams

Run = TypeVar("Run")  # how a caller names a run: a view's index, a tile's (None: the whole image)


def view_images(image: Image.Image, views: int) -> list[Image.Image]:
    out = []
    for left_right, top_bottom in FLIPS[:views]:
        view = ImageOps.mirror(image) if left_right else image
        out.append(ImageOps.flip(view) if top_bottom else view)
    return out


def turned_back(array: np.ndarray, view: int) -> np.ndarray:
    """A view's map (..., height, width) in the orientation of the image as it came."""
    left_right, top_bottom = FLIPS[view]
    if top_bottom:
        array = array[..., ::-1, :]
    if left_right:
        array = array[..., :, ::-1]
    return np.ascontiguousarray(array)


_MIRRORED_WORDS = ({"left": "right", "right": "left"},  # a left-right flip
                   {"upper": "lower", "lower": "upper", "top": "bottom", "bottom": "top"})  # a top-bottom flip


def _same_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def turned_back_text(text: str, view: int) -> tuple[str, list[tuple[int, int, int]]]:
    """A view's text with its place words naming the image as it came, and the replacements made as
    (start, end, new length) in the view's text, for moving character spans."""
    swaps: dict[str, str] = {}
    for flipped, words in zip(FLIPS[view], _MIRRORED_WORDS):
        if flipped:
            swaps.update(words)
    if not swaps:
        return text, []
    pattern = re.compile(r"\b(" + "|".join(swaps) + r")\b", re.IGNORECASE)
    pieces, edits, last = [], [], 0
    for match in pattern.finditer(text):
        new = _same_case(swaps[match.group(0).lower()], match.group(0))
        pieces += [text[last:match.start()], new]
        edits.append((match.start(), match.end(), len(new)))
        last = match.end()
    return "".join(pieces) + text[last:], edits


def _moved(offset: int, edits: list[tuple[int, int, int]], end: bool) -> int:
    """A character offset of the view's text in the turned-back text; inside a replaced word it moves to the
    new word's start (a span's start) or end (a span's end), so a token that covered part of it covers it."""
    shift = 0
    for start, stop, length in edits:
        if offset >= stop:
            shift += length - (stop - start)
        elif offset > start:
            return start + shift + (length if end else 0)
        else:
            break
    return offset + shift


def _explained_as_it_came(view: InspectionResult, index: int) -> InspectionResult:
    """A flipped view's reasoning, reply and token evidence turned back onto the image as it came."""
    if index == 0:
        return view
    reasoning, edits = turned_back_text(view.reasoning or "", index)
    reply, _ = turned_back_text(view.reply or "", index)
    evidence = view.evidence
    if evidence is not None:
        spans = None
        if evidence.spans is not None:
            spans = np.array([[_moved(int(a), edits, False), _moved(int(b), edits, True)] for a, b in evidence.spans],
                             dtype=evidence.spans.dtype).reshape(evidence.spans.shape)
        evidence = replace(evidence, maps=turned_back(evidence.maps, index), spans=spans)
    return replace(view, reasoning=reasoning if view.reasoning is not None else None,
                   reply=reply if view.reply is not None else None, evidence=evidence)


def summed_timings(views: list[InspectionResult]) -> dict[str, float]:
    """Each stage's time over every run of an image (its views, its tiles): each run's time was spent on it."""
    total: dict[str, float] = {}
    for result in views:
        for stage, seconds in result.timings.items():
            total[stage] = total.get(stage, 0.0) + seconds
    return total


def peak_as_one_view(mean_map: np.ndarray, real: RealParams, score: float) -> np.ndarray:
    """The mean map scaled to the peak one view's map has (1, or the score when gated), so the mask threshold
    means what it means for one view: a mean of maps whose peaks differ is lower than each (on the magnetic-tile
    validation the mask then covered 54 % of the drawn defects on average, 59 % rescaled, at the same AUROC)."""
    peak = float(mean_map.max())
    if peak <= 0:
        return mean_map.astype(np.float32)
    return scaled((mean_map / np.float32(peak)).astype(np.float32), real, score)  # as ReAL scales one view's map


def kept_runs(views: list[InspectionResult]) -> tuple[InspectionResult, ...]:
    """The views (or tiles) as the result keeps them: score and token evidence, without their image-sized arrays
    (a camera frame's map is tens of MB, and the daemon's model process sends every result through a pipe)."""
    return tuple(replace(view, anomaly_map=None, mask=None) for view in views)


def shown_view(scored: Sequence[tuple[Run, InspectionResult]], threshold: float, anomalous: bool) -> Run:
    """The view whose explanation is shown: the first whose reply says the verdict and whose own score is on the
    verdict's side; else the first whose reply says it; else the first whose score is on its side (the mean lies
    between the views' scores, so one always is). Why the words first: with the reasoning-branch score a reply
    can answer yes at a score below a high threshold (0.77 on a magnetic-tile build: 9 of 200 drawn-validation
    images showed "there is a crack" beside NORMAL, and in each another view's reply said "clean"). Tiled
    inspection chooses among the whole image and its tiles by the same rule."""
    by_words = [index for index, view in scored if reply_says(view.reply, anomalous)]
    by_score = [index for index, view in scored if (view.score >= threshold) == anomalous]
    both = [index for index in by_words if index in by_score]
    return (both or by_words or by_score)[0]


def combine_views(views: list[InspectionResult], threshold: float, real: RealParams) -> InspectionResult:
    """Score: the mean over the views that parsed; map: the mean of their maps turned back, its peak that of one
    view's map; reasoning, reply and token evidence: the first view that agrees with the verdict, turned back."""
    first = views[0]
    if first.score is None:  # failed, or the unflipped reply did not parse: that view's result, as without views
        return replace(first, timings=summed_timings(views), views=kept_runs(views))
    scored = [(index, view) for index, view in enumerate(views) if view.score is not None]
    score = float(np.mean([view.score for _, view in scored]))
    verdict = Verdict.ANOMALOUS if score >= threshold else Verdict.NORMAL
    maps = [turned_back(view.anomaly_map, index) for index, view in scored if view.anomaly_map is not None]
    anomaly_map = mask = None
    if maps:
        anomaly_map = peak_as_one_view(np.mean(maps, axis=0), real, score)
        mask = shown_mask(anomaly_map >= real.mask_threshold, real, flagged=verdict is Verdict.ANOMALOUS)
    shown = shown_view(scored, threshold, verdict is Verdict.ANOMALOUS)
    explained = _explained_as_it_came(views[shown], shown)
    return replace(explained, source=first.source, image_size=first.image_size, verdict=verdict, score=score,
                   anomaly_map=anomaly_map, mask=mask, timings=summed_timings(views), views=kept_runs(views),
                   shown_view=shown)


def all_token_view_map(result: InspectionResult, real: RealParams) -> np.ndarray | None:
    """The all-token baseline (Tab. 7) made the same way as the result's map: over its views when it has them."""
    if not result.views:
        return None if result.evidence is None else all_token_map(result.evidence, real, result.image_size, result.score)
    maps = [turned_back(all_token_map(view.evidence, real, view.image_size, view.score), index)
            for index, view in enumerate(result.views) if view.evidence is not None and view.score is not None]
    return peak_as_one_view(np.mean(maps, axis=0), real, result.score) if maps else None

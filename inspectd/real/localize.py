"""ReAL: turn the reasoning tokens' attention into a pixel-level anomaly map.

Steps follow the paper (docs/inspection.md, "How an image is inspected"): per-token maps on the merged patch grid, semantic
relevance from the anomaly-word attention, spatial entropy over connected
components, tau_1 by maximum curvature and tau_r by median, composite
weighting, then smoothing, upsampling to the original image and min-max
normalisation. Works on numpy arrays the runtime hands over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from inspectd.real.evidence import TokenEvidence
from inspectd.real.params import RealParams
from inspectd.real.scores import elbow_threshold, median_threshold, spatial_entropies, unit_scale


def candidate_tokens(evidence: TokenEvidence, params: RealParams) -> np.ndarray:
    """Tokens ReAL may keep: all, less those whose text is one of ``params.ignored_words``; all again when
    that would leave none (a reply of function words only still gets a map, recorded as a fallback)."""
    count = evidence.maps.shape[0]
    if not params.ignored_words or evidence.words is None:
        return np.ones(count, dtype=bool)
    ignored = {word.lower() for word in params.ignored_words}
    candidate = np.array([word.strip().strip(".,;:!?").lower() not in ignored for word in evidence.words], bool)
    return candidate if candidate.any() else np.ones(count, dtype=bool)


@dataclass(frozen=True)
class TokenScores:
    entropy: np.ndarray
    relevance: np.ndarray
    weights: np.ndarray
    kept: np.ndarray
    tau_entropy: float
    tau_relevance: float
    fallback: bool


@dataclass(frozen=True)
class ReALResult:
    """Anomaly map in [0, 1] and binary mask at the original image size."""

    anomaly_map: np.ndarray
    mask: np.ndarray
    grid_map: np.ndarray
    scores: TokenScores

    @property
    def tokens_used(self) -> int:
        return int(self.scores.kept.sum())


def score_tokens(evidence: TokenEvidence, params: RealParams) -> TokenScores:
    """Filter and weight the reasoning tokens (steps 2-5 of ReAL)."""
    count = evidence.maps.shape[0]
    if count == 0:
        raise ValueError("ReAL needs at least one reasoning token")
    entropy = spatial_entropies(evidence.maps.astype(np.float64), params.high_factor)
    relevance = evidence.relevance.astype(np.float64)
    candidate = candidate_tokens(evidence, params)
    tau_entropy = elbow_threshold(entropy[candidate])
    tau_relevance = median_threshold(relevance[candidate])
    finite = np.isfinite(entropy)
    kept = candidate.copy()
    if params.use_entropy_filter:
        # A token with no high region (S_I = +inf) singles out no place: never concentrated, even when
        # every token is so (then nothing passes and the fallback below is recorded).
        kept &= finite & (entropy <= tau_entropy)
    if params.use_relevance_filter:
        kept &= relevance >= tau_relevance
    fallback = not kept.any()
    if fallback:
        kept = candidate
    # Inverted entropy: most concentrated = 1 (all equally concentrated: all 1); no high region = 0.
    concentration = np.zeros(count)
    if finite.any():
        concentration[finite] = unit_scale(-entropy[finite])
    weights = np.where(candidate, params.alpha * unit_scale(relevance) + params.beta * concentration, 0.0)
    return TokenScores(entropy, relevance, weights, kept, tau_entropy, tau_relevance, fallback)


def weighted_map(maps: np.ndarray, scores: TokenScores) -> np.ndarray:
    """Composite map: sum_r w_r A_r / sum_r w_r over the kept tokens."""
    weights = np.where(scores.kept, scores.weights, 0.0)
    if weights.sum() <= 0:
        weights = scores.kept.astype(np.float64)
    return np.tensordot(weights, maps, axes=1) / weights.sum()


def to_image_map(grid_map: np.ndarray, image_size: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth on the grid, upsample bilinearly to (width, height), scale to [0, 1].

    The processor resizes the whole image without cropping, so the grid spans
    the original image and plain upsampling undoes the resize.
    """
    smoothed = ndimage.gaussian_filter(grid_map, sigma=sigma, mode="nearest") if sigma > 0 else grid_map
    width, height = image_size
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(smoothed, dtype=np.float32))[None, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    low, high = float(upsampled.min()), float(upsampled.max())
    # A flat map (up to float rounding) singles out nothing: all zeros, not noise stretched to [0, 1].
    if high - low <= 1e-6 * max(abs(high), abs(low), 1e-30):
        return np.zeros((height, width), dtype=np.float32)
    return ((upsampled - low) / (high - low)).astype(np.float32)


def scaled(anomaly_map: np.ndarray, params: RealParams, score: float | None) -> np.ndarray:
    """``score_gated``: a min-max map stretched to [0, 1] shows a hot region even on a good part; times the
    image score, a part scored normal keeps a faint map and no mask."""
    if params.map_scaling == "score_gated" and score is not None:
        return (anomaly_map * np.float32(min(1.0, max(0.0, score)))).astype(np.float32)
    return anomaly_map


def shown_mask(mask: np.ndarray, params: RealParams, flagged: bool) -> np.ndarray:
    """The mask an operator sees (``mask``: the map over ``mask_threshold``): with score-gated maps, none on a
    part the verdict threshold passed (its map peaks at its score, which can exceed ``mask_threshold``)."""
    if params.map_scaling == "score_gated" and not flagged:
        return np.zeros_like(mask)
    return mask


def localize(evidence: TokenEvidence, params: RealParams, image_size: tuple[int, int],
             score: float | None = None) -> ReALResult:
    """Full ReAL for one image; ``image_size`` is the original (width, height), ``score`` the image score."""
    scores = score_tokens(evidence, params)
    grid_map = weighted_map(evidence.maps.astype(np.float64), scores)
    anomaly_map = scaled(to_image_map(grid_map, image_size, params.smoothing_sigma), params, score)
    return ReALResult(anomaly_map, anomaly_map >= params.mask_threshold, grid_map, scores)


def all_token_map(evidence: TokenEvidence, params: RealParams, image_size: tuple[int, int],
                  score: float | None = None) -> np.ndarray:
    """Ablation baseline (Tab. 7, first row): the plain mean over all reasoning tokens, scaled like ReAL's."""
    return scaled(to_image_map(evidence.maps.mean(axis=0), image_size, params.smoothing_sigma), params, score)

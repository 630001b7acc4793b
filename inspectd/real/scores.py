"""Per-token scores of ReAL: spatial entropy, the elbow and median thresholds.

Kept free of torch so the same functions serve inference, the CGRO reward and
the unit tests on constructed maps.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity inside each map of a (tokens, h, w) stack, none between maps.
_WITHIN_MAP_8_CONNECTED = np.zeros((3, 3, 3), dtype=bool)
_WITHIN_MAP_8_CONNECTED[1] = True


def spatial_entropy(attention_map: np.ndarray, high_factor: float = 2.0) -> float:
    """Entropy of the mass shares of the map's 8-connected high regions.

    The high part is relu(A - high_factor * mean(A)). One compact region gives
    0; mass spread over many regions gives more; an empty high part is +inf
    (the token singles out no place).
    """
    return float(spatial_entropies(attention_map[None], high_factor)[0])


def spatial_entropies(maps: np.ndarray, high_factor: float = 2.0) -> np.ndarray:
    """``spatial_entropy`` of every map in a (tokens, h, w) stack, in one pass.

    All maps are labelled in a single call whose structuring element joins
    8-neighbours within a map but never across maps; masses are then summed
    per region and per token with bincount. Hundreds of tokens take about a
    millisecond instead of one labelling call each.
    """
    tokens = maps.shape[0]
    flat_maps = maps.reshape(tokens, -1)
    high = flat_maps - high_factor * flat_maps.mean(axis=1, keepdims=True)
    np.maximum(high, 0.0, out=high)
    labels, count = ndimage.label((high > 0).reshape(maps.shape), structure=_WITHIN_MAP_8_CONNECTED)
    entropy = np.full(tokens, np.inf)
    if count == 0:
        return entropy
    labels = labels.reshape(tokens, -1)
    masses = np.bincount(labels.ravel(), weights=high.ravel(), minlength=count + 1)[1:]
    # Labels are numbered in scan order, so each token owns a contiguous run of them.
    last_label = np.maximum.accumulate(labels.max(axis=1))
    owners = np.searchsorted(last_label, np.arange(1, count + 1))
    shares = masses / np.bincount(owners, weights=masses, minlength=tokens)[owners]
    terms = -shares * np.log(np.maximum(shares, 1e-300))
    has_region = last_label > np.concatenate(([0], last_label[:-1]))
    entropy[has_region] = np.bincount(owners, weights=terms, minlength=tokens)[has_region]
    return entropy


def elbow_threshold(values: np.ndarray) -> float:
    """Value at the point of maximum curvature of the ascending sorted curve.

    Taken as the point farthest from the chord between the first and last
    points, with both axes scaled to [0, 1] so the answer does not depend on
    the scores' units. Sorted scores usually form a convex curve (many low,
    a few shooting up), whose knee lies below the chord; only when no point
    lies below it (a concave curve) is the farthest point above taken. An
    S-shaped curve (a group of low values, a jump, a group of high values) so
    gets its knee at the end of the low group, not the start of the high one.
    Infinite values are left out of the curve. With fewer than three finite
    values there is no bend: the largest finite value is returned.
    """
    finite = np.sort(values[np.isfinite(values)])
    if finite.size == 0:
        return float("inf")
    if finite.size < 3 or finite[-1] == finite[0]:
        return float(finite[-1])
    x = np.linspace(0.0, 1.0, finite.size)
    y = (finite - finite[0]) / (finite[-1] - finite[0])
    # Signed distance to the chord from (0, 0) to (1, 1), up to a constant factor.
    below = x - y
    index = int(np.argmax(below)) if below.max() > 0 else int(np.argmax(-below))
    return float(finite[index])


def median_threshold(values: np.ndarray) -> float:
    return float(np.median(values))


def unit_scale(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant vector maps to all ones (no token is worse)."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 0:
        return np.ones_like(values, dtype=np.float64)
    return (values - low) / (high - low)

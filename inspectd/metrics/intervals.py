"""95 % intervals for the image figures a plant acts on, when they come from a few dozen images.

Why: the shipped magnetic-tile model's threshold and figures were chosen on 89 validation photos (29 of them
defective); they said image AUROC 90.9, a hold-out five times larger said 83.5. A figure from so few images
moves that much by chance alone, and a bare percentage does not say so. Both intervals come from scipy:

- image AUROC: a percentile bootstrap that resamples the defective and the good images each on their own, so
  every resample keeps both counts (the AUROC of a resample is its Mann-Whitney U over the pairs);
- a rate (defects missed, good parts flagged): the Wilson score interval of the count, which stays inside
  0-100 % and is not empty at 0 of n.

Both say how far the figure may move on more images of the same line; neither covers a line that changes.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def auroc_interval(labels, scores, seed: int = 0) -> tuple[float, float]:
    """The image AUROC's 95 % bootstrap interval; (nan, nan) with fewer than two images of either label, which
    no resampling can say anything of. Seeded: the same images give the same interval on every run."""
    from scipy.stats import bootstrap, mannwhitneyu

    labels, scores = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    defects, good = scores[labels], scores[~labels]
    if defects.size < 2 or good.size < 2:
        return float("nan"), float("nan")

    def auroc(defect_scores, good_scores, axis=-1):
        u = mannwhitneyu(defect_scores, good_scores, axis=axis).statistic  # pairs ranked right, ties half
        return u / (defect_scores.shape[axis] * good_scores.shape[axis])

    result = bootstrap((defects, good), auroc, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                       method="percentile", vectorized=True, batch=200, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def rate_interval(count: int, total: int) -> tuple[float, float]:
    """The 95 % Wilson interval of ``count`` of ``total`` (nan, nan when there is nothing to divide by)."""
    from scipy.stats import binomtest

    if total <= 0:
        return float("nan"), float("nan")
    interval = binomtest(int(count), int(total)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(interval.low), float(interval.high)


def percent_interval(interval: tuple[float, float]) -> str:
    """``84.1-96.0`` (percent, one decimal), or ``n/a``."""
    low, high = interval
    return "n/a" if low != low or high != high else f"{100 * low:.1f}-{100 * high:.1f}"

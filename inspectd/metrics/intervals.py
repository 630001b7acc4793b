"""95 % intervals for the image and pixel figures a plant acts on, when they come from a few dozen images.

Why: the shipped magnetic-tile model's threshold and figures were chosen on 89 validation photos (29 of them
defective); they said image AUROC 90.9, a hold-out five times larger said 83.5. A figure from so few images
can move several points by chance alone, and a bare percentage does not say so. Three intervals:

- image AUROC (scipy): a percentile bootstrap that resamples the defective and the good images each on their
  own, so every resample keeps both counts (the AUROC of a resample is its Mann-Whitney U over the pairs);
- a rate (defects missed, good parts flagged; scipy): the Wilson score interval of the count, which stays inside
  0-100 % and is not empty at 0 of n;
- pooled pixel AUROC and AUPR: a percentile bootstrap over the images (defective and good each resampled on
  their own), since pixels of one image are not independent draws; each image's pixels are kept as counts
  in ``PIXEL_BINS`` score bins, so a resample is a weighted sum of counts, not a pass over the maps again.
  The bins are coarser than the point figure's, which moves the interval by at most their tie error.

Each says how far the figure may move on more images of the same line; none covers a line that changes.
"""

from __future__ import annotations

import numpy as np

from inspectd.metrics.ranking import bin_counts, curves_from_counts

CONFIDENCE = 0.95
RESAMPLES = 2000
PIXEL_BINS = 4096  # per image: 2 x 16 KB of counts


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


class PixelCounts:
    """Each image's pixel counts per score bin, defect and normal pixels apart, for the pooled pixel intervals."""

    def __init__(self, bins: int = PIXEL_BINS) -> None:
        self.bins = bins
        self.positives: list[np.ndarray] = []
        self.negatives: list[np.ndarray] = []
        self.defective: list[bool] = []

    def add(self, scores: np.ndarray, truth: np.ndarray, defective: bool) -> None:
        positives, negatives = bin_counts(scores, truth, self.bins)
        self.positives.append(positives.astype(np.int32))
        self.negatives.append(negatives.astype(np.int32))
        self.defective.append(bool(defective))

    def intervals(self, seed: int = 0) -> dict[str, list[float]]:
        """95 % intervals of the pooled pixel AUROC and AUPR; n/a with fewer than two images of a label."""
        defective = np.array(self.defective, dtype=bool)
        if defective.sum() < 2 or (~defective).sum() < 2:
            return {"pixel_auroc": [float("nan")] * 2, "pixel_aupr": [float("nan")] * 2}
        positives = np.stack(self.positives)[:, ::-1].astype(np.float64)  # highest score first
        negatives = np.stack(self.negatives)[:, ::-1].astype(np.float64)
        rng = np.random.default_rng(seed)
        weights = np.zeros((RESAMPLES, defective.size))
        for group in (np.flatnonzero(defective), np.flatnonzero(~defective)):  # each label resampled on its own
            weights[:, group] = rng.multinomial(group.size, np.full(group.size, 1.0 / group.size), size=RESAMPLES)
        aurocs, aps = [], []
        for batch in np.array_split(weights, max(1, RESAMPLES // 250)):
            auroc, ap = curves_from_counts(batch @ positives, batch @ negatives)
            aurocs.append(auroc)
            aps.append(ap)
        tail = 100 * (1 - CONFIDENCE) / 2
        return {name: [float(v) for v in np.nanpercentile(np.concatenate(values), [tail, 100 - tail])]
                for name, values in (("pixel_auroc", aurocs), ("pixel_aupr", aps))}


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

"""AUROC, AUPR (average precision) and accuracy: exact, and streaming by bins.

Exact: from sorted scores with ties grouped, as scikit-learn's
roc_auc_score and average_precision_score define them.

Streaming (pixels): scores are counted into a fixed number of equal bins on
[0, 1] per class, so memory stays constant for any number of pixels. The
result equals the exact one when every score lies on the bin grid (maps
stored as 8-bit PNGs with 256 bins, for instance); otherwise scores that
share a bin count as tied, which moves AUROC by at most the share of
positive-negative pairs within one bin (reported as ``max_tie_error``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def curves_from_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AP of each row of per-threshold counts ordered from the highest score down (NaN for a row
    without positives or negatives): one row for a figure, a row per resample for a bootstrap."""
    pos, neg = np.atleast_2d(pos).astype(np.float64), np.atleast_2d(neg).astype(np.float64)
    total_pos, total_neg = pos.sum(axis=-1, keepdims=True), neg.sum(axis=-1, keepdims=True)
    empty = (total_pos[:, 0] == 0) | (total_neg[:, 0] == 0)
    total_pos, total_neg = np.where(total_pos == 0, 1.0, total_pos), np.where(total_neg == 0, 1.0, total_neg)
    tp, fp = np.cumsum(pos, axis=-1), np.cumsum(neg, axis=-1)
    start = np.zeros((pos.shape[0], 1))
    tpr = np.concatenate((start, tp / total_pos), axis=-1)
    fpr = np.concatenate((start, fp / total_neg), axis=-1)
    auroc = np.trapezoid(tpr, fpr, axis=-1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / total_pos
    ap = np.sum(np.diff(np.concatenate((start, recall), axis=-1), axis=-1) * precision, axis=-1)
    auroc[empty], ap[empty] = np.nan, np.nan
    return auroc, ap


def _curve_from_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """AUROC and AP from per-threshold counts ordered from the highest score down."""
    auroc, ap = curves_from_counts(pos, neg)
    return float(auroc[0]), float(ap[0])


def exact_auroc_ap(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    # One threshold per distinct score: group ties.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    pos = np.add.reduceat(sorted_labels.astype(np.int64), starts)
    counts = np.diff(np.concatenate((starts, [len(sorted_scores)])))
    return _curve_from_counts(pos, counts - pos)


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    labels = np.asarray(labels).astype(bool).ravel()
    return float((labels == np.asarray(predictions).astype(bool).ravel()).mean())


def bin_counts(scores: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative counts per equal bin of [0, 1] (scores clipped into it; 1.0 in the top bin)."""
    scores = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    labels = np.asarray(labels).astype(bool).ravel()
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    return np.bincount(index[labels], minlength=bins), np.bincount(index[~labels], minlength=bins)


@dataclass
class BinnedCurve:
    """Constant-memory pixel metrics: add maps and masks one image at a time."""

    bins: int = 65536
    threshold: float = 0.5

    def __post_init__(self) -> None:
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)
        self.correct = 0
        self.total = 0

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
        labels = np.asarray(labels).astype(bool).ravel()
        pos, neg = bin_counts(scores, labels, self.bins)
        self.pos += pos
        self.neg += neg
        self.correct += int(((scores >= self.threshold) == labels).sum())
        self.total += labels.size

    def auroc_ap(self) -> tuple[float, float]:
        return _curve_from_counts(self.pos[::-1], self.neg[::-1])

    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def max_tie_error(self) -> float:
        """Upper bound on the AUROC error from scores sharing a bin."""
        pairs = float(self.pos.sum()) * float(self.neg.sum())
        return float((self.pos * self.neg).sum() / pairs) / 2 if pairs else 0.0

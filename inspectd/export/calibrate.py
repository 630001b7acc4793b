"""Choose the verdict threshold on a labelled validation set.

Rule (ours): the P(yes) threshold that maximises balanced accuracy
((TPR + TNR) / 2, i.e. Youden's J) over the validation images, taking the
midpoint between the two neighbouring scores so the cut does not sit on an
observed value; ties go to the threshold nearest 0.5. Images whose reply
does not parse are left out and counted. The same images' image AUROC is
kept with it: it says how well the score ranks there, which no threshold can
change, and is what a recipe's score choices were made on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    threshold: float
    balanced_accuracy: float
    images: int
    unparsable: int
    image_auroc: float  # of the score on the scored calibration images


def balanced_accuracy_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        raise ValueError("calibration needs both normal and anomalous images")
    distinct = np.unique(scores)
    candidates = np.concatenate(([0.0], (distinct[:-1] + distinct[1:]) / 2, [np.nextafter(distinct[-1], 2.0)]))
    best, best_score = 0.5, -1.0
    for threshold in candidates:
        predicted = scores >= threshold
        value = (predicted[labels].mean() + (~predicted[~labels]).mean()) / 2
        if value > best_score + 1e-12 or (abs(value - best_score) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)):
            best, best_score = float(min(max(threshold, 0.0), 1.0)), float(value)
    return best, best_score

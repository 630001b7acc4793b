"""Choose the verdict threshold on a labelled validation set, and say what it will do there.

Two rules, both ours, over the validation images whose reply parsed (the
others are left out and counted); a verdict is ANOMALOUS when the P(yes)
score >= the threshold:

- maximum balanced accuracy (the default): the threshold that maximises
  (TPR + TNR) / 2 (Youden's J); ties go to the threshold nearest 0.5.
- a recall target (``inspectd-export --target-recall 0.95``): the highest
  threshold that still flags at least that share of the defective images,
  for a plant that states what it must catch rather than a balance. With
  n defects it must flag k = ceil(target * n) of them, so the cut goes just
  below the k-th highest defect score; target 1.0 goes just below the lowest.

Both choose among the same candidate cuts: 0, the midpoints between
neighbouring distinct scores, and just above the highest score, so a cut
never sits on an observed value (a score equal to it would be decided by
rounding). The recall rule therefore cuts midway between the k-th highest
defect score and the next lower score of any image, or at 0 when no score is
lower. Scores tied with that defect's (good parts included) are flagged.

Whichever rule chose, the miss rate (defects passed) and false-alarm rate
(good parts flagged) expected at the threshold are kept with their counts,
always also those at the balanced-accuracy threshold, and a few operating
points (recall 0.80 / 0.90 / 0.95 / 0.99 -> threshold, false alarms), so an
engineer sees the trade-off. They are estimates on these images only: with
40 defects one miss is 2.5 points, so the expected rates are said with their
95 % intervals. The same images' image AUROC is kept too, with its interval:
it says how well the score ranks there, which no threshold can change.

Two things make the export warn (printed, logged, and on the card), since
either makes the chosen threshold say little; neither stops it, as a plant
may still want the bundle to study:

- the image AUROC's interval reaches 0.5 or below: on these images the score
  cannot be told from chance (a model that learnt nothing exports as
  smoothly as a good one: its threshold is fitted to noise), or, wholly
  below 0.5, it ranks defects under good parts (inverted labels or score);
- at least ``CROWDED_SHARE`` of the scored images lie within
  ``NEAR_THRESHOLD`` of the threshold. A threshold chosen where scores pile
  up (near 1.0 when a model saturates) decides those images by differences
  smaller than another conversion or another machine's kernels can change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inspectd.metrics.intervals import auroc_interval, percent_interval, rate_interval

# Recall targets of the operating-point table printed and written to the card.
OPERATING_TARGETS = (0.80, 0.90, 0.95, 0.99)
# A score this close to the threshold is "near" it: its verdict hangs on the third decimal.
NEAR_THRESHOLD = 0.01
# The share of scored calibration images near the threshold from which the export warns.
CROWDED_SHARE = 0.05


@dataclass(frozen=True)
class OperatingPoint:
    """What one threshold does on the scored calibration images."""

    threshold: float
    defects: int  # defective images scored
    missed: int  # of them, scored below the threshold: passed as normal
    good: int  # normal images scored
    flagged: int  # of them, scored at or above the threshold: false alarms

    @property
    def recall(self) -> float:
        return (self.defects - self.missed) / self.defects

    @property
    def miss_rate(self) -> float:
        return self.missed / self.defects

    @property
    def false_alarm_rate(self) -> float:
        return self.flagged / self.good

    @property
    def balanced_accuracy(self) -> float:
        return (self.recall + 1 - self.false_alarm_rate) / 2

    def describe(self, intervals: bool = False) -> str:
        """The rates as a plant reads them, counts first: a rate of 40 images is coarse; with ``intervals``
        each rate's 95 % Wilson interval says how coarse (metrics/intervals.py)."""
        return (f"misses {self.missed} of {self.defects} defects "
                f"({self._rate(self.missed, self.defects, intervals)}), "
                f"flags {self.flagged} of {self.good} good parts ({self._rate(self.flagged, self.good, intervals)})")

    @staticmethod
    def _rate(count: int, total: int, interval: bool) -> str:
        if not interval:
            return _percent(count / total)
        return f"{_percent(count / total)}, 95 % interval {percent_interval(rate_interval(count, total))} %"


@dataclass(frozen=True)
class OperatingRow:
    """One row of the trade-off table: the recall-target rule's threshold for ``target_recall``."""

    target_recall: float
    point: OperatingPoint


@dataclass(frozen=True)
class Calibration:
    """The chosen threshold and what it is expected to do on the calibration images.

    The fields after ``image_auroc`` have defaults so that code written for
    the first five (tests, stage records) keeps constructing it.
    """

    threshold: float
    balanced_accuracy: float  # at ``threshold``: the maximum when balanced accuracy chose it
    images: int
    unparsable: int
    image_auroc: float  # of the score on the scored calibration images
    target_recall: float | None = None  # None: maximum balanced accuracy chose the threshold
    expected: OperatingPoint | None = None  # at ``threshold``
    balanced: OperatingPoint | None = None  # at the maximum-balanced-accuracy threshold, whichever rule chose
    operating_points: tuple[OperatingRow, ...] = ()
    image_auroc_interval: tuple[float, float] | None = None  # its 95 % bootstrap interval
    near_threshold: int | None = None  # scored images within NEAR_THRESHOLD of ``threshold``

    @property
    def scored(self) -> int:
        """The calibration images whose reply parsed: those the threshold was chosen on."""
        return self.images - self.unparsable

    @property
    def crowded(self) -> bool:
        """Whether so many scores sit at the threshold that small score changes would move its rates."""
        return (self.near_threshold is not None and self.scored > 0
                and self.near_threshold >= CROWDED_SHARE * self.scored)

    def crowding_sentence(self) -> str | None:
        """The warning for a crowded threshold, or None: printed by the export, logged, and on the card."""
        if not self.crowded:
            return None
        return (f"{self.near_threshold} of {self.scored} calibration scores lie within "
                f"{NEAR_THRESHOLD:g} of the threshold {self.threshold:.4f}: their verdicts hang on score differences "
                "that another conversion or machine can change, so the expected rates are fragile there; "
                "a threshold where scores are sparse (see the operating points) is steadier")

    @property
    def known_auroc_interval(self) -> tuple[float, float] | None:
        """The image AUROC's interval, or None where none is known: a Calibration from before it, or fewer than
        two images of a label (NaN, which no resampling can say anything of)."""
        interval = self.image_auroc_interval
        return None if interval is None or any(math.isnan(v) for v in interval) else interval

    def chance_sentence(self) -> str | None:
        """The warning for a score that does not rank defects above good parts on these images, or None
        (also when too few images of a label gave no interval)."""
        interval = self.known_auroc_interval
        if interval is None or interval[0] > 0.5:
            return None
        if interval[1] < 0.5:
            return (f"the score ranks defects below good parts on the calibration images: image AUROC "
                    f"{self.auroc_phrase()}; check the calibration folder's labels and the model, as verdicts "
                    "from this bundle are worse than a coin's")
        return (f"the score cannot be told from chance on the calibration images: image AUROC {self.auroc_phrase()}, "
                "an interval that includes 0.5, so the threshold is fitted to noise; a model that has not learnt "
                "the line looks like this (check training), and so does a calibration folder too small to show a "
                "real one (add images)")

    def warnings(self) -> tuple[str, ...]:
        """Every warning this calibration earns, in the order the export prints them."""
        return tuple(s for s in (self.chance_sentence(), self.crowding_sentence()) if s is not None)

    def auroc_phrase(self) -> str:
        """``0.909`` with its interval where known: ``0.909 (95 % interval 0.841-0.966)``; none from before, nor
        from fewer than two images of a label."""
        if self.known_auroc_interval is None:
            return f"{self.image_auroc:.3f}"
        low, high = self.known_auroc_interval
        return f"{self.image_auroc:.3f} (95 % interval {low:.3f}-{high:.3f})"

    @property
    def rule(self) -> str:
        """The rule that chose ``threshold``, in words for the log, the console and the card."""
        if self.target_recall is None:
            return "maximum balanced accuracy"
        return (f"recall target {self.target_recall:g} (the highest threshold that flags "
                f">= {_percent(self.target_recall, digits=None)} of the defects)")


def _percent(share: float, digits: int | None = 1) -> str:
    return f"{100 * share:g} %" if digits is None else f"{100 * share:.{digits}f} %"


def _checked(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels for {scores.size} scores")
    if labels.all() or not labels.any():
        raise ValueError("calibration needs both normal and anomalous images")
    return labels, scores


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """0, the midpoints between neighbouring distinct scores, and just above the highest: no cut on a score."""
    distinct = np.unique(np.asarray(scores, dtype=np.float64))
    return np.concatenate(([0.0], (distinct[:-1] + distinct[1:]) / 2, [np.nextafter(distinct[-1], 2.0)]))


def balanced_accuracy_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The candidate cut of maximum balanced accuracy (ties: nearest 0.5), and that balanced accuracy."""
    labels, scores = _checked(labels, scores)
    best, best_score = 0.5, -1.0
    for threshold in candidate_thresholds(scores):
        predicted = scores >= threshold
        value = (predicted[labels].mean() + (~predicted[~labels]).mean()) / 2
        if value > best_score + 1e-12 or (abs(value - best_score) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)):
            best, best_score = float(min(max(threshold, 0.0), 1.0)), float(value)
    return best, best_score


def check_target_recall(target: float) -> float:
    """A recall target is a share of the defects to catch: in (0, 1]. Said before any work is done."""
    if not 0.0 < float(target) <= 1.0:  # NaN fails too
        raise ValueError(f"target recall must be the share of defects to catch, in (0, 1] (e.g. 0.95); got {target}")
    return float(target)


def recall_target_threshold(labels: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The highest candidate cut whose recall on these images is >= ``target`` (see the module's rule).

    The share is counted in whole defects: k = ceil(target * n), with a
    tolerance for floating point (0.7 * 10 is 7.000000000000001, still 7).
    """
    labels, scores = _checked(labels, scores)
    target = check_target_recall(target)
    defect_scores = np.sort(scores[labels])[::-1]
    needed = max(1, math.ceil(target * defect_scores.size - 1e-9))
    cut_below = defect_scores[needed - 1]
    lower = scores[scores < cut_below]
    return float((cut_below + lower.max()) / 2) if lower.size else 0.0


def operating_point(labels: np.ndarray, scores: np.ndarray, threshold: float) -> OperatingPoint:
    """Misses and false alarms of ``threshold`` on these images, as counts."""
    labels, scores = _checked(labels, scores)
    flagged = scores >= threshold
    return OperatingPoint(float(threshold), int(labels.sum()), int((~flagged[labels]).sum()),
                          int((~labels).sum()), int(flagged[~labels].sum()))


def operating_table(labels: np.ndarray, scores: np.ndarray,
                    targets: tuple[float, ...] = OPERATING_TARGETS) -> tuple[OperatingRow, ...]:
    """The recall-target rule at a few targets: what catching more costs in false alarms."""
    return tuple(OperatingRow(target, operating_point(labels, scores, recall_target_threshold(labels, scores, target)))
                 for target in targets)


def calibrate(labels: np.ndarray, scores: np.ndarray, unparsable: int = 0,
              target_recall: float | None = None) -> Calibration:
    """The threshold by the chosen rule (None: maximum balanced accuracy) with its expected rates."""
    from inspectd.metrics.ranking import exact_auroc_ap

    labels, scores = _checked(labels, scores)
    balanced_threshold, _ = balanced_accuracy_threshold(labels, scores)
    if target_recall is None:
        threshold = balanced_threshold
    else:
        threshold = recall_target_threshold(labels, scores, target_recall)
    expected = operating_point(labels, scores, threshold)
    auroc, _ = exact_auroc_ap(labels, scores)
    return Calibration(
        threshold=threshold, balanced_accuracy=expected.balanced_accuracy, images=int(scores.size) + unparsable,
        unparsable=unparsable, image_auroc=auroc,
        target_recall=None if target_recall is None else float(target_recall), expected=expected,
        balanced=operating_point(labels, scores, balanced_threshold),
        operating_points=operating_table(labels, scores), image_auroc_interval=auroc_interval(labels, scores),
        near_threshold=int((np.abs(scores - threshold) < NEAR_THRESHOLD).sum()),
    )


def calibration_report(calibration: Calibration) -> list[str]:
    """What the export prints: the rule, the threshold, its expected rates and the trade-off table."""
    lines = [f"threshold {calibration.threshold:.4f} by {calibration.rule}, on {calibration.images} calibration "
             f"images ({calibration.unparsable} unparsable); image AUROC there {calibration.auroc_phrase()}"]
    if calibration.expected is not None:
        lines.append(f"expected there: {calibration.expected.describe(intervals=True)}")
    lines += [f"WARNING: {warning}" for warning in calibration.warnings()]
    if calibration.target_recall is not None and calibration.balanced is not None:
        lines.append(f"maximum balanced accuracy would set {calibration.balanced.threshold:.4f}: "
                     f"{calibration.balanced.describe()}")
    if calibration.operating_points:
        lines.append("operating points there (recall target: threshold, misses, false alarms):")
        lines += [f"  recall >= {row.target_recall:.2f}: threshold {row.point.threshold:.4f}, {row.point.describe()}"
                  for row in calibration.operating_points]
    return lines


def operating_points_markdown(calibration: Calibration) -> list[str]:
    """The trade-off table for MODEL_CARD.md."""
    rows = ["| recall target | threshold | defects missed | good parts flagged |", "|---|---|---|---|"]
    for row in calibration.operating_points:
        point = row.point
        rows.append(f"| {row.target_recall:.2f} | {point.threshold:.4f} | {point.missed} of {point.defects} "
                    f"({_percent(point.miss_rate)}) | {point.flagged} of {point.good} "
                    f"({_percent(point.false_alarm_rate)}) |")
    return rows

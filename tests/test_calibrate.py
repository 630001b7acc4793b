"""The threshold rules and the rates they are expected to give, on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspectd.export.calibrate import (
    Calibration, OperatingPoint, balanced_accuracy_threshold, calibrate, calibration_report, candidate_thresholds,
    operating_point, recall_target_threshold,
)

GOOD = [0.05, 0.2, 0.35, 0.6]
DEFECT = [0.3, 0.5, 0.7, 0.8, 0.9]
LABELS = np.array([False] * len(GOOD) + [True] * len(DEFECT))
SCORES = np.array(GOOD + DEFECT)


@pytest.mark.parametrize(("target", "threshold", "missed", "flagged"), [
    (1.0, 0.25, 0, 2),  # just below the lowest defect (0.3), midway to the next lower score (0.2)
    (0.8, 0.425, 1, 1),  # 4 of 5: just below 0.5, midway to 0.35
    (0.6, 0.65, 2, 0),  # 3 of 5: just below 0.7, midway to the good part at 0.6
    (0.01, 0.85, 4, 0),  # any target catches at least one defect
])
def test_recall_target_is_the_highest_cut_below_the_kth_defect(target, threshold, missed, flagged):
    chosen = recall_target_threshold(LABELS, SCORES, target)
    assert chosen == pytest.approx(threshold)
    point = operating_point(LABELS, SCORES, chosen)
    assert (point.missed, point.flagged) == (missed, flagged)
    assert point.recall >= target
    assert chosen not in SCORES  # the cut never sits on an observed value


def test_recall_target_equals_the_highest_candidate_reaching_it():
    """The closed form agrees with the definition: over the balanced-accuracy rule's candidates, ties included."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(4, 30))
        labels = rng.random(n) < 0.4
        labels[:2] = [False, True]
        scores = np.round(rng.random(n), 1)  # many ties, between and within the classes
        for target in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0):
            reaching = [c for c in candidate_thresholds(scores)
                        if (scores[labels] >= c).mean() >= target - 1e-12]
            assert recall_target_threshold(labels, scores, target) == pytest.approx(max(reaching))


def test_recall_is_counted_in_whole_defects():
    labels = np.array([False] * 3 + [True] * 10)
    scores = np.concatenate(([0.0, 0.01, 0.02], np.linspace(0.1, 1.0, 10)))
    # 0.7 * 10 is 7.000000000000001 in floating point: still 7 defects, not 8.
    threshold = recall_target_threshold(labels, scores, 0.7)
    assert operating_point(labels, scores, threshold).missed == 3


def test_target_one_flags_everything_when_the_lowest_score_is_a_defect():
    labels = np.array([True, False, True, False])
    scores = np.array([0.1, 0.4, 0.6, 0.2])
    assert recall_target_threshold(labels, scores, 1.0) == 0.0  # as the balanced-accuracy rule's lowest cut


def test_a_good_part_tied_with_the_cut_defect_is_flagged():
    labels = np.array([False, False, True, True])
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    threshold = recall_target_threshold(labels, scores, 1.0)
    assert threshold == pytest.approx(0.3)
    assert operating_point(labels, scores, threshold).flagged == 1


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01, math.nan])
def test_a_target_outside_zero_one_is_refused(target):
    with pytest.raises(ValueError, match=r"target recall .* in \(0, 1\]"):
        recall_target_threshold(LABELS, SCORES, target)


def test_both_kinds_of_image_are_needed():
    with pytest.raises(ValueError, match="both normal and anomalous"):
        recall_target_threshold(np.ones(3, bool), np.array([0.1, 0.2, 0.3]), 0.9)


def test_rates_read_as_counts_and_percentages():
    point = OperatingPoint(threshold=0.4, defects=40, missed=3, good=120, flagged=12)
    assert point.describe() == "misses 3 of 40 defects (7.5 %), flags 12 of 120 good parts (10.0 %)"
    # Wilson's 95 % intervals, worked by hand from (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n):
    assert point.describe(intervals=True) == ("misses 3 of 40 defects (7.5 %, 95 % interval 2.6-19.9 %), "
                                              "flags 12 of 120 good parts (10.0 %, 95 % interval 5.8-16.7 %)")
    assert point.recall == pytest.approx(0.925) and point.balanced_accuracy == pytest.approx((0.925 + 0.9) / 2)
    # A score equal to the threshold is flagged, as the daemon's verdict (score >= threshold).
    counted = operating_point(LABELS, SCORES, 0.6)
    assert (counted.defects, counted.missed, counted.good, counted.flagged) == (5, 2, 4, 1)


def test_calibrate_by_default_keeps_the_balanced_accuracy_rule():
    calibration = calibrate(LABELS, SCORES, unparsable=2)
    threshold, balanced = balanced_accuracy_threshold(LABELS, SCORES)
    assert calibration.threshold == threshold and calibration.balanced_accuracy == pytest.approx(balanced)
    assert calibration.target_recall is None and calibration.rule == "maximum balanced accuracy"
    assert calibration.expected == calibration.balanced == operating_point(LABELS, SCORES, threshold)
    assert (calibration.images, calibration.unparsable) == (11, 2)
    assert 0.5 < calibration.image_auroc < 1.0


def test_calibrate_to_a_target_keeps_the_balanced_point_and_the_trade_off():
    calibration = calibrate(LABELS, SCORES, target_recall=1.0)
    assert calibration.threshold == pytest.approx(0.25)
    assert calibration.expected.describe() == "misses 0 of 5 defects (0.0 %), flags 2 of 4 good parts (50.0 %)"
    assert calibration.balanced == operating_point(LABELS, SCORES, balanced_accuracy_threshold(LABELS, SCORES)[0])
    assert calibration.balanced_accuracy == pytest.approx(calibration.expected.balanced_accuracy)
    assert "recall target 1" in calibration.rule and ">= 100 % of the defects" in calibration.rule
    rows = calibration.operating_points
    assert [row.target_recall for row in rows] == [0.80, 0.90, 0.95, 0.99]
    assert all(row.point.recall >= row.target_recall for row in rows)
    thresholds = [row.point.threshold for row in rows]
    alarms = [row.point.flagged for row in rows]
    assert thresholds == sorted(thresholds, reverse=True) and alarms == sorted(alarms)
    report = "\n".join(calibration_report(calibration))
    assert "threshold 0.2500 by recall target 1" in report
    # none of 5 missed is no proof of catching them all: the interval says up to 43 % may pass
    assert ("expected there: misses 0 of 5 defects (0.0 %, 95 % interval 0.0-43.4 %), flags 2 of 4 good parts "
            "(50.0 %, 95 % interval 15.0-85.0 %)") in report
    low, high = calibration.image_auroc_interval
    assert f"image AUROC there {calibration.image_auroc:.3f} (95 % interval {low:.3f}-{high:.3f})" in report
    assert f"maximum balanced accuracy would set {calibration.balanced.threshold:.4f}" in report
    assert "recall >= 0.80: threshold 0.4250, misses 1 of 5 defects (20.0 %), flags 1 of 4 good parts" in report


def test_a_calibration_built_with_the_first_five_fields_still_makes_a_card(tmp_path):
    """Code from before the rates (stage records, tests) constructs Calibration positionally."""
    from inspectd.bundle.manifest import BundleManifest
    from inspectd.export.exporter import ExportRequest, model_card

    calibration = Calibration(0.42, 0.9, 10, 1, 0.95)
    assert calibration.target_recall is None and calibration.operating_points == ()
    request = ExportRequest(base=tmp_path, out=tmp_path / "out", name="n", calibration=tmp_path / "val")
    card = model_card(request, BundleManifest(name="n", base_model="b", threshold=0.42), calibration)
    assert "- Threshold: 0.4200, calibrated on" in card and "by maximum balanced accuracy (0.900)" in card


def test_one_defect_gives_no_auroc_interval_rather_than_a_made_up_one():
    """A calibration folder with a single defect image ranks it, but no resampling can say how far that moves."""
    calibration = calibrate(np.array([True, False, False, False]), np.array([0.9, 0.1, 0.2, 0.3]))
    assert all(v != v for v in calibration.image_auroc_interval)
    assert calibration.auroc_phrase() == "1.000"
    assert "image AUROC there 1.000\n" in "\n".join(calibration_report(calibration)) + "\n"


def _card(tmp_path, calibration: Calibration) -> str:
    from inspectd.bundle.manifest import BundleManifest
    from inspectd.export.exporter import ExportRequest, model_card

    request = ExportRequest(base=tmp_path, out=tmp_path / "out", name="n", calibration=tmp_path / "val")
    return model_card(request, BundleManifest(name="n", base_model="b", threshold=calibration.threshold), calibration)


def test_a_threshold_where_scores_pile_up_is_said_to_be_fragile(tmp_path):
    """A saturating model puts many scores at 0.99x; a threshold among them decides those parts by the third
    decimal, which another conversion can change. The export says so, and the card keeps it."""
    good = [0.05] * 10 + [0.990, 0.991, 0.993, 0.994, 0.995, 0.996]
    defect = [0.3, 0.4, 0.997, 0.9975, 0.998, 0.9985, 0.999, 0.9993, 0.9995, 0.9999]
    labels = np.array([False] * len(good) + [True] * len(defect))
    calibration = calibrate(labels, np.array(good + defect), unparsable=3)
    assert 0.99 < calibration.threshold < 1.0
    assert calibration.crowded and calibration.near_threshold >= 8
    sentence = (f"{calibration.near_threshold} of 26 calibration scores lie within 0.01 of the threshold "
                f"{calibration.threshold:.4f}")
    assert sentence in "\n".join(line for line in calibration_report(calibration) if line.startswith("WARNING: "))
    assert f"- Warning: {sentence}" in _card(tmp_path, calibration)


def test_a_threshold_among_sparse_scores_gets_no_warning():
    calibration = calibrate(LABELS, SCORES)
    assert calibration.near_threshold == 0 and not calibration.crowded
    assert calibration.crowding_sentence() is None
    assert not any("WARNING" in line for line in calibration_report(calibration))
    assert not Calibration(0.42, 0.9, 10, 1, 0.95).crowded  # built before the count: nothing to say


def test_a_model_at_chance_is_said_to_be_at_chance(tmp_path):
    """A model that learnt nothing exports as smoothly as a good one, its threshold fitted to noise (a fresh
    model on the magnetic-tile line did: calibration AUROC 0.48-0.51). The export says so, and the card keeps it."""
    rng = np.random.default_rng(0)
    labels = np.array([False] * 46 + [True] * 46)
    calibration = calibrate(labels, rng.uniform(size=92))
    low, high = calibration.image_auroc_interval
    assert low < 0.5 < high
    sentence = (f"the score cannot be told from chance on the calibration images: image AUROC "
                f"{calibration.auroc_phrase()}, an interval that includes 0.5")
    assert any(line.startswith(f"WARNING: {sentence}") for line in calibration_report(calibration))
    assert f"- Warning: {sentence}" in _card(tmp_path, calibration)


def test_a_score_that_ranks_defects_below_good_parts_is_said_to_be_inverted(tmp_path):
    """Swapped folders (defects under good/) give a score that ranks backwards: worse than chance, said so."""
    labels = np.array([False] * 6 + [True] * 6)
    calibration = calibrate(labels, np.array([0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35]))
    assert calibration.image_auroc_interval[1] < 0.5
    warnings = calibration.warnings()
    assert warnings[0].startswith("the score ranks defects below good parts")  # first, before any crowding
    assert f"- Warning: {warnings[0]}" in _card(tmp_path, calibration)


def test_a_score_that_ranks_well_or_too_few_images_to_say_get_no_chance_warning():
    assert calibrate(LABELS, SCORES).chance_sentence() is None  # AUROC 0.85, interval above 0.5
    # One defect: no interval, so nothing can be said either way (the AUROC of 0.0 alone is one image's rank).
    assert calibrate(np.array([True, False, False]), np.array([0.1, 0.5, 0.6])).chance_sentence() is None
    assert Calibration(0.42, 0.5, 10, 1, 0.5).warnings() == ()  # built before the interval: nothing to say

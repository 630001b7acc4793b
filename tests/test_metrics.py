"""Image and pixel metrics agree with scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from inspectd.metrics.localization import peak_on_defect
from inspectd.metrics.ranking import BinnedCurve, accuracy, exact_auroc_ap


@pytest.mark.parametrize("n, ties", [(7, False), (500, True), (20_000, False), (20_000, True)])
def test_exact_path_matches_sklearn(n, ties):
    rng = np.random.default_rng(n)
    labels = rng.random(n) < 0.35
    scores = rng.random(n) + 0.4 * labels
    if ties:
        scores = np.round(scores, 1)
    auroc, ap = exact_auroc_ap(labels, scores)
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert ap == pytest.approx(average_precision_score(labels, scores), abs=1e-6)


def test_binned_is_exact_for_scores_on_the_grid_and_streams():
    rng = np.random.default_rng(1)
    curve = BinnedCurve(bins=256, threshold=0.5)
    all_scores, all_labels = [], []
    for _ in range(20):  # twenty "images" added one at a time
        labels = rng.random((30, 40)) < 0.1
        scores = np.round(np.clip(rng.random((30, 40)) * 0.7 + 0.3 * labels, 0, 1) * 255) / 255
        curve.add(scores, labels)
        all_scores.append(scores.ravel())
        all_labels.append(labels.ravel())
    scores, labels = np.concatenate(all_scores), np.concatenate(all_labels)
    auroc, ap = curve.auroc_ap()
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert ap == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert curve.accuracy() == pytest.approx(accuracy(labels, scores >= 0.5))


def test_binned_float_scores_stay_within_the_reported_bound():
    rng = np.random.default_rng(2)
    labels = rng.random(200_000) < 0.05
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.15), 0, 1)
    curve = BinnedCurve(bins=65536)
    curve.add(scores, labels)
    auroc, ap = curve.auroc_ap()
    exact = roc_auc_score(labels, scores)
    assert abs(auroc - exact) <= curve.max_tie_error() + 1e-9
    assert abs(auroc - exact) < 1e-4 and abs(ap - average_precision_score(labels, scores)) < 1e-3


def test_one_class_only_gives_nan():
    auroc, ap = exact_auroc_ap(np.zeros(5, bool), np.arange(5.0))
    assert np.isnan(auroc) and np.isnan(ap)


def test_the_peak_is_on_the_defect_when_within_one_token_cell_of_its_mask():
    """A 6 x 6 grid over 168 x 168 px: 28 px cells. The hottest pixel counts when it lies on the mask or at
    most one cell away (in each axis's own cell size), never when the map has no heat at all."""
    truth = np.zeros((168, 168), dtype=bool)
    truth[80:84, 100:102] = True  # a short thin crack

    def peak_at(y: int, x: int, shape=(168, 168)) -> np.ndarray:
        heat = np.full(shape, 0.1, dtype=np.float32)
        heat[y, x] = 0.9
        return heat

    grid = (6, 6)
    assert peak_on_defect(peak_at(82, 101), truth, grid)  # on it
    assert peak_on_defect(peak_at(82, 101 + 28), truth, grid)  # one cell to the right
    assert not peak_on_defect(peak_at(82, 101 + 29), truth, grid)  # beyond one cell
    assert not peak_on_defect(peak_at(10, 10), truth, grid)  # the far corner
    assert not peak_on_defect(np.zeros((168, 168), dtype=np.float32), truth, grid)  # a map with no heat
    wide = np.zeros((168, 336), dtype=bool)  # non-square: cells are 56 px wide and 28 px high
    wide[80:84, 100:102] = True
    assert peak_on_defect(peak_at(82, 101 + 56, (168, 336)), wide, grid)
    assert peak_on_defect(peak_at(83 + 28, 101, (168, 336)), wide, grid)  # one 28 px cell below
    assert not peak_on_defect(peak_at(83 + 29, 101, (168, 336)), wide, grid)
    with pytest.raises(ValueError, match="no defect pixel"):
        peak_on_defect(peak_at(1, 1), np.zeros((168, 168), dtype=bool), grid)

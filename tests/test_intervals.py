"""The 95 % intervals beside the image and pixel figures: they hold the figure, shrink with more images, repeat."""

import numpy as np
import pytest

from inspectd.metrics.intervals import PixelCounts, auroc_interval, percent_interval, rate_interval
from inspectd.metrics.ranking import BinnedCurve, curves_from_counts, exact_auroc_ap


def _scores(defects: int, good: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(defects, bool), np.zeros(good, bool)]
    return labels, np.r_[rng.normal(1.2, 1.0, defects), rng.normal(0.0, 1.0, good)]


def test_the_auroc_interval_holds_the_figure_and_narrows_with_more_images():
    """29 defects and 60 good, as the magnetic-tile validation split; then ten times as many."""
    small, large = _scores(29, 60), _scores(290, 600)
    (low, high), (low10, high10) = auroc_interval(*small), auroc_interval(*large)
    assert low < exact_auroc_ap(*small)[0] < high and low10 < exact_auroc_ap(*large)[0] < high10
    assert 0.08 < high - low < 0.25  # a few dozen images: the figure may move by ten points and more
    assert high10 - low10 < (high - low) / 2.5  # about sqrt(10) narrower
    assert auroc_interval(*small) == (low, high)  # seeded: a report reads the same on every run


def test_the_auroc_interval_resamples_each_label_on_its_own():
    """Every resample keeps both labels, so perfectly ranked images give exactly 1.0 - 1.0, never NaN."""
    labels = np.r_[np.ones(3, bool), np.zeros(40, bool)]
    scores = np.r_[np.full(3, 0.9), np.linspace(0.0, 0.5, 40)]
    assert auroc_interval(labels, scores) == (1.0, 1.0)
    assert all(v != v for v in auroc_interval(np.zeros(4, bool), np.arange(4.0)))  # one label only: n/a
    assert all(v != v for v in auroc_interval(np.r_[True, np.zeros(4, bool)], np.arange(5.0)))  # one defect: n/a


@pytest.mark.parametrize("count, total, text", [(0, 29, "0.0-11.7"), (29, 29, "88.3-100.0"), (54, 164, "26.2-40.4")])
def test_rate_intervals(count, total, text):
    """Wilson's interval stays inside 0-100 % and is not empty at 0 of n (54 of 164: the hold-out's misses)."""
    assert percent_interval(rate_interval(count, total)) == text


def test_nothing_to_divide_by_reads_n_a():
    assert percent_interval(rate_interval(0, 0)) == "n/a"


def _maps(images: int, seed: int = 2):
    """Defective images (a 6 x 6 defect in a 24 x 24 map, found with noise) and good ones, half each."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        truth = np.zeros((24, 24), bool)
        defective = i % 2 == 0
        if defective:
            row, column = rng.integers(0, 18, 2)
            truth[row:row + 6, column:column + 6] = True
        heat = rng.uniform(0.0, 0.6, truth.shape) + 0.35 * truth * rng.uniform(0.3, 1.0)
        yield np.clip(heat, 0, 1), truth, defective


def test_the_pooled_pixel_interval_holds_the_figure_and_narrows_with_more_images():
    """Pixels of one image are not independent draws: the bootstrap resamples images, each label on its own."""
    widths = []
    for images in (20, 200):
        counts, curve = PixelCounts(), BinnedCurve()
        for heat, truth, defective in _maps(images):
            counts.add(heat, truth, defective)
            curve.add(heat, truth)
        auroc, ap = curve.auroc_ap()
        found = counts.intervals()
        assert found["pixel_auroc"][0] < auroc < found["pixel_auroc"][1]
        assert found["pixel_aupr"][0] < ap < found["pixel_aupr"][1]
        widths.append(found["pixel_auroc"][1] - found["pixel_auroc"][0])
        assert counts.intervals() == found  # seeded
    assert widths[1] < widths[0] / 2


def test_the_pooled_pixel_interval_needs_two_images_of_each_label():
    counts = PixelCounts()
    for heat, truth, defective in list(_maps(4))[:3]:  # two defective, one good
        counts.add(heat, truth, defective)
    assert all(v != v for values in counts.intervals().values() for v in values)


def test_curves_of_many_rows_are_each_row_s_curve():
    """The bootstrap's vectorized curves are the point figure's own code, row by row."""
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 50, (5, 64)), rng.integers(0, 50, (5, 64))
    pos[4] = 0  # no positive: n/a, as a single curve says
    aurocs, aps = curves_from_counts(pos, neg)
    for row in range(5):
        labels = np.r_[np.ones(pos[row].sum(), bool), np.zeros(neg[row].sum(), bool)]
        scores = np.r_[np.repeat(-np.arange(64.0), pos[row]), np.repeat(-np.arange(64.0), neg[row])]
        if row == 4:
            assert aurocs[row] != aurocs[row] and aps[row] != aps[row]
            continue
        assert (aurocs[row], aps[row]) == pytest.approx(exact_auroc_ap(labels, scores))

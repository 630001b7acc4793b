"""ReAL's steps on constructed attention, where the right answer is known."""

import numpy as np
import pytest

from inspectd.real.localize import TokenEvidence, all_token_map, localize, score_tokens, to_image_map
from inspectd.real.params import RealParams
from inspectd.real.scores import elbow_threshold, median_threshold, spatial_entropies, spatial_entropy, unit_scale


def _blob(grid=(15, 15), centre=(4, 10), radius=1, background=0.01, peak=1.0):
    m = np.full(grid, background)
    y, x = centre
    m[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1] = peak
    return m / m.sum()


def test_entropy_orders_single_blob_below_scattered_blobs():
    single = _blob()
    scattered = np.full((15, 15), 0.01)
    for y, x in [(1, 1), (1, 13), (13, 1), (13, 13), (7, 7)]:
        scattered[y, x] = 1.0
    assert spatial_entropy(single) == pytest.approx(0.0)
    assert spatial_entropy(scattered) == pytest.approx(np.log(5), rel=1e-6)
    two_unequal = np.full((15, 15), 0.01)
    two_unequal[2, 2] = 3.0
    two_unequal[10, 10] = 1.0
    assert 0 < spatial_entropy(two_unequal) < np.log(2)


def test_entropy_uses_eight_connectivity_and_empty_is_infinite():
    diagonal = np.full((9, 9), 0.01)
    for i in range(2, 6):
        diagonal[i, i] = 1.0  # touching only at corners: one 8-connected component
    assert spatial_entropy(diagonal) == pytest.approx(0.0)
    assert spatial_entropy(np.ones((15, 15))) == float("inf")


def test_elbow_of_known_curve():
    # Flat then sharply rising: the bend sits at the last flat point.
    values = np.array([0.1, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 2.0, 4.0, 6.0])
    assert elbow_threshold(np.random.default_rng(0).permutation(values)) == pytest.approx(0.17)
    # Infinite entries are left out of the curve.
    assert elbow_threshold(np.append(values, [np.inf, np.inf])) == pytest.approx(0.17)
    assert elbow_threshold(np.array([0.3, 0.5])) == pytest.approx(0.5)
    # S-shaped: six low, ten high; the knee is the end of the low group.
    s_curve = np.concatenate([np.zeros(6), np.linspace(1.6, 1.8, 10)])
    assert elbow_threshold(s_curve) == 0.0
    # Concave: rises at once, then flattens; the knee is where it flattens.
    concave = np.array([0.0, 5.0, 5.5, 5.8, 5.9, 6.0])
    assert elbow_threshold(concave) == 5.0
    assert elbow_threshold(np.array([np.inf])) == float("inf")


def test_median_filter_keeps_tokens_at_or_above_median():
    relevance = np.array([0.05, 0.5, 0.1, 0.9, 0.3])
    assert median_threshold(relevance) == pytest.approx(0.3)
    maps = np.stack([_blob(centre=(7, 7))] * 5)
    scores = score_tokens(TokenEvidence(maps, relevance), RealParams(use_entropy_filter=False))
    assert scores.kept.tolist() == [False, True, False, True, True]
    assert not scores.fallback


def test_unit_scale_constant_is_all_ones():
    assert unit_scale(np.array([2.0, 2.0])).tolist() == [1.0, 1.0]
    assert unit_scale(np.array([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]


def test_known_hot_spot_is_found_among_distractors():
    rng = np.random.default_rng(0)
    focused = [_blob(centre=(4, 10)) + rng.uniform(0, 1e-4, (15, 15)) for _ in range(6)]
    diffuse = []
    for _ in range(10):
        m = rng.uniform(0.5, 1.0, (15, 15))
        for y, x in rng.integers(0, 15, size=(6, 2)):
            m[y, x] = 8.0
        diffuse.append(m / m.sum())
    maps = np.stack(focused + diffuse)
    relevance = np.concatenate([np.full(6, 0.3), rng.uniform(0.0, 0.1, 10)])
    result = localize(TokenEvidence(maps, relevance), RealParams(smoothing_sigma=0.5), image_size=(300, 300))
    assert result.scores.kept[:6].all() and not result.scores.kept[6:].any()
    peak_y, peak_x = np.unravel_index(np.argmax(result.anomaly_map), result.anomaly_map.shape)
    assert abs(peak_y - (4.5 * 20)) <= 20 and abs(peak_x - (10.5 * 20)) <= 20
    assert result.mask[int(4.5 * 20), int(10.5 * 20)]
    assert result.mask.mean() < 0.1
    # The plain all-token mean is pulled towards the distractors.
    baseline = all_token_map(TokenEvidence(maps, relevance), RealParams(smoothing_sigma=0.5), (300, 300))
    inside = result.mask
    assert result.anomaly_map[inside].mean() - result.anomaly_map[~inside].mean() > (
        baseline[inside].mean() - baseline[~inside].mean()
    )


def test_fallback_when_no_token_passes_both_filters_is_recorded():
    # Most relevant token is the most scattered one, and vice versa.
    concentrated = _blob()
    scattered = np.full((15, 15), 0.01)
    for y, x in [(1, 1), (1, 13), (13, 1), (13, 13)]:
        scattered[y, x] = 1.0
    maps = np.stack([concentrated, concentrated, scattered, scattered, scattered])
    scores = score_tokens(TokenEvidence(maps, np.array([0.0, 0.0, 1.0, 1.0, 1.0])), RealParams())
    assert scores.tau_entropy == 0.0 and scores.tau_relevance == 1.0
    assert scores.fallback and scores.kept.all()


def test_composite_weights_follow_alpha_and_beta():
    maps = np.stack([_blob(centre=(3, 3)), _blob(centre=(11, 11))])
    relevance = np.array([1.0, 0.0])
    only_relevance = score_tokens(
        TokenEvidence(maps, relevance), RealParams(alpha=1.0, beta=0.0, use_entropy_filter=False, use_relevance_filter=False)
    )
    assert only_relevance.weights.tolist() == [1.0, 0.0]


def test_upsampling_returns_original_non_square_size_in_unit_range():
    grid = np.zeros((6, 10))
    grid[1, 8] = 1.0
    image_map = to_image_map(grid, image_size=(500, 300), sigma=1.0)
    assert image_map.shape == (300, 500)
    assert image_map.min() == 0.0 and image_map.max() == pytest.approx(1.0)
    y, x = np.unravel_index(np.argmax(image_map), image_map.shape)
    assert 0 <= y < 100 and 350 <= x < 450
    assert to_image_map(np.ones((4, 4)), (10, 20), 1.0).max() == 0.0


def test_real_params_reject_bad_values():
    with pytest.raises(ValueError):
        RealParams(layer_start=3, layer_end=2)
    with pytest.raises(ValueError):
        RealParams(alpha=0, beta=0)
    with pytest.raises(ValueError):
        RealParams(layer_start=2).layer_slice(2)
    assert RealParams().layer_slice(28) == slice(2, 28)


def test_stacked_entropies_equal_one_map_at_a_time():
    rng = np.random.default_rng(3)
    maps = rng.dirichlet(np.ones(15 * 15) * 0.3, size=40).reshape(40, 15, 15)
    maps[5] = 1.0 / 225  # flat: no high region
    # A region touching the map's last row must not merge with the next map's first row.
    maps[6] = 0.001
    maps[6, -1, 3] = 1.0
    maps[7] = 0.001
    maps[7, 0, 3] = 1.0
    maps[7, 10, 10] = 1.0
    stacked = spatial_entropies(maps)
    single = np.array([_reference_entropy(m) for m in maps])
    assert np.isinf(stacked[5]) and np.isinf(single[5])
    assert stacked[6] == pytest.approx(0.0) and stacked[7] == pytest.approx(np.log(2))
    np.testing.assert_allclose(stacked[np.isfinite(single)], single[np.isfinite(single)], atol=1e-12)


def _reference_entropy(attention_map):
    """Plain per-map definition, as the paper states it, for comparison."""
    from scipy import ndimage

    high = np.maximum(attention_map - 2.0 * attention_map.mean(), 0.0)
    labels, count = ndimage.label(high > 0, structure=np.ones((3, 3)))
    if count == 0:
        return float("inf")
    masses = np.array([high[labels == i].sum() for i in range(1, count + 1)])
    p = masses / masses.sum()
    return float(-(p * np.log(p)).sum())


def test_score_gated_maps_show_no_hot_spot_on_a_part_scored_normal():
    maps = np.stack([_blob(centre=(4, 10)), _blob(centre=(5, 10))])
    evidence = TokenEvidence(maps, np.array([0.3, 0.2]))
    stretched = localize(evidence, RealParams(smoothing_sigma=0.5), (300, 300), score=0.1)
    gated = localize(evidence, RealParams(smoothing_sigma=0.5, map_scaling="score_gated"), (300, 300), score=0.1)
    assert stretched.anomaly_map.max() == pytest.approx(1.0) and stretched.mask.any()  # min-max: a hot spot anyway
    assert gated.anomaly_map.max() == pytest.approx(0.1, abs=1e-6) and not gated.mask.any()
    confident = localize(evidence, RealParams(smoothing_sigma=0.5, map_scaling="score_gated"), (300, 300), score=0.95)
    assert confident.mask.any() and np.allclose(confident.anomaly_map, 0.95 * stretched.anomaly_map, atol=1e-6)
    baseline = all_token_map(evidence, RealParams(smoothing_sigma=0.5, map_scaling="score_gated"), (300, 300), 0.1)
    assert baseline.max() == pytest.approx(0.1, abs=1e-6)  # the Tab. 7 baseline is scaled the same way


def test_equally_concentrated_tokens_all_get_full_concentration():
    maps = np.stack([_blob(centre=(4, 4)), _blob(centre=(9, 9)), _blob(centre=(2, 11))])  # one region each
    scores = score_tokens(TokenEvidence(maps, np.array([0.1, 0.2, 0.3])), RealParams(alpha=0.0, beta=1.0))
    assert np.all(scores.entropy == 0.0)
    assert np.allclose(scores.weights, 1.0)  # not 0: no token is less concentrated than another


def test_tokens_without_a_high_region_never_pass_the_entropy_filter():
    flat = np.full((15, 15), 1.0 / 225)
    every_flat = score_tokens(TokenEvidence(np.stack([flat] * 4), np.array([0.1, 0.2, 0.3, 0.4])), RealParams())
    assert np.isinf(every_flat.entropy).all()
    assert every_flat.fallback and every_flat.kept.all()  # nothing passed: the fallback is recorded
    mixed = np.stack([flat, _blob(centre=(4, 4)), _blob(centre=(4, 5)), flat])
    some_flat = score_tokens(TokenEvidence(mixed, np.array([0.4, 0.4, 0.4, 0.4])), RealParams())
    assert not some_flat.kept[0] and not some_flat.kept[3] and some_flat.kept[1:3].all()


def test_ignored_words_are_never_kept_or_weighted():
    from inspectd.real.localize import TokenEvidence, score_tokens

    maps = np.zeros((3, 4, 4))
    maps[0, 0, 0] = 1.0  # "the": the most concentrated token
    maps[1, 3, 3] = 1.0  # "crack"
    maps[2] = np.random.default_rng(0).random((4, 4))  # "surface": diffuse
    evidence = TokenEvidence(maps, np.array([1.0, 0.9, 0.1]), np.array([[0, 3], [4, 9], [10, 17]]),
                             ("the", " crack", " surface."))
    params = RealParams(use_relevance_filter=False)
    assert score_tokens(evidence, params).kept[0]  # without the list, "the" is kept
    ignoring = params.model_copy(update={"ignored_words": ("the", "surface")})
    scores = score_tokens(evidence, ignoring)
    assert scores.kept.tolist() == [False, True, False] and scores.weights[0] == 0 and scores.weights[2] == 0
    only_function = TokenEvidence(maps[:1], np.ones(1), None, ("The",))
    fallback = score_tokens(only_function, ignoring)
    assert fallback.kept.tolist() == [True]  # a reply of function words only still gets a map

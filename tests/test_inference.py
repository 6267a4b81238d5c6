"""The permutation test, its inverted intervals and the one-cell t-interval, against scipy and by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from lorasweep.analysis import inference


def scipy_p(x, y):
    """scipy's exact permutation test of the difference of means, on the statistic n1 n2 x difference:
    integers for integer values, so that scipy's comparisons are exact too."""
    n1, n2 = len(x), len(y)

    def statistic(a, b, axis):
        return n2 * np.sum(a, axis=axis) - n1 * np.sum(b, axis=axis)

    return stats.permutation_test((np.asarray(x, float), np.asarray(y, float)), statistic,
                                  permutation_type="independent", n_resamples=np.inf, vectorized=True).pvalue


def random_samples(rng, count):
    """Pairs of samples like a study's: capped step counts with ties at the horizon, or continuous values."""
    for _ in range(count):
        n1, n2 = rng.integers(2, 8, size=2)
        if rng.random() < 0.5:
            x, y = rng.integers(40, 300, n1).astype(float), rng.integers(40, 300, n2).astype(float)
            x[rng.random(n1) < 0.3] = 300
            y[rng.random(n2) < 0.3] = 300
        else:
            x, y = rng.normal(0.5, 0.05, n1), rng.normal(0.52, 0.05, n2)
        yield x, y


def test_p_values_equal_scipys_exact_permutation_test():
    rng = np.random.default_rng(3)
    for x, y in random_samples(rng, 150):
        assert inference.permutation_p_value(x, y) == pytest.approx(scipy_p(x, y), abs=1e-12), (x, y)


def test_the_difference_interval_excludes_zero_exactly_when_the_test_resolves():
    rng = np.random.default_rng(4)
    for x, y in random_samples(rng, 150):
        low, high = inference.shift_interval(x, y)
        assert (low <= 0 <= high) == (inference.permutation_p_value(x, y) > inference.ALPHA), (x, y)


def test_the_shift_interval_ends_are_where_scipys_test_starts_to_reject():
    x, y = np.array([250., 290., 260., 280., 271., 240.]), np.array([80., 95., 110., 85., 120., 101.])
    low, high = inference.shift_interval(x, y)
    assert low < x.mean() - y.mean() < high
    for end, outward in ((low, -1), (high, 1)):
        # just inside the end the shifted samples are not rejected, just outside they are
        assert scipy_p(x - (end - outward * 1e-6), y) > 0.05
        assert scipy_p(x - (end + outward * 1e-6), y) <= 0.05


def test_the_scale_interval_ends_are_where_scipys_test_starts_to_reject():
    x, y = np.array([25., 29., 26., 28., 30.]), np.array([20., 22.5, 21.25, 21.25, 19.])
    low, high = inference.scale_interval(x, y)
    ratio = x.mean() / y.mean()
    assert low < ratio < high
    for end, outward in ((low, -1), (high, 1)):
        assert scipy_p(x, (end - outward * 1e-6) * y) > 0.05
        assert scipy_p(x, (end + outward * 1e-6) * y) <= 0.05


def test_with_two_or_three_seeds_nothing_can_be_resolved_and_the_intervals_are_unbounded():
    # C(4, 2) = 6 splits: the smallest two-sided p is 2/6; C(6, 3) = 20: 2/20; C(8, 4) = 70: 2/70
    assert inference.smallest_p_value(2, 2) == pytest.approx(1 / 3)
    assert inference.smallest_p_value(3, 3) == pytest.approx(0.1)
    assert inference.smallest_p_value(4, 4) == pytest.approx(2 / 70)
    assert inference.fewest_seeds_to_resolve() == 4
    far_apart = inference.compare([1000, 1001, 1002], [1, 2, 3])
    assert far_apart.p_value == pytest.approx(0.1) and not far_apart.resolved and not far_apart.can_resolve
    assert (far_apart.low, far_apart.high) == (-math.inf, math.inf) and not far_apart.bounded
    assert inference.scale_interval([10, 11], [1, 2]) == (0.0, math.inf)
    resolved = inference.compare([1000, 1001, 1002, 1003], [1, 2, 3, 4])
    assert resolved.resolved and resolved.can_resolve and resolved.bounded and resolved.low > 0


def test_identical_cells_give_p_one():
    comparison = inference.compare([100, 100, 120, 130], [100, 100, 120, 130])
    assert comparison.p_value == 1.0 and comparison.difference == 0 and comparison.low <= 0 <= comparison.high
    assert comparison.seeds_needed is None  # no difference observed: no number of seeds is predicted


def test_many_seeds_use_seeded_random_splits():
    rng = np.random.default_rng(5)
    x, y = rng.normal(1.0, 0.2, 12), rng.normal(1.1, 0.2, 12)  # C(24, 12) = 2.7 million splits: too many
    first = inference.compare(x, y)
    assert inference.compare(x, y) == first  # fixed split seed: the same values give the same answer
    # (1 + count) / (1 + splits): never below 1 / 20000
    assert first.p_value >= 1 / (inference.RANDOM_SPLITS + 1)
    exact = stats.permutation_test((x, y), lambda a, b, axis: a.mean(axis) - b.mean(axis),
                                   permutation_type="independent", n_resamples=200_000, vectorized=True,
                                   rng=np.random.default_rng(0)).pvalue
    assert first.p_value == pytest.approx(exact, abs=0.01)


def test_fiellers_interval_by_hand():
    # means 27 and 21; variances 10/3 and 2.5/3, so squared standard errors v1 = 5/6 and v2 = 5/24
    x, y = [25.0, 26.0, 28.0, 29.0], [20.0, 20.5, 21.5, 22.0]
    ratio, low, high = inference.ratio_interval(x, y)
    r, v1, v2 = 27 / 21, 5 / 6, 5 / 24
    spread = v1 + r * r * v2
    df = spread ** 2 / (v1 ** 2 / 3 + (r * r * v2) ** 2 / 3)
    t = stats.t.ppf(0.975, df)
    # the ends solve (27 - q 21)^2 = t^2 (v1 + q^2 v2)
    for q in (low, high):
        assert (27 - q * 21) ** 2 == pytest.approx(t * t * (v1 + q * q * v2))
    assert ratio == pytest.approx(r) and low < r < high
    # one seed a cell, or no spread: no interval; a second mean indistinct from 0: unbounded
    assert inference.ratio_interval([2.0], [1.0]) == (2.0, None, None)
    assert inference.ratio_interval([2.0, 2.0], [1.0, 1.0]) == (2.0, None, None)
    assert inference.ratio_interval([10.0, 11.0], [0.1, 20.0])[2] == math.inf


def test_seeds_for_power_by_hand():
    # sd 10 in each cell, difference 10: (1.95996 + 0.84162)^2 x 200 / 100 = 15.70 -> 16 seeds per cell
    first = [100 - 7.0710678, 100 + 7.0710678]
    second = [110 - 7.0710678, 110 + 7.0710678]
    assert inference.seeds_for_power(first, second, -10.0) == 16
    assert inference.seeds_for_power(first, second, 0.0) is None
    assert inference.seeds_for_power([5, 5], [9, 9], 4.0) == 4  # no spread: the fewest the exact test needs
    # the spread may sit in either cell
    assert inference.seeds_for_power([100, 100], first, 10.0) == 8


def test_the_mean_interval_is_student_t():
    values = [0.40, 0.42, 0.44, 0.46]
    interval = inference.mean_interval(values)
    half = 3.182446 * np.std(values, ddof=1) / 2
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.43, 0.43 - half, 0.43 + half))
    scipy_ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((scipy_ci.low, scipy_ci.high))
    assert inference.mean_interval(values, lower=0.41).low == 0.41
    assert inference.mean_interval([1.0]).note == "one seed"
    assert inference.mean_interval([2.0, 2.0]).note == "seeds equal"


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="at least one seed"):
        inference.compare([], [1.0])
    with pytest.raises(ValueError, match="not a finite number"):
        inference.compare([1.0, math.nan], [1.0])
    with pytest.raises(ValueError, match="positive values"):
        inference.ratio_interval([1.0, 0.0], [1.0, 2.0])

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


@pytest.mark.parametrize("scale", [1e-7, 1.0, 1e3])
def test_splits_tied_but_for_rounding_count_as_ties_at_any_scale(scale):
    # many splits have equal sums that float addition in another order makes differ in the last bits
    x, y = np.array([0.1] * 3 + [0.2] * 3) * scale, np.array([0.3] * 3 + [0.15] * 3) * scale
    assert inference.permutation_p_value(x, y) == pytest.approx(scipy_p(x, y), abs=1e-12)
    assert scipy_p(x, y) == pytest.approx(0.1406926, abs=1e-6)


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


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e3])  # speeds or walls: no end may assume values near 1
def test_fiellers_ends_at_two_seeds_and_any_scale(scale):
    x, y = np.array([25.0, 29.0]) * scale, np.array([20.0, 20.5]) * scale
    ratio, low, high = inference.ratio_interval(x, y)
    m1, m2, v1, v2 = x.mean(), y.mean(), x.var(ddof=1) / 2, y.var(ddof=1) / 2
    r = m1 / m2
    df = (v1 + r * r * v2) ** 2 / (v1 ** 2 + (r * r * v2) ** 2)  # Welch with one df a cell
    assert 1 < df < 2
    t = stats.t.ppf(0.975, df)
    for q in (low, high):
        assert (m1 - q * m2) ** 2 == pytest.approx(t * t * (v1 + q * q * v2), rel=1e-9)
    assert ratio == pytest.approx(r) and 0 < low < r < high
    # a second mean indistinct from 0: every ratio from 0 up
    assert inference.ratio_interval(np.array([10.0, 11.0]) * scale, np.array([0.1, 20.0]) * scale)[1:] == (0.0, math.inf)


def test_rows_of_replicates_give_each_rows_own_answer():
    rng = np.random.default_rng(3)
    x, y = rng.lognormal(5.0, 0.3, (3, 4)), rng.lognormal(4.6, 0.3, (3, 4))
    p_values = inference.permutation_p_value(x, y)
    shifts, scales, ratios = inference.shift_interval(x, y), inference.scale_interval(x, y), inference.ratio_interval(x, y)
    for i in range(3):
        assert p_values[i] == pytest.approx(inference.permutation_p_value(x[i], y[i]))
        assert (shifts[0][i], shifts[1][i]) == pytest.approx(inference.shift_interval(x[i], y[i]))
        assert (scales[0][i], scales[1][i]) == pytest.approx(inference.scale_interval(x[i], y[i]))
        assert (ratios[0][i], ratios[1][i], ratios[2][i]) == pytest.approx(inference.ratio_interval(x[i], y[i]))


def test_replicates_are_taken_in_chunks_that_cover_every_row_once():
    # 12 million cells a chunk: 3 rows of 4 million splits at once
    assert list(inference._chunks(10, 4_000_000)) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert list(inference._chunks(2, 1)) == [slice(0, 2)]
    assert list(inference._chunks(2, 10 ** 9)) == [slice(0, 1), slice(1, 2)]  # at least one row a chunk


def test_the_smallest_p_value_past_the_exact_limit_is_the_random_splits():
    assert inference.smallest_p_value(9, 9) == 2 / 48620  # still exact
    assert inference.smallest_p_value(10, 10) == 2 / 20000  # 184756 splits: 19999 random ones and the observed
    assert inference.smallest_p_value(1, 1) == 1.0


def test_one_cells_interval_reports_its_seeds():
    assert inference.mean_interval([1.0]) == inference.MeanInterval(1.0, None, None, 1, "one seed")
    assert inference.mean_interval([2.0, 2.0]) == inference.MeanInterval(2.0, None, None, 2, "seeds equal")
    assert inference.mean_interval([0.40, 0.42, 0.44, 0.46]).n == 4
    # a one-seed cell has no spread to plan with: the fewest seeds the test needs, however small the difference
    assert inference.seeds_for_power([5.0], [9.0, 9.0], 4.0) == 4
    assert inference.seeds_for_power([5.0], [9.0, 9.0], 0.5) == 4


def test_each_bad_input_is_refused_in_words():
    def refused(message, call, *args):
        with pytest.raises(ValueError, match=f"^{message}$"):
            call(*args)

    one, finite, positive = "each cell needs at least one seed's value", "a seed's value is not a finite number", \
        "a ratio's interval needs positive values"
    refused(one, inference.compare, [1.0, 2.0], [])
    refused(one, inference.permutation_p_value, np.ones((2, 3)), np.ones((3, 3)))
    refused(finite, inference.compare, [1.0, 2.0], [1.0, math.inf])
    refused(one, inference.permutation_p_value, [1.0, 2.0], [])
    refused(one, inference.shift_interval, [], [1.0, 2.0])
    refused(finite, inference.permutation_p_value, [1.0, 2.0], [1.0, math.nan])
    refused(finite, inference.shift_interval, [math.inf, 2.0], [1.0, 3.0])
    refused(one, inference.mean_interval, np.ones((2, 2)))
    refused(finite, inference.mean_interval, [1.0, math.nan])
    refused("no seed to estimate from", inference.mean_interval, [])
    for call in (inference.ratio_interval, inference.scale_interval):
        refused(positive, call, [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 0.0, 3.0])
        refused(positive, call, [1.0, 0.0, 3.0, 4.0], [1.0, 2.0, 2.5, 3.0])
        assert call([0.5, 0.6, 0.7, 0.8], [0.4, 0.5, 0.6, 0.7]) is not None  # below 1 is fine


def test_a_comparison_at_another_alpha_uses_it_throughout():
    x, y = [25.0, 26.0, 28.0, 29.0, 27.0], [20.0, 24.5, 21.5, 22.0, 26.0]
    result = inference.compare(x, y, alpha=0.2)
    assert (result.low, result.high) == pytest.approx(inference.shift_interval(x, y, 0.2))
    assert (result.low, result.high) != pytest.approx(inference.shift_interval(x, y, 0.05))
    assert result.seeds_needed == inference.seeds_for_power(x, y, result.difference, 0.2)
    assert result.seeds_needed != inference.seeds_for_power(x, y, result.difference, 0.05)


def test_the_inverted_interval_takes_order_statistics_row_by_row():
    rng = np.random.default_rng(5)
    critical = rng.normal(size=(2, 923))  # 6 seeds a cell: 924 splits, the observed one left out
    low, high = inference._inverted_interval(critical, 924, 0.05)
    needed = 23  # the smallest count with (1 + count) / 924 > 0.025
    ordered = np.sort(critical, axis=1)
    assert low.tolist() == ordered[:, needed - 1].tolist() and high.tolist() == ordered[:, 923 - needed].tolist()


def test_a_row_without_spread_has_no_ratio_interval_among_rows_that_have_one():
    ratio, low, high = inference.ratio_interval(np.array([[2.0, 2.0], [1.0, 3.0]]), np.array([[1.0, 1.0], [1.0, 2.0]]))
    assert ratio.tolist() == [2.0, pytest.approx(4 / 3)]
    assert np.isnan(low[0]) and np.isnan(high[0]) and 0 <= low[1] < high[1]

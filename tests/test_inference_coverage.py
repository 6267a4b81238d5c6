"""The stated error rates hold at the seed counts a study runs: a simulation, seeded.

Synthetic cells whose truth is known (``lorasweep.analysis.coverage``: log-normal steps
to target with the spreads of the default run's cells, capped at max_steps 300 so that
a share of the seeds is censored; normal early rewards), many replicates per
(scenario, n) at n = 2, 3, 4, 6 (the default run's) and 8:

- a comparison's 95% interval (difference, ratio) covers the true value at least 93%
  of the time (an interval the seeds cannot give makes no claim and is no miss); one
  cell's Student-t interval, approximate for skewed or censored seeds, at least 92.5%
  (docs/numbers.md, "Inference", gives the measured figures);
- with no true difference (both cells' seeds from one distribution) a claim is called
  resolved at most 5% of the time, allowing for the simulation's own noise.

The same checks fail for intervals planted too narrow and for a test that resolves
too often, so they can fail.
"""

import math

import numpy as np
import pytest

from lorasweep.analysis import coverage, inference
from lorasweep.analysis.coverage import CELLS, PAIRS, cell_parameters, pair_samples, steps, true_mean

REPLICATES = 4000
# one cell's t-interval is cheap: more replicates, so that a coverage near the bar is read to +-0.4%
ONE_CELL_REPLICATES = 12000
SEED_COUNTS = (2, 3, 4, 6, 8)
MIN_COVERAGE = 0.93
MIN_COVERAGE_ONE_CELL = 0.925


def max_false_rate(replicates: int) -> float:
    """5% plus three standard errors of a rate estimated from ``replicates`` draws."""
    return inference.ALPHA + 3 * math.sqrt(inference.ALPHA * (1 - inference.ALPHA) / replicates)


# ---- one cell: the Student-t interval -----------------------------------------------------------


@pytest.mark.parametrize("n", SEED_COUNTS)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_one_cells_interval_covers_its_restricted_mean(name, n):
    rng = np.random.default_rng([n, len(name)])
    assert coverage.one_cell_coverage(rng, name, n, ONE_CELL_REPLICATES) >= MIN_COVERAGE_ONE_CELL


def test_intervals_planted_too_narrow_fail_the_coverage_checks():
    rng = np.random.default_rng(7)
    truth = true_mean(*CELLS["typical"])
    # the normal quantile 1.96 in place of Student's t: at 4 seeds it covers ~87%
    values = steps(rng, *CELLS["typical"], (REPLICATES, 4))
    mean, half = values.mean(axis=1), 1.959964 * values.std(axis=1, ddof=1) / 2
    assert coverage.coverage_of_intervals(mean - half, mean + half, truth) < MIN_COVERAGE_ONE_CELL
    # a percentile bootstrap of two seeds, which can only span them: ~50%
    two = steps(rng, *CELLS["typical"], (REPLICATES, 2))
    assert coverage.coverage_of_intervals(two.min(axis=1), two.max(axis=1), truth) < MIN_COVERAGE_ONE_CELL
    # a comparison's interval at 80% called 95% fails its bar
    first, second = PAIRS["moderate"]
    x, y = pair_samples(rng, first, second, 6, REPLICATES)
    low, high = inference.shift_interval(x, y, alpha=0.20)
    difference = true_mean(*cell_parameters(first)) - true_mean(*cell_parameters(second))
    assert coverage.coverage_of_intervals(low, high, difference) < MIN_COVERAGE


# ---- two cells: the permutation test, the interval that inverts it, Fieller's ratio -------------


@pytest.mark.parametrize("n", SEED_COUNTS)
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_the_difference_and_ratio_intervals_cover_the_true_values(name, n):
    rates = coverage.pair_coverage(np.random.default_rng([n, len(name), 1]), name, n, REPLICATES)
    assert rates["difference"] >= MIN_COVERAGE and rates["ratio"] >= MIN_COVERAGE


@pytest.mark.parametrize("n", SEED_COUNTS)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_with_no_true_difference_a_claim_is_resolved_at_most_five_percent_of_the_time(name, n):
    rng = np.random.default_rng([n, len(name), 2])
    assert coverage.false_resolution(rng, name, n, REPLICATES) <= max_false_rate(REPLICATES)
    if n < inference.fewest_seeds_to_resolve():
        assert coverage.false_resolution(rng, name, n, 200) == 0  # below 4 seeds per cell nothing is ever resolved


@pytest.mark.parametrize("n", SEED_COUNTS)
def test_the_early_reward_comparison_keeps_its_rates(n):
    # normal per-seed mean rewards, sd 0.02: no difference, and a difference of 0.05
    rng = np.random.default_rng([n, 3])
    x, y = rng.normal(0.50, 0.02, (REPLICATES, n)), rng.normal(0.50, 0.02, (REPLICATES, n))
    assert (inference.permutation_p_value(x, y) <= inference.ALPHA).mean() <= max_false_rate(REPLICATES)
    z = rng.normal(0.55, 0.02, (REPLICATES, n))
    low, high = inference.shift_interval(z, y)
    assert coverage.coverage_of_intervals(low, high, 0.05) >= MIN_COVERAGE
    intervals = [inference.mean_interval(row) for row in z]
    assert coverage.coverage_of_intervals([i.low for i in intervals], [i.high for i in intervals], 0.55) >= MIN_COVERAGE


def test_a_test_that_resolves_too_often_fails_the_false_resolution_check():
    # Welch's z (normal quantile, no t) at 3 seeds per cell, with no difference: about 15% resolved
    rng = np.random.default_rng(11)
    x, y = pair_samples(rng, "typical", "typical", 3, REPLICATES)
    se = np.sqrt(x.var(axis=1, ddof=1) / 3 + y.var(axis=1, ddof=1) / 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        resolved = np.abs(x.mean(axis=1) - y.mean(axis=1)) / se > 1.959964
    assert resolved.mean() > max_false_rate(REPLICATES)


def test_the_permutation_test_finds_the_default_runs_size_of_difference_at_six_seeds():
    # not an error rate but the point of 6 seeds: bs 8 vs bs 32 (190 vs 90 steps) is resolved nearly always
    assert coverage.pair_coverage(np.random.default_rng(13), "bs8_vs_bs32", 6, REPLICATES)["resolved"] > 0.9

"""Intervals and verdicts over seeds that keep their stated error rates at the n a study runs.

A cell's seeds are its sample: 2 to 16 values of one statistic per cell (steps to
target capped at the horizon, wall to target, mean early reward). Two kinds of
statement are made about them (docs/numbers.md, "Inference"):

- **one cell's mean**, with a Student-t interval (``scipy.stats.t``);
- **two cells compared** by the exact permutation test of the difference of their
  means, two-sided (``scipy.stats.permutation_test``'s convention: twice the
  smaller tail, ties counted in both). Under "no difference" (the two cells' seeds
  come from one distribution) its p-value is exact at every n, so a claim is
  called resolved (p <= ALPHA) at most ALPHA of the time. Its intervals invert the
  same test: the difference under a shift model, the ratio under a scale model,
  so an interval excludes 0 (or 1) exactly when the test resolves the claim.

The permutation distribution is enumerated over every split of the pooled seeds
(C(n1 + n2, n1) of them) up to ``EXACT_SPLITS_LIMIT``; above it, ``RANDOM_SPLITS``
seeded random splits plus the observed one give a valid p-value
((1 + count) / (1 + splits)). With 2 seeds per cell there are 6 splits and the
smallest p-value the test can give is 2/6; with 3, 2/20: no difference can be
resolved at 95% by an exact test below 4 seeds per cell, and the intervals are
then unbounded, which the tables print in words rather than as a number.

The simulation tests (tests/test_inference_coverage.py) check the stated rates on
synthetic censored samples at n = 2, 3, 4, 6 and 8.

Every function here takes the per-seed values as plain numbers; which values a
claim compares (steps, walls, rewards) is decided by its caller. No torch.
"""

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 1.0 - ALPHA
# enumerate every split of the pooled seeds up to this many (C(18, 9) = 48620: 9 seeds per cell)
EXACT_SPLITS_LIMIT = 50_000
RANDOM_SPLITS = 19_999  # above the limit: this many random splits, plus the observed one
SPLITS_SEED = 20240607  # fixed: the same records give the same p-values and intervals everywhere
# the planning figure "seeds that would resolve it" aims at this power (normal approximation)
PLANNING_POWER = 0.80
# relative tolerance under which two statistics count as tied (scipy.stats.permutation_test's)
TIE_TOLERANCE = 100 * np.finfo(float).eps


def smallest_p_value(n1: int, n2: int) -> float:
    """The smallest two-sided p-value the exact permutation test can give with these seed counts."""
    splits = math.comb(n1 + n2, n1)
    return min(1.0, 2.0 / splits) if splits <= EXACT_SPLITS_LIMIT else 2.0 / (RANDOM_SPLITS + 1)


def fewest_seeds_to_resolve(alpha: float = ALPHA) -> int:
    """The fewest seeds per cell (equal counts) at which the exact test can resolve anything at ``alpha``."""
    n = 1
    while smallest_p_value(n, n) > alpha:
        n += 1
    return n


@lru_cache(maxsize=64)
def _splits(n1: int, n2: int) -> tuple:
    """(membership, exact): which pooled seeds go to the first group in each split; row 0 is the observed split.

    ``membership`` is a (splits, n1 + n2) 0/1 float array, the observed split (the
    first n1 pooled values in the first group) first.
    """
    total = n1 + n2
    count = math.comb(total, n1)
    if count <= EXACT_SPLITS_LIMIT:
        membership = np.zeros((count, total))
        for row, chosen in enumerate(itertools.combinations(range(total), n1)):
            membership[row, list(chosen)] = 1.0  # combinations start with (0, ..., n1 - 1): the observed split
        return membership, True
    rng = np.random.default_rng(SPLITS_SEED)
    order = np.argsort(rng.random((RANDOM_SPLITS, total)), axis=1)[:, :n1]
    membership = np.zeros((RANDOM_SPLITS + 1, total))
    membership[0, :n1] = 1.0
    np.put_along_axis(membership[1:], order, 1.0, axis=1)
    return membership, False


def _as_samples(first, second) -> tuple:
    """Two cells' per-seed values as (replicates, seeds) arrays: one row for a study, many for a simulation."""
    x, y = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] == 0 or y.shape[1] == 0 or len(x) != len(y):
        raise ValueError("each cell needs at least one seed's value")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a seed's value is not a finite number")
    return x, y


# rows of replicates handled at once: bounds the (rows x splits) arrays to about 100 MB
_CHUNK_CELLS = 12_000_000


def _chunks(rows: int, splits: int):
    step = max(1, _CHUNK_CELLS // max(1, splits))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def permutation_p_value(first, second):
    """Two-sided p-value of the difference of means, by the exact (or seeded random) permutation test.

    ``first`` and ``second`` are one cell's values each, or (replicates, seeds)
    arrays, which give one p-value per row.
    """
    x, y = _as_samples(first, second)
    membership, _ = _splits(x.shape[1], y.shape[1])
    out = np.empty(len(x))
    for rows in _chunks(len(x), len(membership)):
        null, gamma = _split_statistics(x[rows], y[rows], membership)
        observed = null[:, :1]
        # the observed split is column 0, also among random splits: (1 + count) / (1 + splits)
        greater = np.count_nonzero(null >= observed - gamma, axis=1) / null.shape[1]
        less = np.count_nonzero(null <= observed + gamma, axis=1) / null.shape[1]
        out[rows] = np.minimum(1.0, 2.0 * np.minimum(greater, less))
    return float(out[0]) if np.ndim(first) == 1 else out


def _split_statistics(x: np.ndarray, y: np.ndarray, membership: np.ndarray) -> tuple:
    """(statistic of every split per row, tie tolerance per row): n1 n2 x the difference of the split's group means.

    Scaled so that integer values (step counts) give integer statistics, exact in
    float64, and ties between splits are exact; for other values two statistics
    within ``gamma`` (float rounding of sums in another order) count as tied.
    """
    n1, n2 = x.shape[1], y.shape[1]
    pooled = np.concatenate([x, y], axis=1)
    first_sums = pooled @ membership.T
    statistics = n2 * first_sums - n1 * (pooled.sum(axis=1, keepdims=True) - first_sums)
    gamma = TIE_TOLERANCE * max(n1, n2) * np.abs(pooled).sum(axis=1, keepdims=True)
    return statistics, gamma


def _inverted_interval(critical: np.ndarray, splits: int, alpha: float) -> tuple:
    """The set of parameter values the test does not reject, from the splits' critical values (one row each).

    For the shift (and scale) families below, split k's statistic is at least the
    observed one exactly when the parameter is at least ``critical[k]``; so the
    upper tail count is 1 + #{critical <= value}, the lower 1 + #{critical >= value},
    and the test keeps a value while both exceed alpha/2 of the splits: a closed
    interval between two order statistics of ``critical``, or unbounded on a side
    where no value can be rejected.
    """
    needed = math.floor(alpha * splits / 2 - 1) + 1  # the smallest count with (1 + count) / splits > alpha / 2
    rows = len(critical)
    if needed <= 0:
        return np.full(rows, -math.inf), np.full(rows, math.inf)
    others = critical.shape[1]
    low = np.partition(critical, needed - 1, axis=1)[:, needed - 1]
    high = np.partition(critical, others - needed, axis=1)[:, others - needed]
    return low, high


def _interval_result(first, low, high):
    if np.ndim(first) == 1:
        return float(low[0]), float(high[0])
    return low, high


def shift_interval(first, second, alpha: float = ALPHA):
    """Interval of mean(first) - mean(second): every shift d for which first - d vs second is not rejected.

    Exact under a shift model (first = second + d in distribution); unbounded below
    the seed counts at which the test can reject at all. At d = 0 it is the test
    itself: the interval excludes 0 exactly when ``permutation_p_value`` <= alpha.
    """
    x, y = _as_samples(first, second)
    n1, n2 = x.shape[1], y.shape[1]
    membership, _ = _splits(n1, n2)
    kept = membership[:, :n1].sum(axis=1)  # first-cell seeds that stay in the first group
    # shifting the first cell by d moves a split's statistic by -d n1 n2 b (b = 1 for the observed split)
    b = kept / n1 - (n1 - kept) / n2
    low, high = np.empty(len(x)), np.empty(len(x))
    for rows in _chunks(len(x), len(membership)):
        statistics, gamma = _split_statistics(x[rows], y[rows], membership)
        gap = statistics[:, :1] - statistics[:, 1:]
        gap = np.where(np.abs(gap) <= gamma, 0.0, gap)  # a tie at d = 0 stays a tie
        low[rows], high[rows] = _inverted_interval(gap / (n1 * n2 * (1.0 - b[1:])), len(membership), alpha)
    return _interval_result(first, low, high)


def scale_interval(first, second, alpha: float = ALPHA):
    """Interval of mean(first) / mean(second) for positive values: every r for which first vs r x second is not rejected.

    Exact under a scale model (first = r x second in distribution), the model of a
    speedup; the lower end is at least 0.
    """
    x, y = _as_samples(first, second)
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a ratio's interval needs positive values")
    n1, n2 = x.shape[1], y.shape[1]
    membership, _ = _splits(n1, n2)
    low, high = np.empty(len(x)), np.empty(len(x))
    for rows in _chunks(len(x), len(membership)):
        first_part = x[rows] @ membership[:, :n1].T
        second_part = y[rows] @ membership[:, n1:].T
        a = first_part / n1 - (x[rows].sum(axis=1, keepdims=True) - first_part) / n2  # second scaled by r: a + r c
        c = second_part * (1.0 / n1 + 1.0 / n2)  # c minus the observed split's: positive for every other split
        low[rows], high[rows] = _inverted_interval((a[:, :1] - a[:, 1:]) / c[:, 1:], len(membership), alpha)
    return _interval_result(first, np.maximum(low, 0.0), high)


def seeds_for_power(first: Sequence[float], second: Sequence[float], difference: float,
                    alpha: float = ALPHA, power: float = PLANNING_POWER) -> Optional[int]:
    """Seeds per cell at which a difference this large, at the spread seen, is resolved with ``power``.

    The normal approximation n = (z_{1-alpha/2} + z_power)^2 (s1^2 + s2^2) / difference^2,
    s the sample standard deviations, and never fewer than the exact test needs
    (``fewest_seeds_to_resolve``). None when no difference was seen: no number of
    seeds is predicted to resolve it. A planning figure, not a promise: at small n
    the spreads themselves are rough.
    """
    if difference == 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    variance = sum(_sample_variance(v) for v in (first, second))
    needed = math.ceil(z ** 2 * variance / difference ** 2 - 1e-12)
    return max(fewest_seeds_to_resolve(alpha), needed)


def _sample_variance(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.var(ddof=1)) if len(values) > 1 else 0.0


# ---- one cell ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanInterval:
    """A cell's mean over its seeds with its Student-t interval; ``note`` says why there is none."""

    mean: float
    low: Optional[float]
    high: Optional[float]
    n: int
    note: Optional[str] = None  # "one seed", "seeds equal": no interval


def mean_interval(values: Sequence[float], lower: float = -math.inf, upper: float = math.inf,
                  confidence: float = CONFIDENCE) -> MeanInterval:
    """Mean and Student-t interval, cut to [lower, upper] (the values' own bounds: a capped step count)."""
    if len(values) == 0:
        raise ValueError("no seed to estimate from")
    values = _one_cell(values)  # a NaN would pass through mean and std into the table unnoticed
    mean = float(values.mean())
    if len(values) < 2:
        return MeanInterval(mean, None, None, len(values), "one seed")
    spread = float(values.std(ddof=1))
    if spread == 0:
        return MeanInterval(mean, None, None, len(values), "seeds equal")
    half = stats.t.ppf(0.5 + confidence / 2, df=len(values) - 1) * spread / math.sqrt(len(values))
    return MeanInterval(mean, max(lower, mean - half), min(upper, mean + half), len(values))


# ---- two cells ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """mean(first) - mean(second) over seeds, the permutation test's p-value and the intervals that invert it."""

    first_mean: float
    second_mean: float
    p_value: float
    low: float  # of the difference; -inf / inf when the seeds cannot bound it
    high: float
    n_first: int
    n_second: int
    seeds_needed: Optional[int]
    alpha: float = ALPHA

    @property
    def difference(self) -> float:
        return self.first_mean - self.second_mean

    @property
    def resolved(self) -> bool:
        return self.p_value <= self.alpha

    @property
    def can_resolve(self) -> bool:
        """False when these seed counts cannot give a p-value as small as alpha, whatever the values."""
        return smallest_p_value(self.n_first, self.n_second) <= self.alpha

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def compare(first: Sequence[float], second: Sequence[float], alpha: float = ALPHA) -> Comparison:
    """The permutation comparison of two cells' per-seed values (equal or unequal seed counts)."""
    x, y = _one_cell(first), _one_cell(second)
    low, high = shift_interval(x, y, alpha)
    difference = float(x.mean() - y.mean())
    return Comparison(
        first_mean=float(x.mean()), second_mean=float(y.mean()), p_value=permutation_p_value(x, y),
        low=low, high=high, n_first=len(x), n_second=len(y),
        seeds_needed=seeds_for_power(x, y, difference, alpha), alpha=alpha,
    )


def ratio_interval(first, second, alpha: float = ALPHA):
    """(mean(first) / mean(second), low, high) for positive per-seed values: a speedup and its interval.

    Fieller's interval for a ratio of two independent means, with the Welch-Satterthwaite
    degrees of freedom of mean(first) - r mean(second) at the estimate: the r with
    (mean1 - r mean2)^2 <= t^2 (v1 + r^2 v2), v the squared standard errors. It allows
    the two cells different spreads (a large batch's steps scatter less than a small
    one's), where the scale-model permutation interval (``scale_interval``) covered
    only about 93% in the simulation tests. Unbounded (0, inf) when the second mean is
    not clearly away from 0 at that t; no interval (None, None) from one seed a cell or
    seeds without spread. Rows of (replicates, seeds) arrays give one interval each.
    """
    x, y = _as_samples(first, second)
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a ratio's interval needs positive values")
    n1, n2 = x.shape[1], y.shape[1]
    m1, m2 = x.mean(axis=1), y.mean(axis=1)
    ratio = m1 / m2
    if n1 < 2 or n2 < 2:
        low = high = np.full(len(x), np.nan)
    else:
        v1, v2 = x.var(axis=1, ddof=1) / n1, y.var(axis=1, ddof=1) / n2
        spread = v1 + ratio ** 2 * v2
        with np.errstate(divide="ignore", invalid="ignore"):
            df = spread ** 2 / (v1 ** 2 / (n1 - 1) + (ratio ** 2 * v2) ** 2 / (n2 - 1))
        t = stats.t.ppf(1 - alpha / 2, np.where(spread > 0, np.maximum(df, 1.0), 1.0))
        a, b, c = m2 ** 2 - t ** 2 * v2, -2 * m1 * m2, m1 ** 2 - t ** 2 * v1
        root = np.sqrt(np.maximum(b ** 2 - 4 * a * c, 0.0))
        bounded = a > 0
        low = np.where(bounded, (-b - root) / (2 * np.where(bounded, a, 1.0)), 0.0)
        high = np.where(bounded, (-b + root) / (2 * np.where(bounded, a, 1.0)), math.inf)
        low, high = np.where(spread > 0, np.maximum(low, 0.0), np.nan), np.where(spread > 0, high, np.nan)
    if np.ndim(first) == 1:
        none = math.isnan(low[0])
        return float(ratio[0]), None if none else float(low[0]), None if none else float(high[0])
    return ratio, low, high


def _one_cell(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("each cell needs at least one seed's value")
    if not np.isfinite(values).all():
        raise ValueError("a seed's value is not a finite number")
    return values

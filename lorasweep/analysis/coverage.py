"""Synthetic cells with a known truth, and the error rates of ``inference`` measured on them.

The simulation tests (tests/test_inference_coverage.py) assert the rates;
``scripts/inference_coverage.py`` prints them as the table docs/design.md quotes.
A synthetic cell's steps to target are log-normal (median, sigma) with the spreads
seen in the default run's cells, rounded up to whole steps and capped at the horizon,
so that a share of its seeds is censored, as in a real run toward a target.
"""

import math

import numpy as np
from scipy import stats

from . import inference

HORIZON = 300
# (median, sigma) of steps to target: a tight small-batch cell, a typical one, one with ~21% censored
CELLS = {"tight": (190, 0.15), "typical": (180, 0.30), "censored": (235, 0.30)}
# pairs with a true difference: small batch vs large (different spreads), a moderate gap, both censoring
PAIRS = {"bs8_vs_bs32": ("tight", (90, 0.35)), "moderate": ("typical", (120, 0.30)),
         "both_censored": ("censored", (180, 0.30))}


def cell_parameters(name) -> tuple:
    """(median, sigma) of a named cell, or the pair itself."""
    return CELLS[name] if isinstance(name, str) else tuple(name)


def steps(rng: np.random.Generator, median: float, sigma: float, size) -> np.ndarray:
    """Log-normal steps to target, whole steps, capped at the horizon (a capped seed is censored)."""
    return np.minimum(np.maximum(np.ceil(median * np.exp(sigma * rng.standard_normal(size))), 1), HORIZON)


def true_mean(median: float, sigma: float) -> float:
    """E[min(ceil(T), H)] = sum over k < H of P(T > k), T log-normal: the true restricted mean."""
    k = np.arange(1, HORIZON)
    return 1.0 + float(stats.norm.sf(np.log(k / median) / sigma).sum())


def censored_share(median: float, sigma: float) -> float:
    return float(stats.norm.sf(math.log(HORIZON / median) / sigma))


def coverage_of_intervals(low, high, truth) -> float:
    """Share of replicates whose interval covers the truth; no interval (NaN or None) is no claim, so no miss."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    claimed = ~np.isnan(low)
    return float(1 - np.mean(claimed & ~((low <= truth) & (truth <= high))))


def one_cell_coverage(rng, name, n: int, replicates: int) -> float:
    """Coverage of one cell's Student-t interval of its capped steps."""
    values = steps(rng, *cell_parameters(name), (replicates, n))
    intervals = [inference.mean_interval(row, lower=1, upper=HORIZON) for row in values]
    low = [np.nan if i.low is None else i.low for i in intervals]
    high = [np.nan if i.high is None else i.high for i in intervals]
    return coverage_of_intervals(low, high, true_mean(*cell_parameters(name)))


def pair_samples(rng, first, second, n: int, replicates: int) -> tuple:
    return (steps(rng, *cell_parameters(first), (replicates, n)),
            steps(rng, *cell_parameters(second), (replicates, n)))


def pair_coverage(rng, name, n: int, replicates: int) -> dict:
    """Coverage of the difference's and the ratio's intervals, and the share resolved, for a pair with a difference."""
    first, second = PAIRS[name]
    x, y = pair_samples(rng, first, second, n, replicates)
    a, b = true_mean(*cell_parameters(first)), true_mean(*cell_parameters(second))
    low, high = inference.shift_interval(x, y)
    _, ratio_low, ratio_high = inference.ratio_interval(x, y)
    return {"difference": coverage_of_intervals(low, high, a - b),
            "ratio": coverage_of_intervals(ratio_low, ratio_high, a / b),
            "resolved": float(np.mean(inference.permutation_p_value(x, y) <= inference.ALPHA))}


def false_resolution(rng, name, n: int, replicates: int) -> float:
    """Share of replicates called resolved when both cells' seeds come from one distribution."""
    x, y = pair_samples(rng, name, name, n, replicates)
    return float(np.mean(inference.permutation_p_value(x, y) <= inference.ALPHA))


def equal_means_pair(sigma_first: float = 0.15, sigma_second: float = 0.35, median_first: float = 150) -> tuple:
    """Two cells with one true restricted mean and different spreads: no difference, other shapes."""
    from scipy.optimize import brentq

    target = true_mean(median_first, sigma_first)
    median_second = brentq(lambda m: true_mean(m, sigma_second) - target, 20, HORIZON)
    return (median_first, sigma_first), (median_second, sigma_second)

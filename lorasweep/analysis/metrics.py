"""The one place that decides steps-to-target and step time.

Both are computed from the per-step records a worker writes (one JSON object per
step), so a new definition re-aggregates old runs without retraining. Pure
Python: tables, plots and the worker's own stopping test all call in here.
"""

import math
import random
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence


def trailing_mean(rewards: Sequence[float], window: int) -> Optional[float]:
    """Mean of the last ``window`` batch-mean rewards; None until there are ``window`` of them.

    ``math.fsum`` sums exactly and rounds once, so the mean depends only on the
    window's values, not on how the rewards before it were added and taken away:
    at a tie with the target (window 5, target 0.7, rewards .53 .6 .65 .9 .75 .6)
    a running sum lands below 0.7 at step 6 (0.6999999999999998) where the
    window's own sum, 3.5, gives exactly 0.7.
    """
    if len(rewards) < window:
        return None
    return math.fsum(rewards[len(rewards) - window:]) / window


class TargetTracker:
    """Decides, step by step, whether the trailing mean reward has reached the target.

    The only place that decides it: the worker feeds it each step's batch-mean
    reward to know when to stop, and ``steps_to_target`` feeds it the recorded
    rewards, so a worker that stopped at its target is never called censored.
    """

    def __init__(self, target: float, window: int):
        self.target, self.window = target, window
        self.recent = deque(maxlen=window)
        self.trailing = None  # the trailing mean after the last reward added

    def add(self, reward: float) -> bool:
        """Add one step's batch-mean reward; True when the trailing mean reaches the target."""
        self.recent.append(reward)
        self.trailing = trailing_mean(list(self.recent), self.window)
        return self.reached

    @property
    def reached(self) -> bool:
        return self.trailing is not None and self.trailing >= self.target


def trailing_means(rewards: Sequence[float], window: int) -> list:
    """Mean of the last ``window`` batch-mean rewards at each step; None until the window is full."""
    tracker = TargetTracker(target=math.inf, window=window)
    means = []
    for reward in rewards:
        tracker.add(reward)
        means.append(tracker.trailing)
    return means


def steps_to_target(rewards: Sequence[float], target: float, window: int) -> Optional[int]:
    """First step (1-based) whose trailing mean reaches ``target``; None if none does (censored)."""
    tracker = TargetTracker(target, window)
    for step, reward in enumerate(rewards, start=1):
        if tracker.add(reward):
            return step
    return None


def median_step_time(records: Sequence[dict], warmup: int) -> Optional[float]:
    """Median wall time per step after discarding the first ``warmup`` steps."""
    times = [r["step_s"] for r in records if r["step"] > warmup]
    return statistics.median(times) if times else None


def steady_window(records_by_seed: dict, warmup: int) -> tuple:
    """The wall-clock interval in which every worker of a cell was past warm-up and still stepping."""
    starts, ends = [], []
    for records in records_by_seed.values():
        steady = [r for r in records if r["step"] > warmup]
        if not steady:
            return None
        starts.append(steady[0]["t_start"])
        ends.append(records[-1]["t_end"])
    return max(starts), min(ends)


def worker_steady_step_times(records_by_seed: dict, warmup: int) -> dict:
    """Each worker's median step time in steady state, by seed (None: no step past warm-up).

    Steady state is the interval in which all n workers step at once, so the
    figures are step times under n-way sharing. A worker that stopped early (it
    reached its target) shortens that interval; if a worker has no step inside
    it, its post-warm-up steps are used instead.
    """
    window = steady_window(records_by_seed, warmup)
    medians = {}
    for seed, records in records_by_seed.items():
        steady = [r for r in records if r["step"] > warmup]
        if window is not None:
            inside = [r for r in steady if r["t_start"] >= window[0] and r["t_end"] <= window[1]]
            steady = inside or steady
        medians[seed] = statistics.median(r["step_s"] for r in steady) if steady else None
    return medians


def cell_step_time(records_by_seed: dict, warmup: int) -> Optional[float]:
    """Step time of a cell: median over workers of each worker's median steady-state step."""
    return _median_of_workers(worker_steady_step_times(records_by_seed, warmup))


def _median_of_workers(per_worker: dict) -> Optional[float]:
    medians = [m for m in per_worker.values() if m is not None]
    return statistics.median(medians) if medians else None


@dataclass
class WorkerOutcome:
    seed: int
    steps_run: int
    steps_to_target: Optional[int]  # None: censored, target not reached within the steps run
    final_trailing_reward: Optional[float]
    median_step_s: Optional[float]

    @property
    def censored(self) -> bool:
        return self.steps_to_target is None


def worker_outcome(seed: int, records: Sequence[dict], target: float, window: int, warmup: int) -> WorkerOutcome:
    rewards = [r["reward_mean"] for r in records]
    trailing = trailing_means(rewards, window)
    return WorkerOutcome(
        seed=seed,
        steps_run=len(records),
        steps_to_target=steps_to_target(rewards, target, window),
        final_trailing_reward=trailing[-1] if trailing else None,
        median_step_s=median_step_time(records, warmup),
    )


@dataclass
class CellOutcome:
    """What a table row needs, all derived from the per-step records of one cell."""

    workers: list
    worker_step_times: dict  # seed -> median steady-state step (s)

    @property
    def step_time(self) -> Optional[float]:
        """The cell's step time: the median of its workers' steady-state medians."""
        return _median_of_workers(self.worker_step_times)

    @property
    def converged(self) -> list:
        return [w.steps_to_target for w in self.workers if not w.censored]

    @property
    def censored(self) -> int:
        return sum(w.censored for w in self.workers)

    @property
    def avg_steps(self) -> Optional[float]:
        """Mean steps to target over the seeds that reached it; None if none did."""
        return statistics.mean(self.converged) if self.converged else None

    @property
    def wall(self) -> Optional[float]:
        """wall to target = avg steps to target x step_time (docs/design.md §1)."""
        if self.avg_steps is None or self.step_time is None:
            return None
        return self.avg_steps * self.step_time


def cell_outcome(records_by_seed: dict, target: float, window: int, warmup: int) -> CellOutcome:
    workers = [worker_outcome(seed, recs, target, window, warmup) for seed, recs in sorted(records_by_seed.items())]
    per_worker = worker_steady_step_times(records_by_seed, warmup)
    return CellOutcome(workers=workers, worker_step_times=dict(sorted(per_worker.items())))


# ---- censoring-aware estimates and their intervals (docs/design.md §1, definition 2) ----
#
# Steps to target is a time-to-event: a seed that stopped short of the target is
# right-censored at the steps it ran. Averaging only the seeds that reached the
# target makes a partly censored cell look faster than it is. The estimate here is
# the restricted mean up to the horizon ``max_steps`` (RMST): the area under the
# Kaplan-Meier survival curve from 0 to the horizon, so a censored seed counts as
# surviving to the horizon. With no censoring it is the plain mean; with all seeds
# censored at the horizon it is the horizon itself, which says only "not reached".
#
# Intervals are percentile bootstraps over seeds with a fixed seed, so a table is
# reproducible bit for bit. With two seeds per cell a bootstrap can only put the
# interval between (roughly) the two seeds: it is crude and the text says so.

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240607  # fixed: the same records give the same intervals on every machine
Z_95 = 1.959964  # two-sided 95% normal quantile, for the seeds-needed estimate


def kaplan_meier(observations) -> list:
    """Kaplan-Meier survival curve of (time, reached) pairs: [(time, S just after time), ...].

    ``reached`` False means censored at ``time``. At a tie, events come before
    censorings (the usual convention: a run censored at t was still at risk at t).
    """
    data = sorted(observations, key=lambda o: (o[0], not o[1]))
    at_risk, survival, curve = len(data), 1.0, []
    index = 0
    while index < len(data):
        time = data[index][0]
        events = removed = 0
        while index < len(data) and data[index][0] == time:
            events += bool(data[index][1])
            removed += 1
            index += 1
        if events:
            survival *= 1.0 - events / at_risk
            curve.append((time, survival))
        at_risk -= removed
    return curve


def restricted_mean(observations, horizon: float) -> float:
    """Area under the Kaplan-Meier curve from 0 to ``horizon`` (restricted mean time to the event)."""
    area, previous_time, survival = 0.0, 0.0, 1.0
    for time, after in kaplan_meier(observations):
        if time >= horizon:
            break
        area += (time - previous_time) * survival
        previous_time, survival = time, after
    return area + (horizon - previous_time) * survival


def _percentile_interval(values: list) -> tuple:
    """The central CONFIDENCE share of ``values`` (linear interpolation between order statistics)."""
    ordered = sorted(values)
    tail = (1.0 - CONFIDENCE) / 2

    def quantile(q):
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return quantile(tail), quantile(1.0 - tail)


def _resample(rng: random.Random, observations: list) -> list:
    return rng.choices(observations, k=len(observations))


def bootstrap_interval(observations, statistic, seed: int = BOOTSTRAP_SEED,
                       resamples: int = BOOTSTRAP_RESAMPLES) -> tuple:
    """95% percentile bootstrap interval of ``statistic(observations)``, resampling seeds."""
    observations = list(observations)
    rng = random.Random(seed)
    return _percentile_interval([statistic(_resample(rng, observations)) for _ in range(resamples)])


def bootstrap_two_sample(first, second, statistic, seed: int = BOOTSTRAP_SEED,
                         resamples: int = BOOTSTRAP_RESAMPLES) -> tuple:
    """95% percentile interval of ``statistic(first', second')``, each sample's seeds resampled independently."""
    first, second = list(first), list(second)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        a = _resample(rng, first)
        values.append(statistic(a, _resample(rng, second)))
    return _percentile_interval(values)


@dataclass
class StepsEstimate:
    """Censoring-aware steps to target of one cell, with its 95% bootstrap interval."""

    value: float  # restricted mean up to ``horizon`` (Kaplan-Meier)
    low: float
    high: float
    horizon: int
    n: int
    censored: int

    @property
    def reached(self) -> bool:
        """False when no seed reached the target: the estimate is the horizon itself, a bound."""
        return self.censored < self.n

    @property
    def interval_note(self):
        """Why the interval says little, or None: one seed, all seeds censored, or all seeds equal."""
        if not self.reached:
            return "all censored"
        if self.n < 2:
            return "one seed"
        if self.low == self.high:
            return "seeds equal"
        return None


def seed_observations(workers, horizon: int) -> list:
    """(steps, reached) per seed: steps to target, or the steps run (at most the horizon) when censored."""
    return [
        (w.steps_to_target, True) if not w.censored else (min(w.steps_run, horizon), False)
        for w in workers
    ]


def steps_estimate(observations, horizon: int) -> StepsEstimate:
    """Restricted mean steps to target up to ``horizon`` with its 95% bootstrap interval over seeds."""
    observations = list(observations)
    if not observations:
        raise ValueError("no seed to estimate steps to target from")
    low, high = bootstrap_interval(observations, lambda sample: restricted_mean(sample, horizon))
    return StepsEstimate(
        value=restricted_mean(observations, horizon), low=low, high=high, horizon=horizon,
        n=len(observations), censored=sum(not reached for _, reached in observations),
    )


def wall_interval(estimate: StepsEstimate, step_time) -> Optional[tuple]:
    """(wall, low, high) to target: steps x step time, the step time taken as measured; None without both."""
    if step_time is None or not estimate.reached:
        return None
    return estimate.value * step_time, estimate.low * step_time, estimate.high * step_time


def speedup_interval(base_obs, base_step_time, cell_obs, cell_step_time, horizon: int) -> Optional[tuple]:
    """(speedup, low, high): base wall / cell wall, bootstrapping both cells' seeds independently.

    None when a step time is missing or either cell has no seed that reached the target.
    """
    base_obs, cell_obs = list(base_obs), list(cell_obs)
    if base_step_time is None or cell_step_time is None:
        return None
    if not any(r for _, r in base_obs) or not any(r for _, r in cell_obs):
        return None

    def ratio(base, cell):
        return (restricted_mean(base, horizon) * base_step_time) / (restricted_mean(cell, horizon) * cell_step_time)

    low, high = bootstrap_two_sample(base_obs, cell_obs, ratio)
    return ratio(base_obs, cell_obs), low, high


# ---- comparing two cells: a verdict per claim ----


@dataclass
class Comparison:
    """``first`` minus ``second`` (steps, or wall in seconds) with its 95% bootstrap interval."""

    difference: float
    low: float
    high: float
    n_first: int
    n_second: int
    seeds_needed: Optional[int]  # per cell, from the observed spread; None: no difference observed

    @property
    def resolved(self) -> bool:
        """The 95% interval of the difference excludes zero."""
        return self.low > 0 or self.high < 0


def seeds_to_resolve(first_values, second_values, difference: float) -> Optional[int]:
    """Seeds per cell at which the observed difference would clear a 95% normal test.

    n such that 1.96 * sqrt((sd1^2 + sd2^2) / n) < |difference|, with sd the seeds'
    sample standard deviations (with equal spreads: 1.96 * sd * sqrt(2 / n)). None
    when the difference is zero (no number of seeds resolves it); 2 at least,
    since one seed shows no spread.
    """
    if difference == 0:
        return None
    variance = sum(_sample_variance(values) for values in (first_values, second_values))
    needed = Z_95 ** 2 * variance / difference ** 2
    # the smallest integer strictly above ``needed``
    return max(2, math.floor(needed) + 1)


def _sample_variance(values) -> float:
    values = list(values)
    return statistics.variance(values) if len(values) > 1 else 0.0


def compare_steps(first_obs, second_obs, horizon: int, first_step_time: float = 1.0,
                  second_step_time: float = 1.0) -> Comparison:
    """Restricted mean of ``first`` minus that of ``second``, each scaled by its step time.

    Step times of 1 compare steps; the measured step times compare wall to target.
    The seeds of the two cells are resampled independently.
    """
    first_obs, second_obs = list(first_obs), list(second_obs)

    def difference(a, b):
        return restricted_mean(a, horizon) * first_step_time - restricted_mean(b, horizon) * second_step_time

    low, high = bootstrap_two_sample(first_obs, second_obs, difference)
    observed = difference(first_obs, second_obs)
    # per seed, min(steps, horizon): what each seed adds to the restricted mean when censoring is at the horizon
    first_values = [min(t, horizon) * first_step_time for t, _ in first_obs]
    second_values = [min(t, horizon) * second_step_time for t, _ in second_obs]
    return Comparison(
        difference=observed, low=low, high=high, n_first=len(first_obs), n_second=len(second_obs),
        seeds_needed=seeds_to_resolve(first_values, second_values, observed),
    )


def format_seed_outcomes(observations) -> str:
    """'220 >300': steps to target per seed, '>N' for a seed censored after N steps."""
    return " ".join(str(t) if reached else f">{t}" for t, reached in observations)


def parse_seed_outcomes(text: str) -> list:
    """The inverse of ``format_seed_outcomes``."""
    return [(int(part[1:]), False) if part.startswith(">") else (int(part), True) for part in str(text).split()]

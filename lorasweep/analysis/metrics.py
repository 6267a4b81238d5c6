"""The one place that decides steps-to-target and step time.

Both are computed from the per-step records a worker writes (one JSON object per
step), so a new definition re-aggregates old runs without retraining. Steps to
target applies the stopping rule a worker stops by (``lorasweep.definitions.stopping``),
so that the two can never disagree. Pure Python: tables, plots and the launcher call in here.
"""

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from ..definitions.stopping import steps_to_target, trailing_means
from . import noise_scale


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
    early_reward: Optional[float] = None  # mean batch reward over the first early_steps steps; None: fewer run
    # the noise scale's per-update means (mean |G|^2, mean tr S) by phase (early, late, all); None: not recorded
    noise: Optional[dict] = None

    @property
    def censored(self) -> bool:
        return self.steps_to_target is None


def early_reward(rewards: Sequence[float], early_steps: Optional[int]) -> Optional[float]:
    """Mean batch-mean reward over steps 1..early_steps (docs/numbers.md, definition 7); None with fewer steps.

    Every step of the stretch counts, so the per-step noise averages out: a
    lower-variance reading of how fast a run learns than the one crossing step.
    """
    if not early_steps or len(rewards) < early_steps:
        return None
    return math.fsum(rewards[:early_steps]) / early_steps


def _noise(records) -> Optional[dict]:
    """(mean |G|^2, mean tr S) by phase, None for a phase without a recorded update; None for a run without any."""
    phases = {phase: noise_scale.run_means(records, phase) for phase in noise_scale.PHASES}
    if phases["all"] is None:
        return None
    return {phase: None if means is None else (means[0], means[1]) for phase, means in phases.items()}


def worker_outcome(seed: int, records: Sequence[dict], target: float, window: int, warmup: int,
                   early_steps: Optional[int] = None) -> WorkerOutcome:
    rewards = [r["reward_mean"] for r in records]
    trailing = trailing_means(rewards, window)
    return WorkerOutcome(
        seed=seed,
        steps_run=len(records),
        steps_to_target=steps_to_target(rewards, target, window),
        final_trailing_reward=trailing[-1] if trailing else None,
        median_step_s=median_step_time(records, warmup),
        early_reward=early_reward(rewards, early_steps),
        noise=_noise(records),
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


def cell_outcome(records_by_seed: dict, target: float, window: int, warmup: int,
                 early_steps: Optional[int] = None) -> CellOutcome:
    workers = [worker_outcome(seed, recs, target, window, warmup, early_steps)
               for seed, recs in sorted(records_by_seed.items())]
    per_worker = worker_steady_step_times(records_by_seed, warmup)
    return CellOutcome(workers=workers, worker_step_times=dict(sorted(per_worker.items())))


# ---- censoring-aware estimates and their intervals (docs/numbers.md, definition 2) ----
#
# Steps to target is a time-to-event: a seed that stopped short of the target is
# right-censored at the steps it ran, which is max_steps (the horizon), since a run
# toward the target runs until it gets there or to max_steps. The estimate is the
# restricted mean up to the horizon (RMST): the area under the Kaplan-Meier survival
# curve from 0 to the horizon (scipy.stats.ecdf). With every censoring at the
# horizon it is the plain mean of min(steps, horizon) over seeds, so each seed's
# capped count is fully observed and the seeds' values are an ordinary sample:
# ``lorasweep.analysis.inference`` gives its intervals and the comparisons.


def restricted_mean(observations, horizon: float) -> float:
    """Area under the Kaplan-Meier curve of (steps, reached) pairs from 0 to ``horizon`` (scipy.stats.ecdf)."""
    from scipy import stats

    observations = list(observations)
    if not observations:
        raise ValueError("no seed to estimate steps to target from")
    reached = [float(t) for t, r in observations if r]
    censored = [float(t) for t, r in observations if not r]
    if not reached:
        return float(min(horizon, min(censored)))  # nobody reached it before the first censoring
    curve = stats.ecdf(stats.CensoredData(uncensored=reached, right=censored)).sf
    area, previous, survival = 0.0, 0.0, 1.0
    for time, after in zip(curve.quantiles, curve.probabilities):
        if time >= horizon:
            break
        area += (time - previous) * survival
        previous, survival = time, after
    return float(area + (horizon - previous) * survival)


def capped_steps(observations, horizon: int) -> list:
    """min(steps, horizon) per seed: what each seed adds to the restricted mean.

    Valid only when every censored seed ran to the horizon (the worker's own rule);
    a seed censored earlier has no capped count, and the error says which.
    """
    values = []
    for steps, reached in observations:
        if not reached and steps < horizon:
            raise ValueError(f"a seed stopped at step {steps} without reaching the target, short of max_steps "
                             f"({horizon}): its records are incomplete")
        values.append(min(steps, horizon))
    return values


@dataclass
class StepsEstimate:
    """Censoring-aware steps to target of one cell, with its 95% interval (None where there is none)."""

    value: float  # restricted mean up to ``horizon`` (Kaplan-Meier)
    low: Optional[float]
    high: Optional[float]
    horizon: int
    n: int
    censored: int
    note: Optional[str] = None  # why there is no interval: one seed, seeds equal

    @property
    def reached(self) -> bool:
        """False when no seed reached the target: the estimate is the horizon itself, a bound."""
        return self.censored < self.n

    @property
    def interval_note(self):
        """Why the interval says nothing, or None: all seeds censored, one seed, or all seeds equal."""
        if not self.reached:
            return "all censored"
        return self.note


def seed_observations(workers, horizon: int) -> list:
    """(steps, reached) per seed: steps to target, or the steps run (at most the horizon) when censored."""
    return [
        (w.steps_to_target, True) if not w.censored else (min(w.steps_run, horizon), False)
        for w in workers
    ]


def steps_estimate(observations, horizon: int) -> StepsEstimate:
    """Restricted mean steps to target up to ``horizon``, with the Student-t interval of the seeds' capped counts."""
    from . import inference

    observations = list(observations)
    capped = capped_steps(observations, horizon)
    interval = inference.mean_interval(capped, lower=1, upper=horizon)
    return StepsEstimate(
        value=restricted_mean(observations, horizon), low=interval.low, high=interval.high, horizon=horizon,
        n=len(observations), censored=sum(not reached for _, reached in observations), note=interval.note,
    )


def wall_interval(estimate: StepsEstimate, step_time) -> Optional[tuple]:
    """(wall, low, high) to target: steps x step time, the step time taken as measured; None without both.

    low and high are None when the steps have no interval.
    """
    if step_time is None or not estimate.reached:
        return None
    scaled = [None if v is None else v * step_time for v in (estimate.low, estimate.high)]
    return (estimate.value * step_time, *scaled)


def speedup_interval(base_obs, base_step_time, cell_obs, cell_step_time, horizon: int) -> Optional[tuple]:
    """(speedup, low, high): base wall / cell wall with Fieller's interval of the ratio of mean walls.

    None when a step time is missing or either cell has no seed that reached the
    target; low and high are None when the seeds cannot bound the ratio (too few, or
    too scattered, seeds: ``inference.ratio_interval``).
    """
    from . import inference

    base_obs, cell_obs = list(base_obs), list(cell_obs)
    if base_step_time is None or cell_step_time is None:
        return None
    if not any(r for _, r in base_obs) or not any(r for _, r in cell_obs):
        return None
    base = [v * base_step_time for v in capped_steps(base_obs, horizon)]
    cell = [v * cell_step_time for v in capped_steps(cell_obs, horizon)]
    speedup, low, high = inference.ratio_interval(base, cell)
    if high is None or not math.isfinite(high):
        return speedup, None, None
    return speedup, low, high


def early_rewards(workers) -> list:
    """Each seed's mean batch reward over its first ``early_steps`` steps (None for a seed with fewer)."""
    return [w.early_reward for w in workers]


def format_seed_outcomes(observations) -> str:
    """'220 >300': steps to target per seed, '>N' for a seed censored after N steps."""
    return " ".join(str(t) if reached else f">{t}" for t, reached in observations)


def parse_seed_outcomes(text: str) -> list:
    """The inverse of ``format_seed_outcomes``."""
    return [(int(part[1:]), False) if part.startswith(">") else (int(part), True) for part in str(text).split()]


def format_seed_values(values) -> str:
    """'0.4521 0.4807': one value per seed, as the tables' CSV records them."""
    return " ".join(f"{v:.6g}" for v in values)


def parse_seed_values(text) -> list:
    """The inverse of ``format_seed_values``; [] for a missing (NaN) field."""
    return [float(part) for part in str(text).split()] if isinstance(text, str) else []

"""The one place that decides steps-to-target and step time.

Both are computed from the per-step records a worker writes (one JSON object per
step), so a new definition re-aggregates old runs without retraining. Pure
Python: tables, plots and the worker's own stopping test all call in here.
"""

import statistics
from dataclasses import dataclass
from typing import Optional, Sequence


def trailing_means(rewards: Sequence[float], window: int) -> list:
    """Mean of the last ``window`` batch-mean rewards at each step; None until the window is full."""
    means, total = [], 0.0
    for i, reward in enumerate(rewards):
        total += reward
        if i >= window:
            total -= rewards[i - window]
        means.append(total / window if i + 1 >= window else None)
    return means


def steps_to_target(rewards: Sequence[float], target: float, window: int) -> Optional[int]:
    """First step (1-based) whose trailing mean reaches ``target``; None if none does (censored)."""
    for step, mean in enumerate(trailing_means(rewards, window), start=1):
        if mean is not None and mean >= target:
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

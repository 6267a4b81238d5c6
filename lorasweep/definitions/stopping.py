"""When a run has reached its target and when it stops: the one rule that every stage applies.

A worker and a fused pack feed it each step's batch-mean reward to know when to
stop; ``lorasweep.analysis.metrics`` feeds it the recorded rewards to count steps to
target (docs/numbers.md, definition 1). Being the same code, a worker that stopped
at its target is never called censored by the tables. Pure Python, importable by
every stage.
"""

import math
from collections import deque
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


class StopRule:
    """When a run toward the target stops: once the target has been reached and at least ``min_steps`` have run.

    ``min_steps`` (training.early_steps) keeps every run going for the stretch over
    which the early reward is measured (definition 7); it never changes the step at
    which the target was first reached, which is what the tables count.
    """

    def __init__(self, target: float, window: int, min_steps: int = 0):
        self.tracker = TargetTracker(target, window)
        self.min_steps = min_steps or 0
        self.steps = 0
        self.reached_at = None  # the first step whose trailing mean reached the target

    def add(self, reward: float) -> bool:
        """Add one step's batch-mean reward; True when the run should stop after this step."""
        self.steps += 1
        if self.tracker.add(reward) and self.reached_at is None:
            self.reached_at = self.steps
        return self.reached and self.steps >= self.min_steps

    @property
    def reached(self) -> bool:
        return self.reached_at is not None

    @property
    def trailing(self):
        return self.tracker.trailing


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

"""Where a running worker stands, from the per-step records it is still writing.

Shared by the cell launcher (its periodic progress line) and ``python -m lorasweep
status``. Reads files only and imports no torch, so a status query stays fast.
"""

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

RECENT_STEPS = 10  # the ETA uses the median of this many latest steps: it follows a slowdown, not one outlier


def read_records(path) -> list:
    """The complete records of a per-step file that may be mid-write; a torn last line is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # the line the worker is writing right now
    return records


def worker_records_path(steps_dir: Path, seed: int) -> Optional[Path]:
    """The worker's records: the final file once it finished, else the one it is writing; None before its first step."""
    for name in (f"seed{seed}.jsonl", f"seed{seed}.jsonl.partial"):
        if (steps_dir / name).exists():
            return steps_dir / name
    return None


@dataclass
class WorkerProgress:
    seed: int
    step: int  # steps recorded so far
    total: int  # steps it runs at most
    reward: Optional[float]  # the latest batch-mean reward
    trailing: Optional[float]  # mean of the last ``window`` rewards; None until the window is full
    step_s: Optional[float]  # median of the latest steps' wall time
    finished: bool  # its records are final (it stopped: target reached, or all steps run)
    reached: bool  # its trailing reward reached the target
    last_record_at: Optional[float]  # wall-clock time of its latest record

    @property
    def eta_s(self) -> Optional[float]:
        """Seconds left at most: the steps it may still run at its recent pace (it stops sooner at the target)."""
        if self.finished or self.reached:
            return 0.0
        if self.step_s is None:
            return None
        return (self.total - self.step) * self.step_s


def worker_progress(seed: int, records: list, total: int, window: Optional[int], target: Optional[float],
                    finished: bool = False) -> WorkerProgress:
    """``target`` None: a fixed-step run (concurrency), where reaching a reward is not the question.

    ``window`` None: no trailing mean (a fixed-step cell's spec has no window).
    """
    rewards = [r["reward_mean"] for r in records]
    trailing = statistics.fmean(rewards[-window:]) if window is not None and len(rewards) >= window else None
    recent = [r["step_s"] for r in records[-RECENT_STEPS:]]
    return WorkerProgress(
        seed=seed,
        step=len(records),
        total=total,
        reward=rewards[-1] if rewards else None,
        trailing=trailing,
        step_s=statistics.median(recent) if recent else None,
        finished=finished,
        reached=target is not None and trailing is not None and trailing >= target,
        last_record_at=records[-1].get("t_end") if records else None,
    )


def duration(seconds: Optional[float]) -> str:
    """12s, 3m05s, 1h02m; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe(progress: WorkerProgress, window: Optional[int]) -> str:
    """One worker's state in words: step, latest and trailing reward, pace, ETA."""
    p = progress
    if p.step == 0:
        return f"seed {p.seed}: no step yet"
    trailing = "n/a" if p.trailing is None else f"{p.trailing:.3f}"
    trailing = "" if window is None else f" (trailing {window}: {trailing})"
    text = f"seed {p.seed}: step {p.step}/{p.total}, reward {p.reward:.3f}{trailing}, {p.step_s:.2f} s/step"
    if p.reached:
        return text + ", reached the target"
    if p.finished:
        return text + ", finished"
    return text + f", ETA ≤ {duration(p.eta_s)}"

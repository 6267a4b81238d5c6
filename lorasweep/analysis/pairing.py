"""Are seed k's runs of two cells correlated? The measurement behind the choice of an unpaired analysis.

Seed k of every cell of one rank starts from the same LoRA initialisation and draws
its prompt order and its sampling from generators seeded alike, so seed k's runs of
two cells could be positively correlated, and a paired test (the seeds' differences)
could then resolve a claim with fewer seeds. This module measures, from the tables'
per-seed columns, the correlation of seed k's values between the two cells of each
claim (docs/numbers.md, "Inference", gives the figures and the decision).
"""

import math

import numpy as np
from scipy import stats

from . import metrics
from .. import formatting


def _per_seed(row: dict, statistic: str) -> list:
    if statistic == "early":
        return metrics.parse_seed_values(row.get("early_per_seed"))
    return metrics.capped_steps(metrics.parse_seed_outcomes(row["steps_per_seed"]), int(row["horizon"]))


def claim_pairs(rows) -> list:
    """(label, first row, second row) for the two cells of every verdict claim, per rank."""
    rows = formatting.records(rows)
    pairs = []
    for rank in sorted({r["rank"] for r in rows}):
        scaled = sorted((r for r in rows if r["rank"] == rank and not r["is_control"]), key=lambda r: r["batch_size"])
        if len(scaled) >= 2:
            pairs.append((f"rank {rank}: bs {scaled[0]['batch_size']} vs bs {scaled[-1]['batch_size']}",
                          scaled[0], scaled[-1]))
        twins = {r["batch_size"]: r for r in scaled}
        for control in (r for r in rows if r["rank"] == rank and r["is_control"]):
            if control["batch_size"] in twins:
                pairs.append((f"rank {rank}: control vs scaled at bs {control['batch_size']}", control,
                              twins[control["batch_size"]]))
    return pairs


def seed_correlations(rows, statistic: str = "steps") -> list:
    """(label, Pearson r, n) of seed k's values between the two cells of each claim (None: no spread)."""
    out = []
    for label, first, second in claim_pairs(rows):
        x, y = _per_seed(first, statistic), _per_seed(second, statistic)
        if len(x) != len(y) or len(x) < 3:
            continue
        if np.std(x) == 0 or np.std(y) == 0:
            out.append((label, None, len(x)))
            continue
        out.append((label, float(stats.pearsonr(x, y).statistic), len(x)))
    return out


def pooled_correlation(correlations: list) -> tuple:
    """Fisher-z mean of the claims' correlations with its 95% interval: (r, low, high), or None."""
    usable = [(r, n) for _, r, n in correlations if r is not None and n > 3 and abs(r) < 1]
    if not usable:
        return None
    weights = np.array([n - 3 for _, n in usable], dtype=float)
    z = np.array([math.atanh(r) for r, _ in usable])
    mean = float((weights * z).sum() / weights.sum())
    half = 1.959964 / math.sqrt(weights.sum())
    return math.tanh(mean), math.tanh(mean - half), math.tanh(mean + half)

"""The gradient noise scale of a run, from the two squared gradient norms its updates recorded.

McCandlish et al., "An Empirical Model of Large-Batch Training" (2018), Appendix A.
Each update with the noise scale on records |g_small|^2 (the gradient of the first half
of its groups) and |g_big|^2 (of all of them), with the two batch sizes in groups
(docs/numbers.md, definition 8). Per update, unbiased estimates of the true gradient's
squared norm and of the per-example covariance's trace are

    |G|^2  ~  (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small)
    tr(S)  ~  (|g_small|^2 - |g_big|^2) / (1 / B_small - 1 / B_big)

each noisy and of either sign. With a few groups per step the noise dominates one
update's |G|^2, so the estimates are averaged over many updates before their ratio is
taken: B_simple = mean tr(S) / mean |G|^2, over a run's updates (or a phase of them,
its first or second half), and over the seeds of cells (a Fieller interval over seeds,
``pooled``). The paper's exponential moving averages serve the same end over long runs;
here runs have tens of updates. A ratio whose mean |G|^2 is not above 0 has no value:
the signal is not yet distinguishable from the noise, B_noise is large.

The model S(B) = S_min (1 + B_noise / B) predicts the ratio of steps to a target
between two batch sizes, (1 + B_noise / B1) / (1 + B_noise / B2). Pure Python; no torch.
"""

import math
from typing import Optional, Sequence

from scipy import stats

PHASES = ("early", "late", "all")


def step_estimates(record: dict) -> Optional[tuple]:
    """(|G|^2, tr S) estimated from one update's record; None when it recorded no noise scale."""
    small, big = record.get("grad_sq_small"), record.get("grad_sq_big")
    b_small, b_big = record.get("groups_small"), record.get("groups_big")
    if small is None or big is None or not b_small or not b_big or b_big <= b_small:
        return None
    g2 = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


def phase_records(records: Sequence[dict], phase: str) -> list:
    """The records of a phase: the run's first half of steps (early), its second (late), or all."""
    half = len(records) // 2
    return {"early": list(records[:half]), "late": list(records[half:]), "all": list(records)}[phase]


def run_means(records: Sequence[dict], phase: str = "all") -> Optional[tuple]:
    """(mean |G|^2, mean tr S, updates) over the recorded updates of a phase of one run; None with none."""
    estimates = [e for e in (step_estimates(r) for r in phase_records(records, phase)) if e is not None]
    if not estimates:
        return None
    return (sum(g for g, _ in estimates) / len(estimates), sum(t for _, t in estimates) / len(estimates),
            len(estimates))


def ratio(g2_mean: float, trace_mean: float) -> Optional[float]:
    """B_simple = tr S / |G|^2, None while the averaged |G|^2 is not above 0."""
    return trace_mean / g2_mean if g2_mean > 0 else None


def cumulative_series(records: Sequence[dict]) -> list:
    """B_simple after each step from the means over every update so far (None while undefined), for the plot."""
    g_sum = t_sum = 0.0
    series = []
    for record in records:
        estimates = step_estimates(record)
        if estimates is not None:
            g_sum, t_sum = g_sum + estimates[0], t_sum + estimates[1]
        series.append(ratio(g_sum, t_sum))
    return series


def pooled(pairs: Sequence[tuple], confidence: float = 0.95) -> Optional[dict]:
    """B_noise from per-seed (mean |G|^2, mean tr S) pairs: the ratio of their means over seeds, with Fieller's
    interval for a ratio of two paired means.

    {"value", "low", "high", "n"}: ``value`` None when the mean |G|^2 is not above 0;
    ``high`` inf when the seeds cannot bound the ratio above (|G|^2 not clearly above 0:
    the noise scale is large); low and high None from one seed.
    """
    pairs = [(g, t) for g, t in pairs if math.isfinite(g) and math.isfinite(t)]
    n = len(pairs)
    if n == 0:
        return None
    mg, mt = sum(g for g, _ in pairs) / n, sum(t for _, t in pairs) / n
    out = {"value": ratio(mg, mt), "low": None, "high": None, "n": n}
    if n < 2:
        return out
    vgg = sum((g - mg) ** 2 for g, _ in pairs) / (n - 1) / n
    vtt = sum((t - mt) ** 2 for _, t in pairs) / (n - 1) / n
    vgt = sum((g - mg) * (t - mt) for g, t in pairs) / (n - 1) / n
    q = stats.t.ppf(0.5 + confidence / 2, n - 1) ** 2
    # the r with (mt - r mg)^2 <= q (vtt - 2 r vgt + r^2 vgg): a r^2 + b r + c <= 0
    a, b, c = mg * mg - q * vgg, -2 * (mt * mg - q * vgt), mt * mt - q * vtt
    disc = b * b - 4 * a * c
    if a > 0 and disc >= 0:
        root = math.sqrt(disc)
        out["low"], out["high"] = max(0.0, (-b - root) / (2 * a)), (-b + root) / (2 * a)
    else:  # the mean |G|^2 is not clearly above 0: the set is unbounded above; its lower end, where it has one
        low = 0.0
        if a < 0 and disc >= 0:
            r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
            low = r2 if r1 < 0 else 0.0  # the set is (-inf, r1] and [r2, inf); a noise scale is not negative
        out["low"], out["high"] = max(0.0, low), math.inf
    return out


def predicted_step_ratio(b_noise: float, batch_1: float, batch_2: float) -> float:
    """(1 + B_noise / B1) / (1 + B_noise / B2): steps at B1 over steps at B2, B in groups; B_noise inf gives B2 / B1."""
    if math.isinf(b_noise):
        return batch_2 / batch_1
    return (1 + b_noise / batch_1) / (1 + b_noise / batch_2)

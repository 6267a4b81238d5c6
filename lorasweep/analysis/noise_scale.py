"""The gradient noise scale of a run, from the two squared gradient norms its updates recorded.

McCandlish et al., "An Empirical Model of Large-Batch Training" (2018), Appendix A.
Each update with the noise scale on records |g_small|^2 (the gradient of the first half
of its groups) and |g_big|^2 (of all of them), with the two batch sizes in groups
(docs/numbers.md, definition 8). Per update, unbiased estimates of the true gradient's
squared norm and of the per-example covariance's trace are

    |G|^2  ~  (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small)
    tr(S)  ~  (|g_small|^2 - |g_big|^2) / (1 / B_small - 1 / B_big)

each noisy and either sign; as the paper does, each is smoothed by an exponential
moving average over steps and their ratio is the noise scale B_simple = tr(S) / |G|^2,
in groups. It predicts the steps to a target at batch size B as S(B) = S_min (1 + B_noise / B),
so the ratio of steps between two batch sizes is (1 + B_noise / B1) / (1 + B_noise / B2).
Pure Python over the per-step records; no torch.
"""

import math
from typing import Optional, Sequence

# weight of the past in the moving averages of both estimates (about a 10-step memory)
EMA_DECAY = 0.9


def step_estimates(record: dict) -> Optional[tuple]:
    """(|G|^2, tr S) estimated from one update's record; None when it recorded no noise scale."""
    small, big = record.get("grad_sq_small"), record.get("grad_sq_big")
    b_small, b_big = record.get("groups_small"), record.get("groups_big")
    if small is None or big is None or not b_small or not b_big or b_big <= b_small:
        return None
    g2 = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


def noise_scale_series(records: Sequence[dict], decay: float = EMA_DECAY) -> list:
    """B_simple after each step: the ratio of the two estimates' moving averages (None while undefined).

    Undefined before the first update that recorded the norms, and while the averaged
    |G|^2 is not positive (no signal yet to compare the noise with).
    """
    g2_avg = trace_avg = None
    series = []
    for record in records:
        estimates = step_estimates(record)
        if estimates is not None:
            g2, trace = estimates
            g2_avg = g2 if g2_avg is None else decay * g2_avg + (1 - decay) * g2
            trace_avg = trace if trace_avg is None else decay * trace_avg + (1 - decay) * trace
        series.append(trace_avg / g2_avg if g2_avg is not None and g2_avg > 0 else None)
    return series


def noise_scale_at(records: Sequence[dict], step: int) -> Optional[float]:
    """B_simple after ``step`` (1-based; the last step when the run has fewer), None where undefined."""
    series = noise_scale_series(records)
    if not series:
        return None
    value = series[min(step, len(series)) - 1]
    return value if value is not None and math.isfinite(value) else None


def predicted_step_ratio(b_noise: float, batch_1: float, batch_2: float) -> float:
    """(1 + B_noise / B1) / (1 + B_noise / B2): steps at B1 over steps at B2, B in groups."""
    return (1 + b_noise / batch_1) / (1 + b_noise / batch_2)

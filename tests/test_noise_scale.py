"""The gradient noise scale: the estimator on a problem with a known answer, and the worker's two halves."""

import math

import numpy as np
import pytest
import torch

from lorasweep.analysis import noise_scale, recommend
from lorasweep.training import grpo


def least_squares_b_simple(dim: int, sigma: float, delta: np.ndarray) -> float:
    """tr(Sigma) / |G|^2 of the per-example gradient x (x . delta - eps), x ~ N(0, I), eps ~ N(0, sigma^2).

    G = delta; E|g|^2 = (d + 2)|delta|^2 + d sigma^2 (Gaussian fourth moments), so
    tr Sigma = (d + 1)|delta|^2 + d sigma^2.
    """
    d2 = float(delta @ delta)
    return ((dim + 1) * d2 + dim * sigma ** 2) / d2


def test_the_estimator_recovers_the_noise_scale_of_least_squares_within_15_percent():
    # the worker's own path: a loss per half of the batch (its own mean), weighted as the full batch's
    # loss weighs them, two backwards, then the records' moving averages
    torch.manual_seed(0)
    dim, sigma, examples = 8, 0.5, 64
    w_star = torch.randn(dim)
    w = torch.nn.Parameter(w_star + 0.3 * torch.randn(dim))
    records = []
    for _ in range(3000):
        x = torch.randn(examples, dim)
        y = x @ w_star + sigma * torch.randn(examples)
        halves = grpo.group_halves(examples, 1)  # each example its own group
        losses = [0.5 * ((x[rows] @ w - y[rows]) ** 2).mean() for rows in halves]
        w_a, w_b = grpo.half_weights("grpo", torch.ones(len(halves[0]), 1), torch.ones(len(halves[1]), 1))
        [(small, big)] = grpo.backward_in_two_halves([losses[0]], [losses[1]], [w_a], [w_b], [[w]])
        records.append({"grad_sq_small": small, "grad_sq_big": big, "groups_small": len(halves[0]),
                        "groups_big": examples})
        w.grad = None
    truth = least_squares_b_simple(dim, sigma, (w - w_star).detach().numpy())
    # one run's means over its updates; and 10 "seeds" of 300 updates each pooled with Fieller's interval
    g2, trace, count = noise_scale.run_means(records)
    assert count == 3000 and noise_scale.ratio(g2, trace) == pytest.approx(truth, rel=0.15)
    seeds = [noise_scale.run_means(records[i:i + 300])[:2] for i in range(0, 3000, 300)]
    pooled = noise_scale.pooled(seeds)
    assert pooled["value"] == pytest.approx(truth, rel=0.15) and pooled["low"] < truth < pooled["high"]
    assert pooled["n"] == 10


def test_the_two_halves_give_the_full_batchs_loss_and_gradient():
    from lorasweep.training.decoder import decoder_weights
    from lorasweep.training.engines import FastEngine
    from lorasweep.training.sampler import sample_dropping
    from lorasweep.training.worker import policy_loss
    from test_engines import tiny

    model = tiny("llama")
    engine = FastEngine(model)
    prompts = torch.randint(2, 60, (4, 5)).repeat_interleave(4, dim=0)  # 4 groups of 4
    samples = sample_dropping(decoder_weights(model), prompts, 10, 1, 1.0, 1.1, torch.Generator().manual_seed(0))
    advantages = grpo.group_advantages(torch.rand(16), 4)
    params = [p for p in model.parameters() if p.requires_grad]
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        t = {"temperature": 1.0, "beta": 0.02, "loss_type": loss_type, "max_new_tokens": 10}
        model.zero_grad()
        weights = engine.weights()
        full, full_kl = policy_loss(engine, weights, prompts, samples, advantages, t)
        full.backward()
        expected = [p.grad.clone() for p in params]
        model.zero_grad()
        weights = engine.weights()
        halves = grpo.group_halves(16, 4)
        (la, ka), (lb, kb) = (policy_loss(engine, weights, prompts, samples, advantages, t, rows) for rows in halves)
        wa, wb = grpo.half_weights(loss_type, samples.mask[halves[0]], samples.mask[halves[1]])
        [(small, big)] = grpo.backward_in_two_halves([la], [lb], [wa], [wb], [params])
        assert float(wa * la + wb * lb) == pytest.approx(float(full), rel=1e-6, abs=1e-9), loss_type
        for got, want in zip(params, expected):
            assert torch.allclose(got.grad, want, atol=1e-7), loss_type
        assert big == pytest.approx(sum(float(g.double().pow(2).sum()) for g in expected), rel=1e-6)
        assert small > 0


def test_one_group_has_no_halves_and_halves_split_at_a_group():
    assert grpo.group_halves(8, 8) is None
    a, b = grpo.group_halves(24, 8)  # 3 groups: the first one, then the other two
    assert a.tolist() == list(range(8)) and b.tolist() == list(range(8, 24))


def test_every_nth_update_records_the_noise_scale_from_the_first():
    assert [step for step in range(1, 11) if grpo.noise_scale_step({"noise_scale": 4}, step)] == [1, 5, 9]
    assert all(grpo.noise_scale_step({"noise_scale": 1}, step) for step in range(1, 5))
    assert not any(grpo.noise_scale_step(t, step) for t in ({}, {"noise_scale": 0}, {"noise_scale": None})
                   for step in range(1, 5))


def test_the_two_batch_estimators_by_hand():
    # B_small 2, B_big 4, |g_small|^2 = 3, |g_big|^2 = 2: |G|^2 = (4*2 - 2*3)/2 = 1, S = (3 - 2)/(1/2 - 1/4) = 4
    first = {"grad_sq_small": 3.0, "grad_sq_big": 2.0, "groups_small": 2, "groups_big": 4}
    second = {"grad_sq_small": 3.5, "grad_sq_big": 3.25, "groups_small": 2, "groups_big": 4}  # |G|^2 3, S 1
    assert noise_scale.step_estimates(first) == (1.0, 4.0) and noise_scale.step_estimates(second) == (3.0, 1.0)
    assert noise_scale.step_estimates({"reward_mean": 0.5}) is None
    records = [first, {"reward_mean": 0.4}, second, {"reward_mean": 0.6}]
    # all: means (2, 2.5) -> 1.25; the first half of the steps (early): only the first update -> 4
    assert noise_scale.run_means(records) == (2.0, 2.5, 2) and noise_scale.ratio(2.0, 2.5) == 1.25
    assert noise_scale.run_means(records, "early") == (1.0, 4.0, 1)
    assert noise_scale.run_means(records, "late") == (3.0, 1.0, 1)
    assert noise_scale.cumulative_series(records) == [4.0, 4.0, 1.25, 1.25]
    # no signal yet (|G|^2 estimated (4*1 - 2*5)/2 = -3): undefined, never a division by zero
    assert noise_scale.ratio(-3.0, 8.0) is None
    assert noise_scale.run_means([{"reward_mean": 0.5}]) is None


def test_fiellers_interval_for_the_pooled_ratio_by_hand():
    # per-seed means (|G|^2, trS): ratio of the means 110/11 = 10
    pairs = [(10.0, 100.0), (11.0, 118.0), (12.0, 112.0)]
    out = noise_scale.pooled(pairs)
    assert out["value"] == pytest.approx(10.0) and out["n"] == 3 and out["low"] < 10 < out["high"]
    from scipy import stats

    q = stats.t.ppf(0.975, 2) ** 2
    vgg, vtt, vgt = 1.0 / 3, 84.0 / 3, 6.0 / 3  # variances 1 and 84, covariance 6, over n = 3
    for r in (out["low"], out["high"]):
        assert (110 - 11 * r) ** 2 == pytest.approx(q * (vtt - 2 * r * vgt + r * r * vgg))
    # |G|^2 indistinguishable from 0: bounded below only
    noisy = noise_scale.pooled([(-1.0, 10.0), (1.5, 12.0), (0.1, 11.0)])
    assert noisy["high"] == math.inf and noisy["low"] >= 0
    assert noise_scale.pooled([(1.0, 3.0)]) == {"value": 3.0, "low": None, "high": None, "n": 1}


def test_the_predicted_step_ratio():
    # B_noise 4 groups: steps(1) / steps(4) = (1 + 4) / (1 + 1) = 2.5; no noise: 1; all noise: 4
    assert noise_scale.predicted_step_ratio(4.0, 1, 4) == 2.5
    assert noise_scale.predicted_step_ratio(0.0, 1, 4) == 1.0
    assert noise_scale.predicted_step_ratio(math.inf, 1, 4) == 4.0
    assert noise_scale.predicted_step_ratio(1e9, 1, 4) == pytest.approx(4.0)


def noise_row(bs, seeds, g2=None, trace=None, is_control=False, rank=32):
    row = {"rank": rank, "batch_size": bs, "lr": 1e-3, "is_control": is_control, "steps_per_seed": seeds,
           "horizon": 300, "step_time": 0.1, "groups": bs // 8}
    for phase in ("early", "late", "all"):
        row[f"noise_{phase}_g2_per_seed"], row[f"noise_{phase}_trace_per_seed"] = g2, trace
    return row


def test_the_prediction_beside_the_measurement_by_hand():
    rows = [noise_row(8, "200 190 210 200"),  # one group a step: no noise scale
            noise_row(16, "150 140 160 150", "1 2 nan 3", "10 22 nan 28"),
            noise_row(32, "100 95 105 100", "2 2 1 3", "20 18 12 30")]
    [item] = recommend.recommend_noise(rows)
    every = item["b_noise"]["all"]
    # 7 seeds with a value: means |G|^2 2, trS 20 -> 10 groups
    assert every["value"] == pytest.approx(140 / 14) and every["n"] == 7 and item["cells"] == [16, 32]
    assert item["groups"] == [1.0, 4.0] and item["batch_sizes"] == [8, 32]
    # predicted (1 + 10) / (1 + 10/4) = 3.1429; measured 200 / 100 = 2
    assert item["predicted"][0] == pytest.approx(11 / 3.5)
    assert item["measured"][0] == pytest.approx(2.0)
    low, high = item["predicted"][1:]
    assert low < item["predicted"][0] < high <= 4.0
    text = "\n".join(recommend._noise_lines([item]))
    assert "**Noise scale, rank 32**: B_noise in prompt groups, over training 10 [95% CI" in text
    assert "predicted steps(bs 8) / steps(bs 32) = 3.14" in text and "(at most 4)" in text
    assert item["agreement"] == ("consistent" if item["measured"][2] >= low else "less than predicted")


def test_agreement_reads_the_two_intervals():
    assert recommend._agreement([2.0, 1.8, 2.2], (1.5, 1.4, 1.6)) == "less than predicted"
    assert recommend._agreement([2.0, 1.8, 2.2], (2.5, 2.3, 2.7)) == "more than predicted"
    assert recommend._agreement([2.0, 1.8, 2.2], (2.1, 1.7, 2.4)) == "consistent"
    assert recommend._agreement([2.0, 1.8, 2.2], (2.1, None, None)) == "cannot tell"


def fieller_set_by_grid(pairs, grid, confidence=0.95):
    """The r >= 0 of the grid in Fieller's set for mean tr S / mean |G|^2, evaluated pointwise."""
    from scipy import stats

    g, t = np.array(pairs, dtype=float).T
    n = len(g)
    vgg, vtt = g.var(ddof=1) / n, t.var(ddof=1) / n
    vgt = np.cov(g, t, ddof=1)[0, 1] / n
    q = stats.t.ppf(0.5 + confidence / 2, n - 1) ** 2
    return grid[(t.mean() - grid * g.mean()) ** 2 <= q * (vtt - 2 * grid * vgt + grid ** 2 * vgg)]


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3])  # |G|^2 of real gradients is tiny: no end may assume 1
@pytest.mark.parametrize("case", ["bounded", "bounded, below 1", "unbounded above", "unbounded above, from below 1",
                                  "from zero", "with a gap"])
def test_the_pooled_interval_is_fiellers_set_at_any_scale(case, scale):
    pairs = {"bounded": [(10.0, 100.0), (11.0, 118.0), (12.0, 112.0), (9.0, 95.0)],
             # |G|^2 not clearly above 0, tr S clearly is: [low, inf) with low > 0
             "unbounded above": [(-1.0, 10.0), (1.5, 12.0), (0.1, 11.0), (0.6, 10.5)],
             "unbounded above, from below 1": [(-1.0, 0.3), (1.5, 0.5), (0.1, 0.4), (0.6, 0.45)],  # from 0.279
             "bounded, below 1": [(10.0, 5.0), (11.0, 6.0), (12.0, 5.5), (9.0, 4.5)],  # [0.441, 0.567]
             # neither clearly above 0: every r >= 0
             "from zero": [(-1.0, -2.0), (1.5, 3.0), (0.1, 1.0), (-0.4, -1.0)],
             # [0, 0.182] and [1.578, inf): reported from 0, the set's hull
             "with a gap": [(0.3, 1.4), (-0.7, 0.2), (-0.5, 0.6), (1.2, 2.0)]}[case]
    pairs = [(g * scale, t * scale) for g, t in pairs]
    out = noise_scale.pooled(pairs)
    assert out["n"] == 4
    upper = 50.0 if case.startswith("bounded") else 1e4
    grid = np.linspace(0.0, upper, 2_000_001)
    inside = fieller_set_by_grid(pairs, grid)
    step = grid[1]
    assert out["low"] == pytest.approx(inside.min(), abs=2 * step)
    if upper == 50.0:
        assert out["high"] == pytest.approx(inside.max(), abs=2 * step) and inside.max() < upper
        assert 0 < out["low"] < out["value"] < out["high"]
    else:
        assert out["high"] == math.inf and inside.max() == upper
    if case == "unbounded above":
        assert out["low"] > 1.0  # the set starts well above 0 here, and the function says where
    if case in ("from zero", "with a gap"):
        assert out["low"] == 0.0


def test_the_pooled_interval_drops_seeds_without_a_value():
    pairs = [(10.0, 100.0), (11.0, 118.0), (math.nan, 5.0), (12.0, math.inf), (12.0, 112.0)]
    assert noise_scale.pooled(pairs) == noise_scale.pooled([(10.0, 100.0), (11.0, 118.0), (12.0, 112.0)])
    two = noise_scale.pooled([(10.0, 100.0), (12.0, 112.0)])  # two seeds: an interval (t with 1 df)
    assert two["n"] == 2 and two["low"] is not None and two["high"] is not None
    assert noise_scale.pooled([(math.nan, 1.0)]) is None


def test_one_updates_estimates_need_both_batches():
    record = {"grad_sq_small": 5.0, "grad_sq_big": 2.0, "groups_small": 1, "groups_big": 4}
    # |G|^2 = (4 x 2 - 1 x 5) / 3 = 1; tr S = (5 - 2) / (1 - 1/4) = 4
    assert noise_scale.step_estimates(record) == pytest.approx((1.0, 4.0))
    for key, value in [("grad_sq_small", None), ("grad_sq_big", None), ("groups_small", 0), ("groups_big", 0),
                       ("groups_big", 1)]:
        assert noise_scale.step_estimates({**record, key: value}) is None, key
    assert noise_scale.step_estimates({"reward_mean": 0.5}) is None


def test_phases_split_a_runs_records_in_halves():
    records = [{"step": i} for i in range(6)]
    assert [r["step"] for r in noise_scale.phase_records(records, "early")] == [0, 1, 2]
    assert [r["step"] for r in noise_scale.phase_records(records, "late")] == [3, 4, 5]
    assert noise_scale.phase_records(records, "all") == records


def test_the_predicted_step_ratio_between_any_two_batch_sizes():
    # B_noise 4 groups: steps(2) / steps(8) = (1 + 2) / (1 + 0.5) = 2; all noise: 8 / 2
    assert noise_scale.predicted_step_ratio(4.0, 2, 8) == pytest.approx(2.0)
    assert noise_scale.predicted_step_ratio(math.inf, 2, 8) == 4.0
    assert noise_scale.ratio(0.0, 5.0) is None and noise_scale.ratio(2.0, 5.0) == 2.5

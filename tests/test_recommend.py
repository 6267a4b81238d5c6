"""Throughput math and the recommendation rules, on the study's numbers and edge cases."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from lorasweep.errors import LorasweepError
from lorasweep.analysis.recommend import (
    EFFICIENCY_FLOOR,
    recommend_concurrency,
    recommend_default,
    recommend_verdicts,
    render_markdown,
)
from lorasweep.analysis.throughput import throughput_rows

# docs/design.md §1: concurrency at rank 32, bs 128, lr 1.2e-3.
STUDY_STEP_TIMES = {3: 0.80, 6: 0.90, 12: 1.15, 18: 1.76}
STUDY_AGG_THROUGHPUT = {3: 3.75, 6: 6.67, 12: 10.4, 18: 10.2}


def study_rows():
    levels = [
        {"n": n, "step_time": t, "batch_size": 128, "rank": 32, "lr": 1.2e-3} for n, t in STUDY_STEP_TIMES.items()
    ]
    return throughput_rows(levels)


def series(agg_by_n: dict, batch_size: int = 32) -> list[dict]:
    """A series with the given aggregate throughputs (steps/s) per level."""
    return throughput_rows([{"n": n, "step_time": n / agg, "batch_size": batch_size} for n, agg in agg_by_n.items()])


def three_significant(x: float) -> float:
    return float(f"{x:.3g}")


# ---- throughput math -------------------------------------------------------------


def test_throughput_reproduces_the_study_column():
    rows = study_rows()
    assert [row["n"] for row in rows] == [3, 6, 12, 18]
    assert {row["n"]: three_significant(row["agg_steps_per_s"]) for row in rows} == STUDY_AGG_THROUGHPUT


def test_throughput_samples_and_efficiency():
    rows = {row["n"]: row for row in study_rows()}
    assert rows[3]["samples_per_s"] == pytest.approx(3 * 128 / 0.80)
    assert rows[3]["efficiency"] == pytest.approx(1.0)
    assert rows[6]["efficiency"] == pytest.approx(0.80 / 0.90)
    assert rows[18]["efficiency"] == pytest.approx(0.80 / 1.76)
    assert rows[12]["rank"] == 32  # other keys pass through


def test_throughput_sorts_and_accepts_numpy_scalars():
    frame = pd.DataFrame({"n": [4, 1], "step_time": [2.0, 1.0], "batch_size": [8, 8]})
    rows = throughput_rows(frame.to_dict("records"))
    assert [row["n"] for row in rows] == [1, 4]
    assert type(rows[0]["n"]) is int
    json.dumps(rows)


@pytest.mark.parametrize(
    "level, fragment",
    [
        ({"n": 2, "step_time": 0.0, "batch_size": 8}, "step_time"),
        ({"n": 0, "step_time": 1.0, "batch_size": 8}, "n=0"),
        ({"n": 2, "batch_size": 8}, "'step_time'"),
        ({"n": 2, "step_time": math.inf, "batch_size": 8}, "step_time=inf"),
        ({"n": 2, "step_time": math.nan, "batch_size": 8}, "step_time=nan"),
    ],
)
def test_throughput_rejects_bad_levels(level, fragment):
    with pytest.raises(LorasweepError, match=fragment):
        throughput_rows([level])


def test_throughput_rejects_a_repeated_level():
    with pytest.raises(LorasweepError, match="n=2 appears twice"):
        throughput_rows([{"n": 2, "step_time": 1.0, "batch_size": 8}] * 2)


# ---- concurrency recommendations ---------------------------------------------------


def test_study_numbers_give_6_and_12():
    rec = recommend_concurrency(study_rows())
    assert rec["best_efficiency"]["level"] == 6
    assert rec["max_throughput"]["level"] == 12
    assert rec["saturation"]["level"] == 12
    assert rec["saturation"]["reached"] is True
    assert rec["series"] == {"rank": 32, "batch_size": 128, "lr": 1.2e-3}
    # The figures the picks come from travel with them.
    assert rec["best_efficiency"]["figures"]["efficiency"] == pytest.approx(0.889, abs=1e-3)
    assert rec["best_efficiency"]["figures"]["next_level"]["n"] == 12
    assert rec["max_throughput"]["figures"]["agg_steps_per_s"] == pytest.approx(10.43, abs=0.01)
    json.dumps(rec)


def test_study_picks_do_not_sit_on_a_knife_edge():
    # The floor separates 6 (0.89) from 12 (0.70) with room either way, so
    # measurement noise of a few percent does not flip the pick.
    efficiency = {row["n"]: row["efficiency"] for row in study_rows()}
    assert efficiency[6] - EFFICIENCY_FLOOR > 0.05
    assert EFFICIENCY_FLOOR - efficiency[12] > 0.05


def test_a_single_level_is_every_pick_and_saturation_is_unknown():
    rec = recommend_concurrency(series({4: 2.0}))
    assert rec["best_efficiency"]["level"] == rec["max_throughput"]["level"] == rec["saturation"]["level"] == 4
    assert rec["saturation"]["reached"] is False
    assert "only one level" in render_markdown(rec, None)


def test_flat_throughput_picks_the_lowest_level():
    rec = recommend_concurrency(series({1: 2.0, 2: 2.0, 4: 2.0, 8: 2.0}))
    assert rec["best_efficiency"]["level"] == 1
    assert rec["max_throughput"]["level"] == 1
    assert rec["saturation"] == {**rec["saturation"], "level": 1, "reached": True}


def test_throughput_that_falls_from_the_start_picks_the_lowest_level():
    rec = recommend_concurrency(series({1: 2.0, 2: 1.5, 4: 1.0}))
    assert rec["best_efficiency"]["level"] == 1
    assert rec["max_throughput"]["level"] == 1
    assert rec["saturation"]["level"] == 1


def test_throughput_still_rising_reports_saturation_not_reached():
    rec = recommend_concurrency(series({1: 1.0, 2: 2.0, 4: 4.0}))
    assert rec["best_efficiency"]["level"] == 4
    assert rec["max_throughput"]["level"] == 4
    assert rec["saturation"] == {**rec["saturation"], "level": 4, "reached": False}
    assert "not reached" in render_markdown(rec, None)


def test_two_core_shape_rises_to_two_and_not_beyond():
    # What a 2-core CPU machine measures: a gain from 1 to 2 workers, noise after.
    rec = recommend_concurrency(series({1: 1.0, 2: 1.8, 4: 1.83, 8: 1.7}))
    assert rec["best_efficiency"]["level"] == 2
    assert rec["max_throughput"]["level"] == 2  # 4 is the measured peak, but only by 2%
    assert rec["max_throughput"]["figures"]["peak"]["n"] == 4
    assert rec["saturation"]["level"] == 2


def test_concurrency_rows_from_a_dataframe():
    rec = recommend_concurrency(pd.DataFrame(study_rows()))
    assert (rec["best_efficiency"]["level"], rec["max_throughput"]["level"]) == (6, 12)
    json.dumps(rec)


def test_concurrency_rejects_empty_and_mixed_series():
    with pytest.raises(LorasweepError, match="empty"):
        recommend_concurrency([])
    with pytest.raises(LorasweepError, match="one series"):
        recommend_concurrency(study_rows() + study_rows())


# ---- default config and linear scaling ---------------------------------------------


def lr_row(rank, bs, lr, steps, step_time, censored=0, is_control=False, wall=None):
    return {
        "rank": rank,
        "batch_size": bs,
        "lr": lr,
        "avg_steps": steps,
        "min_steps": steps,
        "max_steps": steps,
        "step_time": step_time,
        "wall": steps * step_time if wall is None else wall,
        "censored": censored,
        "is_control": is_control,
    }


def study_lr_rows():
    # docs/design.md §1, plus the no-scaling control (306 s wall) at both ranks.
    return [
        lr_row(4, 32, 3e-4, 313, 0.75),
        lr_row(4, 64, 6e-4, 173, 0.79),
        lr_row(4, 128, 1.2e-3, 110, 0.79),
        lr_row(4, 128, 3e-4, 387, 0.79, is_control=True),
        lr_row(32, 32, 3e-4, 167, 0.66),
        lr_row(32, 64, 6e-4, 100, 0.69),
        lr_row(32, 128, 1.2e-3, 60, 0.73),
    ]


def test_default_on_the_study_picks_bs128_with_scaled_lr():
    rec = recommend_default(study_lr_rows())
    picks = {pick["rank"]: pick["cell"] for pick in rec["per_rank"]}
    assert (picks[4]["batch_size"], picks[4]["lr"]) == (128, 1.2e-3)
    assert (picks[32]["batch_size"], picks[32]["lr"]) == (128, 1.2e-3)
    assert rec["overall"]["rank"] == 32
    scaling = {summary["rank"]: summary for summary in rec["linear_scaling"]}
    assert round(scaling[4]["speedup"], 1) == 2.7
    assert round(scaling[32]["speedup"], 1) == 2.5
    assert round(scaling[4]["control"]["speedup"], 1) == 0.8
    assert scaling[32]["control"] is None
    json.dumps(rec)


def test_default_skips_cells_with_censored_seeds():
    rows = [
        lr_row(8, 32, 3e-4, 200, 1.0),
        # Fastest on paper, but one seed never reached the target: its wall is a lower bound.
        lr_row(8, 128, 1.2e-3, 50, 1.0, censored=1),
        lr_row(8, 64, 6e-4, 120, 1.0),
    ]
    pick = recommend_default(rows)["per_rank"][0]
    assert pick["cell"]["batch_size"] == 64
    assert pick["censored_only"] is False
    assert [cell["batch_size"] for cell in pick["excluded_censored"]] == [128]


def test_default_falls_back_to_censored_cells_when_all_are():
    rows = [
        lr_row(8, 32, 3e-4, 400, 1.0, censored=2),
        lr_row(8, 64, 6e-4, 300, 1.0, censored=1),
        lr_row(8, 128, 1.2e-3, 0, 0, censored=3, wall=math.nan),  # no wall at all
    ]
    pick = recommend_default(rows)["per_rank"][0]
    assert pick["cell"]["batch_size"] == 64
    assert pick["censored_only"] is True
    assert "lower bound" in render_markdown(None, recommend_default(rows))


def test_default_overall_prefers_a_measured_wall_to_a_censored_one():
    rows = [lr_row(4, 32, 3e-4, 100, 1.0), lr_row(32, 32, 3e-4, 10, 1.0, censored=4)]
    assert recommend_default(rows)["overall"]["rank"] == 4


def test_default_with_no_wall_at_all():
    rec = recommend_default([lr_row(4, 32, 3e-4, 0, 0, censored=2, wall=math.nan)])
    assert rec["per_rank"][0]["cell"] is None and rec["overall"] is None
    assert rec["linear_scaling"] == []
    assert "none" in render_markdown(None, rec)


def test_default_names_a_missing_column():
    row = lr_row(4, 32, 3e-4, 100, 1.0)
    del row["censored"]
    with pytest.raises(LorasweepError, match="'censored'"):
        recommend_default([row])


# ---- markdown -------------------------------------------------------------------------


def test_markdown_lists_every_recommendation_with_figures_and_rule():
    text = render_markdown(recommend_concurrency(study_rows()), recommend_default(study_lr_rows()))
    assert text.startswith("## Practical recommendations\n")
    assert "**Default config, rank 32**: bs 128, lr 1.2e-3" in text
    assert "44 s to target" in text
    assert "**Linear LR scaling, rank 4**: bs 32 → 128 with lr 3e-4 → 1.2e-3: 2.7x" in text
    assert "without scaling (bs 128, lr 3e-4): 0.8x" in text
    assert "**Best efficiency**: 6 concurrent — efficiency 0.89, 6.67 steps/s" in text
    assert "**Max aggregate throughput**: 12 concurrent — 10.4 steps/s" in text
    assert "**Nothing gained past**: 12 concurrent" in text
    assert "18: 10.2 steps/s" in text
    # Every recommendation states its rule, one sentence each.
    assert text.count("  Rule: ") == 5  # default, scaling, and the three concurrency picks
    print(text)


def test_markdown_with_several_series_and_with_nothing():
    second = recommend_concurrency(
        throughput_rows([{"n": n, "step_time": t, "batch_size": 32} for n, t in {12: 1.12, 16: 1.06, 20: 1.32}.items()])
    )
    text = render_markdown([recommend_concurrency(study_rows()), second], None)
    assert "rank 32, bs 128, lr 1.2e-3; levels 3, 6, 12, 18" in text
    assert "bs 32; levels 12, 16, 20" in text
    assert "No measurements" in render_markdown(None, None)


def test_scaling_summary_names_smaller_batch_sizes_that_never_reached_the_target():
    # the CPU run's rank 4: no seed of bs 8 reached the target, so bs 16 is the base
    rows = [
        lr_row(4, 8, 1e-3, 0, 0.12, censored=2, wall=math.nan),
        lr_row(4, 16, 2e-3, 202, 0.18),
        lr_row(4, 32, 4e-3, 155, 0.35),
    ]
    summary = recommend_default(rows)["linear_scaling"][0]
    assert summary["base"]["batch_size"] == 16 and summary["unreached_smaller"] == [8]
    text = render_markdown(None, recommend_default(rows))
    assert "no seed of bs 8 reached the target, so the comparison starts at bs 16" in text
    assert "so the comparison starts at" not in render_markdown(None, recommend_default(study_lr_rows()))
    assert all(s["unreached_smaller"] == [] for s in recommend_default(study_lr_rows())["linear_scaling"])


# ---- verdicts per claim -----------------------------------------------------------------


def seeded_row(rank, bs, lr, seeds: str, step_time, is_control=False, horizon=300, early=None):
    """A table row as the CSV has it: the per-seed outcomes ('80 >300'), the horizon, the early rewards."""
    row = {"rank": rank, "batch_size": bs, "lr": lr, "steps_per_seed": seeds, "horizon": horizon,
           "step_time": step_time, "is_control": is_control}
    if early is not None:
        row.update(early_per_seed=early, early_steps=20)
    return row


def verdict_rows():
    return [
        # rank 32: clear effects; rank 4: seeds overlap
        seeded_row(32, 8, 5e-4, "250 290 260 280", 0.10, early="0.40 0.42 0.44 0.46"),
        seeded_row(32, 16, 1e-3, "140 >300 150 160", 0.15),
        seeded_row(32, 32, 2e-3, "80 90 85 85", 0.25, early="0.55 0.57 0.56 0.56"),
        seeded_row(32, 32, 5e-4, "200 >300 210 >300", 0.25, is_control=True, early="0.45 0.44 0.47 0.45"),
        seeded_row(4, 8, 1e-3, "100 200 150 130", 0.10),
        seeded_row(4, 32, 4e-3, "120 160 140 140", 0.30),
        seeded_row(4, 32, 1e-3, "150 130 140 140", 0.30, is_control=True),
    ]


def claims_by_rank(rows):
    return {v["rank"]: {c["claim"]: c for c in v["claims"]} for v in recommend_verdicts(rows)}


def test_verdicts_resolve_a_clear_effect_by_hand():
    verdicts = claims_by_rank(verdict_rows())
    fewer = verdicts[32]["fewer_steps"]
    # means 270 and 85, every seed of one cell above every seed of the other: of the C(8, 4) = 70 splits
    # only the observed one and its mirror are as extreme, p = 2 / 70. The interval inverts the test: a
    # split that swaps equal-sized seed sets I, J has the critical shift mean(I) - mean(J), and at 70
    # splits the test keeps the shifts between the smallest and largest: 250 - 90 .. 290 - 80
    assert fewer["estimates"] == pytest.approx([270, 85])
    assert fewer["difference"] == pytest.approx(185) and fewer["interval"] == pytest.approx([160, 210])
    assert fewer["p_value"] == pytest.approx(2 / 70) and fewer["resolved"] and fewer["status"] == "supported"
    assert fewer["seeds"] == [4, 4] and fewer["test"] == "exact permutation test"
    # the control's censored seeds count as 300: (200 + 300 + 210 + 300) / 4 = 252.5 against 85
    more = verdicts[32]["control_more_steps"]
    assert more["difference"] == pytest.approx(167.5) and more["interval"] == pytest.approx([110, 220])
    assert more["status"] == "supported"
    wall = verdicts[32]["control_more_wall"]
    assert wall["unit"] == "s" and wall["difference"] == pytest.approx(167.5 * 0.25)
    assert wall["interval"] == pytest.approx([110 * 0.25, 220 * 0.25])
    # the early reward: bs 32's 0.56 above bs 8's 0.43, and the control's 0.4525 below the scaled 0.56
    early = verdicts[32]["higher_early_reward"]
    assert early["unit"] == "reward" and early["difference"] == pytest.approx(0.13) and early["status"] == "supported"
    assert early["interval"] == pytest.approx([0.55 - 0.46, 0.57 - 0.40])
    lower = verdicts[32]["control_lower_early_reward"]
    assert lower["difference"] == pytest.approx(0.56 - 0.4525) and lower["status"] == "supported"
    assert "higher_early_reward" not in verdicts[4]  # rows without early rewards: no such claim


def test_verdicts_say_not_resolved_and_how_many_seeds_would_resolve_it():
    verdicts = claims_by_rank(verdict_rows())
    fewer = verdicts[4]["fewer_steps"]
    assert fewer["difference"] == pytest.approx(145 - 140)
    assert not fewer["resolved"] and fewer["status"] == "not resolved"
    # variances 5300/3 (100, 200, 150, 130) and 800/3 (120, 160, 140, 140); for 80% power at 5%:
    # (1.95996 + 0.84162)^2 x 2033.3 / 5^2 = 638.4 -> 639 seeds per cell
    assert fewer["seeds_needed"] == 639 and fewer["seeds"] == [4, 4]
    # the control (mean 140) against the scaled cell (140): no difference, no number of seeds predicted
    same = verdicts[4]["control_more_steps"]
    assert same["difference"] == 0 and same["seeds_needed"] is None and same["p_value"] == 1.0
    text = render_markdown(None, None, recommend_verdicts(verdict_rows()))
    assert ("**Verdict, rank 4**: bs 32 with scaled lr 4e-3 needs fewer steps than bs 8 (lr 1e-3): not resolved "
            "(exact permutation test, 4 seeds per cell, p = ") in text
    assert "the seeds are consistent with no difference) — 145 vs 140 steps, difference 5 steps (95% CI -60 to 80)" in text
    assert "about 639 seeds per cell would resolve a difference this large with 80% probability" in text
    assert "no difference observed" in text
    assert ("**Verdict, rank 32**: the control (bs 32, unscaled lr 5e-4) needs more steps than the scaled lr 2e-3: "
            "resolved, it holds (exact permutation test, 4 seeds per cell, p = 0.0286) — 252 vs 85 steps") in text
    assert "gains more reward over its first 20 steps than bs 8 (lr 5e-4): resolved, it holds" in text
    assert "0.560 vs 0.430, difference 0.130 (95% CI 0.090 to 0.170)" in text
    assert text.count("  Rule: each claim is decided by an exact two-sided permutation test") == 1


def test_with_two_seeds_a_verdict_says_it_cannot_be_resolved():
    rows = [seeded_row(4, 8, 1e-3, "250 260", 0.1), seeded_row(4, 32, 4e-3, "60 70", 0.3)]
    claim = recommend_verdicts(rows)[0]["claims"][0]
    # every seed apart, yet with 2 seeds a cell the exact test's smallest p-value is 2 / 6
    assert claim["status"] == "cannot resolve" and not claim["resolved"]
    assert claim["p_value"] == pytest.approx(1 / 3) and claim["interval"] == [-math.inf, math.inf]
    text = render_markdown(None, None, recommend_verdicts(rows))
    assert ("cannot be resolved with 2 seeds per cell: the smallest p-value the exact test can give there is 0.33, "
            "so no interval is given — 255 vs 65 steps, difference 190 steps; at least 4 seeds per cell are "
            "needed") in text
    assert "95% CI" not in text


def test_a_verdict_can_contradict_the_claim():
    rows = [seeded_row(4, 8, 1e-3, "60 70 65 75", 0.1), seeded_row(4, 32, 4e-3, "150 160 155 165", 0.3)]
    claim = recommend_verdicts(rows)[0]["claims"][0]
    assert claim["status"] == "contradicted" and claim["resolved"]
    assert "resolved, the opposite holds" in render_markdown(None, None, recommend_verdicts(rows))


def test_no_verdict_without_per_seed_outcomes():
    # tables written before the per-seed outcomes were recorded
    assert recommend_verdicts(study_lr_rows()) == []
    assert "Verdict" not in render_markdown(None, recommend_default(study_lr_rows()), [])


def test_numpy_levels_come_back_as_plain_numbers_under_their_own_names():
    level = {"n": np.int64(2), "step_time": np.float64(0.5), "batch_size": np.int64(1), "rank": 4}
    (row,) = throughput_rows([level])
    # 2 / 0.5 = 4 steps/s, x batch size 1 = 4 samples/s; the lowest level is its own reference
    assert row == {"n": 2, "step_time": 0.5, "batch_size": 1, "rank": 4, "agg_steps_per_s": 4.0,
                   "samples_per_s": 4.0, "efficiency": 1.0}
    assert (type(row["n"]), type(row["step_time"]), type(row["batch_size"])) == (int, float, int)


@pytest.mark.parametrize("key, value", [("n", 1.5), ("n", True), ("batch_size", 8.0), ("batch_size", 0)])
def test_throughput_rejects_levels_that_are_not_whole_positive_counts(key, value):
    with pytest.raises(LorasweepError, match=f"{key}={value!r} is not a positive whole number"):
        throughput_rows([{"n": 2, "step_time": 1.0, "batch_size": 8, key: value}])

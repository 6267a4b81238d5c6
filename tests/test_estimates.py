"""Censoring-aware steps to target, bootstrap intervals and the lr-scaling table, on hand-computed examples."""

import math

import pytest

from lorasweep.analysis import metrics, tables
from lorasweep.analysis.metrics import CellOutcome, WorkerOutcome

HORIZON = 300


def curve(observations) -> list:
    """The Kaplan-Meier curve flattened to time, survival, time, survival, ..."""
    return [x for point in metrics.kaplan_meier(observations) for x in point]


# ---- Kaplan-Meier and the restricted mean -------------------------------------------------------


def test_all_censored_restricted_mean_is_the_horizon_and_the_interval_is_flagged():
    estimate = metrics.steps_estimate([(300, False), (300, False)], HORIZON)
    assert estimate.value == HORIZON
    assert (estimate.low, estimate.high) == (HORIZON, HORIZON)  # degenerate: every resample is the horizon
    assert not estimate.reached and estimate.censored == 2
    assert estimate.interval_note == "all censored"


def test_none_censored_restricted_mean_is_the_plain_mean():
    observations = [(220, True), (213, True), (167, True)]
    assert metrics.restricted_mean(observations, HORIZON) == pytest.approx((220 + 213 + 167) / 3)
    assert curve(observations) == pytest.approx([167, 2 / 3, 213, 1 / 3, 220, 0.0])


def test_mixed_censoring_restricted_mean_by_hand():
    # times 2 (reached), 4 (censored), 6 (reached), horizon 10:
    # S = 1 on [0, 2); at 2 one of 3 at risk reaches it -> 2/3; 4 leaves the risk set;
    # at 6 the one left reaches it -> 0. Area: 2 x 1 + (6 - 2) x 2/3 = 14/3.
    observations = [(2, True), (4, False), (6, True)]
    assert curve(observations) == pytest.approx([2, 2 / 3, 6, 0.0])
    assert metrics.restricted_mean(observations, 10) == pytest.approx(14 / 3)
    # cut at a horizon inside the curve: 2 x 1 + (5 - 2) x 2/3 = 4
    assert metrics.restricted_mean(observations, 5) == pytest.approx(4.0)


def test_censored_at_the_horizon_counts_as_the_horizon():
    # the usual case: a censored seed ran all max_steps; the restricted mean is then mean(min(T, horizon))
    assert metrics.restricted_mean([(220, True), (300, False)], HORIZON) == pytest.approx(260.0)
    # the old estimate (converged seeds only) said 220: a partly censored cell looked faster than it is


def test_a_tie_counts_the_event_before_the_censoring():
    # at 4, one reaches the target and one is censored: both were at risk at 4
    # S: 1 on [0, 4), 1 - 1/2 = 1/2 after; area to 10 = 4 + 6 x 1/2 = 7
    assert metrics.restricted_mean([(4, False), (4, True)], 10) == pytest.approx(7.0)


def test_seed_observations_cap_censored_runs_at_the_horizon():
    workers = [WorkerOutcome(0, 40, 40, 0.9, 0.1), WorkerOutcome(1, 300, None, 0.6, 0.1)]
    assert metrics.seed_observations(workers, HORIZON) == [(40, True), (300, False)]
    assert metrics.format_seed_outcomes([(40, True), (300, False)]) == "40 >300"
    assert metrics.parse_seed_outcomes("40 >300") == [(40, True), (300, False)]


# ---- bootstrap intervals -----------------------------------------------------------------------


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible():
    observations = [(80, True), (95, True), (120, True), (300, False)]
    estimate = metrics.steps_estimate(observations, HORIZON)
    assert estimate.value == pytest.approx((80 + 95 + 120 + 300) / 4)
    assert 80 <= estimate.low < estimate.value < estimate.high <= 300
    assert metrics.steps_estimate(observations, HORIZON) == estimate  # fixed seed: the same interval again
    assert estimate.interval_note is None


def test_bootstrap_interval_has_zero_width_when_all_seeds_agree():
    estimate = metrics.steps_estimate([(150, True)] * 3, HORIZON)
    assert (estimate.low, estimate.value, estimate.high) == (150, 150, 150)
    assert estimate.interval_note == "seeds equal"
    assert metrics.steps_estimate([(150, True)], HORIZON).interval_note == "one seed"


def test_two_seed_bootstrap_spans_the_two_seeds():
    # resamples of two seeds are {a, a}, {a, b}, {b, b} (1/4, 1/2, 1/4): the 95% interval runs
    # from a to b; this is the crudeness the tables' note warns about
    estimate = metrics.steps_estimate([(80, True), (90, True)], HORIZON)
    assert (estimate.low, estimate.value, estimate.high) == (80, 85, 90)


def test_percentile_interval_interpolates_between_order_statistics():
    # 2.5% and 97.5% of 0..40: positions 1.0 and 39.0
    assert metrics._percentile_interval(list(range(41))) == pytest.approx((1.0, 39.0))
    # of 0..10: positions 0.25 and 9.75
    assert metrics._percentile_interval(list(range(11))) == pytest.approx((0.25, 9.75))


def test_wall_interval_scales_the_steps_interval_by_the_measured_step_time():
    estimate = metrics.StepsEstimate(value=100, low=80, high=130, horizon=HORIZON, n=2, censored=0)
    assert metrics.wall_interval(estimate, 0.5) == (50, 40, 65)
    assert metrics.wall_interval(estimate, None) is None
    unreached = metrics.StepsEstimate(value=300, low=300, high=300, horizon=HORIZON, n=2, censored=2)
    assert metrics.wall_interval(unreached, 0.5) is None


def test_speedup_interval_bootstraps_the_ratio_of_walls():
    base, cell = [(200, True), (240, True)], [(100, True), (100, True)]
    speedup, low, high = metrics.speedup_interval(base, 0.1, cell, 0.2, HORIZON)
    assert speedup == pytest.approx((220 * 0.1) / (100 * 0.2))
    # the cell's seeds agree, so the ratio's spread is the base's: 200 / 20 .. 240 / 20
    assert (low, high) == pytest.approx((1.0, 1.2))
    # no seed of the cell reached the target: no speedup
    assert metrics.speedup_interval(base, 0.1, [(300, False)] * 2, 0.2, HORIZON) is None


# ---- comparisons -------------------------------------------------------------------------------


def test_comparison_resolved_when_the_difference_interval_excludes_zero():
    comparison = metrics.compare_steps([(220, True), (250, True)], [(80, True), (90, True)], HORIZON)
    assert comparison.difference == pytest.approx(235 - 85)
    assert (comparison.low, comparison.high) == pytest.approx((220 - 90, 250 - 80))
    assert comparison.resolved


def test_comparison_not_resolved_when_the_seeds_overlap():
    comparison = metrics.compare_steps([(100, True), (200, True)], [(120, True), (160, True)], HORIZON)
    assert comparison.difference == pytest.approx(10)
    assert comparison.low < 0 < comparison.high and not comparison.resolved
    # sd 70.71 and 28.28: n > 1.96^2 x (5000 + 800) / 10^2 = 222.8 -> 223 seeds per cell
    assert comparison.seeds_needed == 223


def test_seeds_to_resolve_by_hand():
    # equal spreads sd = 10 (values 0, 20 have sample sd 14.14; use 10 +- 7.07)
    first, second = [100 - 7.0710678, 100 + 7.0710678], [110 - 7.0710678, 110 + 7.0710678]
    # 1.96 x 10 x sqrt(2 / n) < 10 -> n > 7.68 -> 8
    assert metrics.seeds_to_resolve(first, second, -10.0) == 8
    assert metrics.seeds_to_resolve(first, second, 0.0) is None
    assert metrics.seeds_to_resolve([5, 5], [9, 9], 4.0) == 2  # no spread: the fewest that show one


def test_wall_comparison_uses_each_cells_step_time():
    comparison = metrics.compare_steps([(100, True)] * 2, [(100, True)] * 2, HORIZON, 0.3, 0.2)
    assert comparison.difference == pytest.approx(10.0)
    assert (comparison.low, comparison.high) == pytest.approx((10.0, 10.0)) and comparison.resolved


# ---- the lr-scaling table ----------------------------------------------------------------------


def outcome(steps, step_time, horizon=HORIZON):
    workers = [WorkerOutcome(seed, s or horizon, s, None, step_time) for seed, s in enumerate(steps)]
    return CellOutcome(workers=workers, worker_step_times={w.seed: step_time for w in workers})


DEGENERACY = {"samples": 20, "max_distinct_flag": 7, "min_jaccard_flag": 0.18}


def cell(bs, lr, control=False, n=2):
    return {"rank": 32, "batch_size": bs, "lr": lr, "control": control, "n": n}


def table_rows():
    return tables.lr_scaling_rows([
        (cell(8, 5e-4), outcome([250, 290], 0.10), {}),
        (cell(16, 1e-3), outcome([140, None], 0.15), {}),
        (cell(32, 2e-3), outcome([80, 90], 0.25), {}),
        (cell(32, 5e-4, control=True), outcome([None, None], 0.25), {}),
    ], base_batch_size=8, max_steps=HORIZON)


def test_lr_scaling_rows_carry_the_estimate_and_its_intervals():
    rows = {(r["batch_size"], r["is_control"]): r for r in table_rows()}
    base, partly, largest, control = rows[8, False], rows[16, False], rows[32, False], rows[32, True]
    assert (base["avg_steps"], base["steps_lo"], base["steps_hi"]) == (270, 250, 290)
    assert base["wall"] == pytest.approx(27.0) and (base["wall_lo"], base["wall_hi"]) == pytest.approx((25.0, 29.0))
    assert base["speedup"] == 1 and base["speedup_lo"] is None  # the reference
    # the censored seed counts as 300: (140 + 300) / 2, not 140
    assert partly["avg_steps"] == 220 and partly["steps_per_seed"] == "140 >300"
    assert largest["wall"] == pytest.approx(85 * 0.25)
    assert largest["speedup"] == pytest.approx(27.0 / 21.25)
    assert largest["speedup_lo"] == pytest.approx(25.0 / 22.5) and largest["speedup_hi"] == pytest.approx(29.0 / 20.0)
    assert control["avg_steps"] is None and control["wall"] is None and control["steps_lo"] is None
    assert control["interval_note"] == "all censored" and control["horizon"] == HORIZON


def test_lr_scaling_markdown_keeps_the_study_columns_and_states_the_estimator():
    md = tables.lr_scaling_markdown(table_rows(), 0.75, HORIZON, DEGENERACY)
    lines = md.splitlines()
    headers = [c.strip() for c in lines[0].strip("|").split("|")]
    assert headers == ["bs", "lr", "avg steps to 0.75", "step_time", "wall to 0.75", "speedup",
                       "steps 95% CI", "wall 95% CI", "speedup 95% CI", "steps min–max", "censored", "degenerate"]
    base = dict(zip(headers, (c.strip() for c in lines[2].strip("|").split("|"))))
    assert (base["avg steps to 0.75"], base["steps 95% CI"], base["wall 95% CI"]) == ("270", "[250, 290]", "[25s, 29s]")
    assert base["speedup 95% CI"] == "(reference)"
    largest = dict(zip(headers, (c.strip() for c in lines[4].strip("|").split("|"))))
    assert largest["speedup 95% CI"] == "[1.11x, 1.45x]"
    assert "restricted mean up to max_steps = 300 from the Kaplan–Meier curve" in md
    assert "95% percentile bootstrap over seeds (2000 resamples" in md
    assert "With 2 seed(s) per cell a bootstrap interval is crude" in md
    assert "some seeds did not reach the target" in md
    assert math.isfinite(float(largest["avg steps to 0.75"]))


def test_seeds_needed_for_a_wall_difference_come_from_the_seeds_walls():
    # walls at 0.5 s/step: first 50 s and 70 s (sample variance 200), second 50 s and 50 s (0);
    # difference 60 - 50 = 10 s; n > 1.959964^2 x 200 / 10^2 = 7.68 -> 8 seeds per cell
    comparison = metrics.compare_steps([(100, True), (140, True)], [(100, True)] * 2, HORIZON, 0.5, 0.5)
    assert comparison.difference == pytest.approx(10.0)
    assert comparison.seeds_needed == 8


def test_the_bootstrap_is_seeded_so_the_same_records_give_the_same_interval():
    # twenty distinct seeds: the percentiles of the resampled means depend on the draws
    observations = [(100 + 7 * i, True) for i in range(20)]

    def statistic(sample):
        return metrics.restricted_mean(sample, HORIZON)

    first = metrics.bootstrap_interval(observations, statistic)
    assert metrics.bootstrap_interval(observations, statistic) == first
    assert metrics.bootstrap_interval(observations, statistic, seed=metrics.BOOTSTRAP_SEED) == first
    assert metrics.bootstrap_interval(observations, statistic, seed=metrics.BOOTSTRAP_SEED + 1) != first


def test_no_speedup_without_both_step_times_and_no_step_time_without_a_worker_that_has_one():
    base, cell = [(200, True), (240, True)], [(100, True), (100, True)]
    assert metrics.speedup_interval(base, None, cell, 0.2, HORIZON) is None
    assert metrics.speedup_interval(base, 0.1, cell, None, HORIZON) is None
    assert CellOutcome(workers=[], worker_step_times={0: None, 1: None}).step_time is None


# ---- the tables' whole text: every figure a reader sees, and how it is rounded ----


# table_rows(): rank 32, base batch size 8, horizon 300, two seeds per cell.
#   bs 8:  250, 290 at 0.10 s/step -> mean 270, wall 27 s; the base: speedup 1.0x, the reference.
#   bs 16: 140 and one censored (counts 300) at 0.15 s -> 220, wall 33 s, speedup 27 / 33 = 0.82.
#          Bootstrap of two seeds: resamples {140,140} 140, {140,300} 220, {300,300} 300 (the
#          last two each at least 2.5% of 2000), so [140, 300] steps, x 0.15 -> [21 s, 45 s];
#          speedup extremes 25 / 45 = 0.556 and 29 / 21 = 1.381 each have probability 1/16.
#   bs 32: 80, 90 at 0.25 s -> 85, wall 21.25 s, speedup 27 / 21.25 = 1.27; [80, 90] steps,
#          [20 s, 22.5 s] wall (22.5 prints as 22: round half to even), speedup 25 / 22.5 = 1.11
#          and 29 / 20 = 1.45.
#   control: both censored -> not reached, no wall, no speedup, no interval.
LR_SCALING_BODY = """\
| bs   | lr                | avg steps to 0.75        | step_time   | wall to 0.75   | speedup   | steps 95% CI   | wall 95% CI   | speedup 95% CI   | steps min–max   | censored   | degenerate   |
|------|-------------------|--------------------------|-------------|----------------|-----------|----------------|---------------|------------------|-----------------|------------|--------------|
| 8    | 5e-4              | 270                      | 0.10s       | 27s            | 1.0x      | [250, 290]     | [25s, 29s]    | (reference)      | 250–290         | 0/2        | —            |
| 16   | 1e-3              | 220 (1 of 2 not reached) | 0.15s       | 33s            | 0.8x*     | [140, 300]     | [21s, 45s]    | [0.56x, 1.38x]   | 140–140         | 1/2        | —            |
| 32   | 2e-3              | 85                       | 0.25s       | 21s            | 1.3x      | [80, 90]       | [20s, 22s]    | [1.11x, 1.45x]   | 80–90           | 0/2        | —            |
| 32   | 5e-4 (no scaling) | not reached (> 300)      | 0.25s       | —              | —         | —              | —             | —                | —               | 2/2        | —            |"""

LR_SCALING_NOTES = """

\\* some seeds did not reach the target: they count as reaching it no sooner than max_steps (300), so the average and the wall are lower bounds for that cell.

degenerate = seeds whose 20 samples of held-out prompts (taken when the run reached its target, or after its last step) have at most 7 distinct first sentences or a mean pairwise Jaccard similarity of word sets of at least 0.18 (samples: results/tables/samples.md).

avg steps to target: restricted mean up to max_steps = 300 from the Kaplan–Meier curve over seeds; a seed that did not reach the target counts as 300 steps (censored: its own count is larger). wall = avg steps × step_time, with step_time as measured (no interval of its own). Intervals: 95% percentile bootstrap over seeds (2000 resamples, fixed seed 20240607); a speedup's interval resamples the seeds of both cells independently. With 2 seed(s) per cell a bootstrap interval is crude: it can only span the seeds' own values, so it understates the uncertainty."""


def test_the_lr_scaling_table_whole():
    assert tables.lr_scaling_markdown(table_rows(), 0.75, HORIZON, DEGENERACY) == LR_SCALING_BODY + LR_SCALING_NOTES


def test_the_headline_table_puts_each_interval_beside_its_value():
    assert tables.headline_table(table_rows(), 0.75, HORIZON, tablefmt="github") == """\
| bs   | lr                | avg steps to 0.75 [95% CI]          | step_time   | wall to 0.75 [95% CI]   | speedup [95% CI]     |
|------|-------------------|-------------------------------------|-------------|-------------------------|----------------------|
| 8    | 5e-4              | 270 [250, 290]                      | 0.10s       | 27s [25s, 29s]          | 1.0x                 |
| 16   | 1e-3              | 220 (1 of 2 not reached) [140, 300] | 0.15s       | 33s [21s, 45s]          | 0.8x* [0.56x, 1.38x] |
| 32   | 2e-3              | 85 [80, 90]                         | 0.25s       | 21s [20s, 22s]          | 1.3x [1.11x, 1.45x]  |
| 32   | 5e-4 (no scaling) | not reached (> 300)                 | 0.25s       | —                       | —                    |"""


def row(**changes):
    """An lr-scaling row as lr_scaling_rows makes it, one cell reached by every seed."""
    base = {"rank": 4, "batch_size": 8, "lr": 1e-3, "is_control": False, "n": 3, "avg_steps": 100.0,
            "min_steps": 90, "max_steps": 110, "censored": 0, "steps_per_seed": "90 100 110", "step_time": 0.1,
            "wall": 10.0, "steps_lo": 90.0, "steps_hi": 110.0, "wall_lo": 9.0, "wall_hi": 11.0, "horizon": 50,
            "interval_note": None, "degenerate": 1, "judged": 3, "speedup": 1.0, "speedup_lo": None,
            "speedup_hi": None}
    return {**base, **changes}


def body_cells(md: str) -> list:
    """The cells of the table's first body row."""
    return [c.strip() for c in md.splitlines()[2].strip("|").split("|")]


def test_seconds_switch_to_whole_numbers_at_ten():
    # wall 10.0 -> "10s" (10 or more: no decimal); its interval starts at 9 -> one decimal for both ends
    cells = body_cells(tables.lr_scaling_markdown([row()], 0.9, 50, DEGENERACY))
    assert cells[2:9] == ["100", "0.10s", "10s", "1.0x", "[90, 110]", "[9.0s, 11.0s]", "(reference)"]
    assert cells[9:] == ["90–110", "0/3", "1/3"]
    # just under ten: one decimal; an interval from exactly 10: whole seconds
    cells = body_cells(tables.lr_scaling_markdown([row(wall=9.96, wall_lo=10.0, wall_hi=12.4)], 0.9, 50, DEGENERACY))
    assert (cells[4], cells[7]) == ("10.0s", "[10s, 12s]")


def test_a_steps_interval_carries_its_note():
    cells = body_cells(tables.lr_scaling_markdown([row(steps_lo=100.0, steps_hi=100.0, interval_note="seeds equal")],
                                                  0.9, 50, DEGENERACY))
    assert cells[6] == "[100, 100] (seeds equal)"


def test_the_csv_keeps_every_column_and_value():
    assert tables.to_csv(table_rows()[:1]) == (
        "rank,batch_size,lr,is_control,n,avg_steps,min_steps,max_steps,censored,steps_per_seed,step_time,wall,"
        "steps_lo,steps_hi,wall_lo,wall_hi,horizon,interval_note,degenerate,judged,speedup,speedup_lo,speedup_hi\n"
        "32,8,0.0005,False,2,270.0,250,290,0,250 290,0.1,27.0,250.0,290.0,25.0,29.0,300,,,0,1.0,,\n"
    )


def test_tied_events_leave_the_risk_set_together():
    # 2, 2, 4, 6 all reached: at 2 two of 4 -> S = 1/2 and 2 at risk; at 4 one of 2 -> 1/4; at 6 -> 0
    assert curve([(2, True), (2, True), (4, True), (6, True)]) == pytest.approx([2, 0.5, 4, 0.25, 6, 0.0])


def test_one_value_is_its_own_interval():
    assert metrics._percentile_interval([5.0]) == (5.0, 5.0)


def test_the_two_sample_bootstrap_is_seeded_too():
    first = [(100 + 7 * i, True) for i in range(20)]
    second = [(90 + 5 * i, True) for i in range(20)]
    comparison = metrics.compare_steps(first, second, HORIZON)
    assert metrics.compare_steps(first, second, HORIZON) == comparison
    assert metrics.bootstrap_two_sample(first, second, lambda a, b: metrics.restricted_mean(a, HORIZON)
                                        - metrics.restricted_mean(b, HORIZON)) == (comparison.low, comparison.high)
    assert metrics.bootstrap_two_sample(first, second, lambda a, b: metrics.restricted_mean(a, HORIZON)
                                        - metrics.restricted_mean(b, HORIZON),
                                        seed=metrics.BOOTSTRAP_SEED + 1) != (comparison.low, comparison.high)


def test_seeds_needed_with_one_seed_a_cell_and_with_the_spread_in_the_second_cell():
    # one seed each: no spread (variance 0, not 1), so the fewest that show one: 2
    assert metrics.compare_steps([(100, True)], [(99, True)], HORIZON).seeds_needed == 2
    # the spread in the second cell: walls 50 s and 70 s at 0.5 s/step -> 8 seeds, as with it in the first
    assert metrics.compare_steps([(100, True)] * 2, [(100, True), (140, True)], HORIZON, 0.5, 0.5).seeds_needed == 8


def test_each_rank_is_compared_with_its_own_base_batch_size_row_wherever_it_sits():
    # rank 4: bs 8 (100, 100 at 0.1 s -> 10 s) is the base; bs 16 (50, 50 at 0.1 s -> 5 s): 2x.
    # rank 32: bs 8 (120, 120 at 0.1 s -> 12 s); bs 16 (60, 60 at 0.1 s -> 6 s): 2x; its control
    # bs 8 (the base size, but a control: never the base) 80, 80 -> 8 s: 12 / 8 = 1.5x.
    # rank 8 has no bs 8 row: no speedup. The rows arrive with the base rows last.
    def at(rank, bs, steps, control=False):
        return ({**cell(bs, 1e-3, control), "rank": rank}, outcome(steps, 0.1), {})

    rows = tables.lr_scaling_rows([at(4, 16, [50, 50]), at(32, 8, [80, 80], control=True), at(32, 16, [60, 60]),
                                   at(8, 16, [70, 70]), at(32, 8, [120, 120]), at(4, 8, [100, 100])],
                                  base_batch_size=8, max_steps=HORIZON)
    speedups = {(r["rank"], r["batch_size"], r["is_control"]): r["speedup"] for r in rows}
    assert speedups == pytest.approx({(4, 8, False): 1.0, (4, 16, False): 2.0, (8, 16, False): None,
                                      (32, 8, False): 1.0, (32, 16, False): 2.0, (32, 8, True): 1.5})
    control = next(r for r in table_rows() if r["is_control"])
    assert control["steps_lo"] is None and control["steps_hi"] is None  # no interval in the CSV either


def test_the_crude_interval_warning_names_the_seed_counts_up_to_three():
    assert "With 2/3 seed(s) per cell" in tables.estimates_note([row(n=3), row(n=2)], 50)
    assert "With 3 seed(s) per cell" in tables.estimates_note([row(n=3)], 50)
    assert "crude" not in tables.estimates_note([row(n=4)], 50)
    assert "crude" not in tables.estimates_note([], 50)


def test_missing_figures_print_as_dashes_and_the_lower_bound_note_follows_partial_censoring():
    md = tables.lr_scaling_markdown([row(step_time=None, wall=None, wall_lo=None, wall_hi=None, speedup=None)],
                                    0.9, 50, DEGENERACY)
    assert body_cells(md)[3:9] == ["—", "—", "—", "[90, 110]", "—", "—"]
    assert "lower bounds" not in md  # no seed censored
    partly = tables.lr_scaling_markdown([row(censored=1)], 0.9, 50, DEGENERACY)
    assert body_cells(partly)[2] == "100 (1 of 3 not reached)" and "lower bounds" in partly
    unreached = row(censored=3, avg_steps=None, steps_lo=None, steps_hi=None, wall=None, wall_lo=None, wall_hi=None,
                    speedup=None)
    assert "lower bounds" not in tables.lr_scaling_markdown([unreached], 0.9, 50, DEGENERACY)  # no average to bound
    head = tables.headline_table([row(step_time=None, wall=None, wall_lo=None, wall_hi=None, speedup=None)], 0.9, 50,
                                 tablefmt="github")
    assert body_cells(head)[3:] == ["—", "—", "—"]
    assert tables.headline_table([row()], 0.9, 50).startswith("<table>")  # the report's HTML by default
    assert tables._interval(1.0, None) == tables._interval(None, 1.0) == "—"

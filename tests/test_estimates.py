"""Censoring-aware steps to target, the cells' intervals and the lr-scaling table, on hand-computed examples."""

import math

import pytest

from lorasweep.analysis import metrics, tables
from lorasweep.analysis.metrics import CellOutcome, WorkerOutcome

HORIZON = 300
T_975_3 = 3.182446  # Student t, 97.5% quantile, 3 degrees of freedom (4 seeds)
T_975_1 = 12.706205  # 1 degree of freedom (2 seeds)


# ---- the restricted mean (scipy's Kaplan-Meier) -------------------------------------------------


def test_all_censored_restricted_mean_is_the_horizon_and_the_interval_is_flagged():
    estimate = metrics.steps_estimate([(300, False), (300, False)], HORIZON)
    assert estimate.value == HORIZON
    assert (estimate.low, estimate.high) == (None, None)
    assert not estimate.reached and estimate.censored == 2
    assert estimate.interval_note == "all censored"


def test_none_censored_restricted_mean_is_the_plain_mean():
    observations = [(220, True), (213, True), (167, True)]
    assert metrics.restricted_mean(observations, HORIZON) == pytest.approx((220 + 213 + 167) / 3)


def test_mixed_censoring_restricted_mean_by_hand():
    # times 2 (reached), 4 (censored), 6 (reached), horizon 10:
    # S = 1 on [0, 2); at 2 one of 3 at risk reaches it -> 2/3; 4 leaves the risk set;
    # at 6 the one left reaches it -> 0. Area: 2 x 1 + (6 - 2) x 2/3 = 14/3.
    observations = [(2, True), (4, False), (6, True)]
    assert metrics.restricted_mean(observations, 10) == pytest.approx(14 / 3)
    # cut at a horizon inside the curve: 2 x 1 + (5 - 2) x 2/3 = 4
    assert metrics.restricted_mean(observations, 5) == pytest.approx(4.0)


def test_censored_at_the_horizon_counts_as_the_horizon():
    # the usual case: a censored seed ran all max_steps; the restricted mean is then mean(min(T, horizon))
    assert metrics.restricted_mean([(220, True), (300, False)], HORIZON) == pytest.approx(260.0)
    assert metrics.capped_steps([(220, True), (300, False), (350, True)], HORIZON) == [220, 300, 300]
    # the old estimate (converged seeds only) said 220: a partly censored cell looked faster than it is


def test_a_tie_counts_the_event_before_the_censoring():
    # at 4, one reaches the target and one is censored: both were at risk at 4
    # S: 1 on [0, 4), 1 - 1/2 = 1/2 after; area to 10 = 4 + 6 x 1/2 = 7
    assert metrics.restricted_mean([(4, False), (4, True)], 10) == pytest.approx(7.0)


def test_tied_events_leave_the_risk_set_together():
    # 2, 2, 4, 6 all reached: S = 1/2 after 2, 1/4 after 4, 0 after 6: area 2 + 2/2 + 2/4 = 3.5 = the mean
    assert metrics.restricted_mean([(2, True), (2, True), (4, True), (6, True)], 10) == pytest.approx(3.5)


def test_a_seed_censored_before_the_horizon_has_no_capped_count():
    with pytest.raises(ValueError, match="stopped at step 120 without reaching the target, short of max_steps"):
        metrics.capped_steps([(80, True), (120, False)], HORIZON)


def test_seed_observations_cap_censored_runs_at_the_horizon():
    workers = [WorkerOutcome(0, 40, 40, 0.9, 0.1), WorkerOutcome(1, 300, None, 0.6, 0.1)]
    assert metrics.seed_observations(workers, HORIZON) == [(40, True), (300, False)]
    assert metrics.format_seed_outcomes([(40, True), (300, False)]) == "40 >300"
    assert metrics.parse_seed_outcomes("40 >300") == [(40, True), (300, False)]
    assert metrics.parse_seed_values(metrics.format_seed_values([0.4521, 0.5])) == [0.4521, 0.5]
    assert metrics.parse_seed_values(float("nan")) == []


# ---- one cell's interval: Student t over its seeds' capped counts -------------------------------


def test_the_steps_interval_is_the_student_t_interval_of_the_capped_counts():
    # 250, 290, 260, 280: mean 270, sd sqrt(1000 / 3); half width t(0.975, 3) x sd / 2
    estimate = metrics.steps_estimate([(250, True), (290, True), (260, True), (280, True)], HORIZON)
    half = T_975_3 * math.sqrt(1000 / 3) / 2
    assert estimate.value == 270 and (estimate.low, estimate.high) == pytest.approx((270 - half, 270 + half))
    assert estimate.interval_note is None


def test_the_steps_interval_stops_at_the_horizon_and_at_one_step():
    # two seeds, 220 and 280: mean 250, sd 42.43; t(0.975, 1) = 12.71 -> 250 +- 381: cut to [1, 300]
    estimate = metrics.steps_estimate([(220, True), (280, True)], HORIZON)
    assert T_975_1 * math.sqrt(1800) / math.sqrt(2) > 250
    assert (estimate.low, estimate.high) == (1, HORIZON)


def test_no_interval_from_one_seed_or_from_seeds_that_agree():
    assert metrics.steps_estimate([(150, True)] * 3, HORIZON).interval_note == "seeds equal"
    assert metrics.steps_estimate([(150, True)], HORIZON).interval_note == "one seed"
    assert metrics.steps_estimate([(150, True)], HORIZON).low is None


def test_wall_interval_scales_the_steps_interval_by_the_measured_step_time():
    estimate = metrics.StepsEstimate(value=100, low=80, high=130, horizon=HORIZON, n=2, censored=0)
    assert metrics.wall_interval(estimate, 0.5) == (50, 40, 65)
    assert metrics.wall_interval(estimate, None) is None
    unreached = metrics.StepsEstimate(value=300, low=None, high=None, horizon=HORIZON, n=2, censored=2)
    assert metrics.wall_interval(unreached, 0.5) is None
    no_interval = metrics.StepsEstimate(value=100, low=None, high=None, horizon=HORIZON, n=1, censored=0)
    assert metrics.wall_interval(no_interval, 0.5) == (50, None, None)


# ---- speedups ------------------------------------------------------------------------------------


def test_speedup_interval_is_the_ratio_interval_of_the_walls():
    from lorasweep.analysis import inference

    base, cell = [(200, True), (240, True), (210, True), (230, True)], [(100, True)] * 3 + [(110, True)]
    speedup, low, high = metrics.speedup_interval(base, 0.1, cell, 0.2, HORIZON)
    assert speedup == pytest.approx((220 * 0.1) / (102.5 * 0.2))
    assert (speedup, low, high) == inference.ratio_interval([20.0, 24.0, 21.0, 23.0], [20.0, 20.0, 20.0, 22.0])
    assert low < speedup < high
    # no seed of the cell reached the target: no speedup
    assert metrics.speedup_interval(base, 0.1, [(300, False)] * 4, 0.2, HORIZON) is None


def test_a_speedup_the_seeds_cannot_bound_has_no_interval():
    # two seeds a cell, the cell's walls 2 s and 60 s: at t(0.975, ~1) its mean is not clearly above 0
    speedup, low, high = metrics.speedup_interval([(200, True), (240, True)], 0.1, [(10, True), (300, True)], 0.2,
                                                  HORIZON)
    assert speedup == pytest.approx(22.0 / 31.0) and (low, high) == (None, None)
    # equal seeds in both cells: no spread, no interval
    assert metrics.speedup_interval([(200, True)] * 2, 0.1, [(100, True)] * 2, 0.2, HORIZON)[1:] == (None, None)


def test_no_speedup_without_both_step_times_and_no_step_time_without_a_worker_that_has_one():
    base, cell = [(200, True), (240, True)], [(100, True), (100, True)]
    assert metrics.speedup_interval(base, None, cell, 0.2, HORIZON) is None
    assert metrics.speedup_interval(base, 0.1, cell, None, HORIZON) is None
    assert CellOutcome(workers=[], worker_step_times={0: None, 1: None}).step_time is None


# ---- the lr-scaling table ----------------------------------------------------------------------


def outcome(steps, step_time, early=None, horizon=HORIZON):
    early = early or [None] * len(steps)
    workers = [WorkerOutcome(seed, s or horizon, s, None, step_time, e) for seed, (s, e) in enumerate(zip(steps, early))]
    return CellOutcome(workers=workers, worker_step_times={w.seed: step_time for w in workers})


DEGENERACY = {"samples": 20, "max_distinct_flag": 7, "min_jaccard_flag": 0.18}


def cell(bs, lr, control=False, n=4):
    return {"rank": 32, "batch_size": bs, "lr": lr, "control": control, "n": n}


def table_rows():
    return tables.lr_scaling_rows([
        (cell(8, 5e-4), outcome([250, 290, 260, 280], 0.10, [0.40, 0.42, 0.44, 0.46]), {}),
        (cell(16, 1e-3), outcome([140, None, 150, 160], 0.15, [0.50, 0.50, 0.50, 0.50]), {}),
        (cell(32, 2e-3), outcome([80, 90, 85, 85], 0.25, [0.55, 0.57, 0.56, 0.56]), {}),
        (cell(32, 5e-4, control=True), outcome([None] * 4, 0.25), {}),
    ], base_batch_size=8, max_steps=HORIZON, early_steps=20, group_size=8)


def test_lr_scaling_rows_carry_the_estimate_and_its_intervals():
    rows = {(r["batch_size"], r["is_control"]): r for r in table_rows()}
    base, partly, largest, control = rows[8, False], rows[16, False], rows[32, False], rows[32, True]
    half = T_975_3 * math.sqrt(1000 / 3) / 2
    assert base["avg_steps"] == 270 and (base["steps_lo"], base["steps_hi"]) == pytest.approx((270 - half, 270 + half))
    assert base["wall"] == pytest.approx(27.0)
    assert (base["wall_lo"], base["wall_hi"]) == pytest.approx((27 - half / 10, 27 + half / 10))
    assert base["speedup"] == 1 and base["speedup_lo"] is None and base["is_reference"]  # the reference
    # the censored seed counts as 300: (140 + 300 + 150 + 160) / 4, not the mean of the other three
    assert partly["avg_steps"] == 187.5 and partly["steps_per_seed"] == "140 >300 150 160"
    assert largest["wall"] == pytest.approx(85 * 0.25)
    assert largest["speedup"] == pytest.approx(27.0 / 21.25)
    assert largest["speedup_lo"] < largest["speedup"] < largest["speedup_hi"]
    assert control["avg_steps"] is None and control["wall"] is None and control["steps_lo"] is None
    assert control["interval_note"] == "all censored" and control["horizon"] == HORIZON
    # the early reward: mean 0.43, sd sqrt(0.002 / 3) over the four seeds
    early_half = T_975_3 * math.sqrt(0.002 / 3) / 2
    assert base["early_reward"] == pytest.approx(0.43)
    assert (base["early_lo"], base["early_hi"]) == pytest.approx((0.43 - early_half, 0.43 + early_half))
    assert base["early_per_seed"] == "0.4 0.42 0.44 0.46" and base["early_steps"] == 20
    assert partly["early_lo"] is None  # four equal values: no spread, no interval
    assert control["early_reward"] is None and control["early_per_seed"] is None


# table_rows(): rank 32, base batch size 8, horizon 300, four seeds per cell.
#   bs 8:  250, 290, 260, 280 at 0.10 s/step -> mean 270, sd 18.26, half width t(.975, 3) 3.182 x 18.26 / 2
#          = 29.05: [241, 299] steps, [24.1 s, 29.9 s] wall; the base: speedup 1.0x, the reference.
#          Early reward 0.40-0.46: 0.430, half width 3.182 x 0.0258 / 2 = 0.041 -> [0.389, 0.471].
#   bs 16: 140, censored (300), 150, 160 at 0.15 s -> 187.5, sd 75.4, half 120.0 -> [67, 300] (cut at the
#          horizon); wall 28 s; speedup 27 / 28.1 = 0.96 (starred: a censored seed).
#   bs 32: 80, 90, 85, 85 at 0.25 s -> 85, sd 4.08, half 6.50 -> [79, 91]; wall 21.25 s; speedup 1.27.
#   control: every seed censored -> not reached, no wall, no speedup, no interval.
#   The speedup intervals are Fieller's (test_inference checks its formula by hand): bs 32, walls
#   25, 29, 26, 28 s against 20, 22.5, 21.25, 21.25 s -> [1.14, 1.41]; bs 16, against 21, 45, 22.5,
#   24 s (the censored seed's 300 steps) -> [0.58, 2.54].
def test_the_lr_scaling_table_whole():
    text = tables.lr_scaling_markdown(table_rows(), 0.75, HORIZON, DEGENERACY)
    assert text == LR_SCALING_BODY + LR_SCALING_NOTES


LR_SCALING_BODY = """\
| bs   | lr                | avg steps to 0.75        | step_time   | wall to 0.75   | speedup   | steps 95% CI   | wall 95% CI   | speedup 95% CI   | reward, first 20 steps [95% CI]   | steps min–max   | censored   | degenerate   |
|------|-------------------|--------------------------|-------------|----------------|-----------|----------------|---------------|------------------|-----------------------------------|-----------------|------------|--------------|
| 8    | 5e-4              | 270                      | 0.10s       | 27s            | 1.0x      | [241, 299]     | [24s, 30s]    | (reference)      | 0.430 [0.389, 0.471]              | 250–290         | 0/4        | —            |
| 16   | 1e-3              | 188 (1 of 4 not reached) | 0.15s       | 28s            | 1.0x*     | [67, 300]      | [10s, 45s]    | [0.58x, 2.54x]   | 0.500                             | 140–160         | 1/4        | —            |
| 32   | 2e-3              | 85                       | 0.25s       | 21s            | 1.3x      | [79, 91]       | [20s, 23s]    | [1.14x, 1.41x]   | 0.560 [0.547, 0.573]              | 80–90           | 0/4        | —            |
| 32   | 5e-4 (no scaling) | not reached (> 300)      | 0.25s       | —              | —         | —              | —             | —                | —                                 | —               | 4/4        | —            |"""

LR_SCALING_NOTES = """

\\* some seeds did not reach the target: they count as reaching it no sooner than max_steps (300), so the average and the wall are lower bounds for that cell.

degenerate = seeds whose 20 samples of held-out prompts (taken when the run reached its target, or after its last step) have at most 7 distinct first sentences or a mean pairwise Jaccard similarity of word sets of at least 0.18 (samples: results/tables/samples.md).

avg steps to target: restricted mean up to max_steps = 300 (Kaplan–Meier) over seeds; a seed that did not reach the target counts as 300 steps (censored: its own count is larger). wall = avg steps × step_time, with step_time as measured (no interval of its own). Intervals of one cell (steps, wall, early reward): 95% Student-t over its seeds' values. Speedup interval: Fieller's interval for the ratio of the two cells' mean walls (Welch degrees of freedom); a dash where the seeds cannot bound it. early reward: each seed's mean batch reward over its first 20 steps, averaged over seeds."""


def test_the_headline_table_puts_each_interval_beside_its_value():
    assert tables.headline_table(table_rows(), 0.75, HORIZON, tablefmt="github") == """\
| bs   | lr                | avg steps to 0.75 [95% CI]         | step_time   | wall to 0.75 [95% CI]   | speedup [95% CI]     |
|------|-------------------|------------------------------------|-------------|-------------------------|----------------------|
| 8    | 5e-4              | 270 [241, 299]                     | 0.10s       | 27s [24s, 30s]          | 1.0x                 |
| 16   | 1e-3              | 188 (1 of 4 not reached) [67, 300] | 0.15s       | 28s [10s, 45s]          | 1.0x* [0.58x, 2.54x] |
| 32   | 2e-3              | 85 [79, 91]                        | 0.25s       | 21s [20s, 23s]          | 1.3x [1.14x, 1.41x]  |
| 32   | 5e-4 (no scaling) | not reached (> 300)                | 0.25s       | —                       | —                    |"""


def row(**changes):
    """An lr-scaling row as lr_scaling_rows makes it, one cell reached by every seed."""
    base = {"rank": 4, "batch_size": 8, "lr": 1e-3, "is_control": False, "n": 3, "avg_steps": 100.0,
            "min_steps": 90, "max_steps": 110, "censored": 0, "steps_per_seed": "90 100 110", "step_time": 0.1,
            "wall": 10.0, "steps_lo": 90.0, "steps_hi": 110.0, "wall_lo": 9.0, "wall_hi": 11.0, "horizon": 50,
            "interval_note": None, "degenerate": 1, "judged": 3, "speedup": 1.0, "speedup_lo": None,
            "speedup_hi": None, "is_reference": True}
    return {**base, **changes}


def body_cells(md: str) -> list:
    """The cells of the table's first body row."""
    return [c.strip() for c in md.splitlines()[2].strip("|").split("|")]


def test_seconds_switch_to_whole_numbers_at_ten():
    # wall 10.0 -> "10s" (10 or more: no decimal); its interval starts at 9 -> one decimal for both ends
    cells = body_cells(tables.lr_scaling_markdown([row()], 0.9, 50, DEGENERACY))
    assert cells[2:9] == ["100", "0.10s", "10s", "1.0x", "[90, 110]", "[9.0s, 11.0s]", "(reference)"]
    assert cells[9:] == ["—", "90–110", "0/3", "1/3"]
    # just under ten: one decimal; an interval from exactly 10: whole seconds
    cells = body_cells(tables.lr_scaling_markdown([row(wall=9.96, wall_lo=10.0, wall_hi=12.4)], 0.9, 50, DEGENERACY))
    assert (cells[4], cells[7]) == ("10.0s", "[10s, 12s]")


def test_a_cell_without_an_interval_says_why():
    cells = body_cells(tables.lr_scaling_markdown([row(steps_lo=None, steps_hi=None, interval_note="seeds equal")],
                                                  0.9, 50, DEGENERACY))
    assert cells[6] == "— (seeds equal)"
    # a speedup the seeds cannot bound: a dash with the reason, never a number
    cells = body_cells(tables.lr_scaling_markdown([row(speedup=1.4, is_reference=False)], 0.9, 50, DEGENERACY))
    assert cells[8] == "— (too few seeds to bound it)"


def test_the_csv_keeps_every_column_and_value():
    assert tables.to_csv(table_rows()[:1]) == (
        "rank,batch_size,lr,is_control,n,avg_steps,min_steps,max_steps,censored,steps_per_seed,step_time,wall,"
        "steps_lo,steps_hi,wall_lo,wall_hi,horizon,interval_note,early_steps,early_reward,early_lo,early_hi,"
        "early_per_seed,noise_early_g2_per_seed,noise_early_trace_per_seed,noise_late_g2_per_seed,"
        "noise_late_trace_per_seed,noise_all_g2_per_seed,noise_all_trace_per_seed,groups,degenerate,judged,speedup,"
        "speedup_lo,speedup_hi,is_reference\n"
        "32,8,0.0005,False,4,270.0,250,290,0,250 290 260 280,0.1,27.0,240.94837284245236,299.05162715754767,"
        "24.094837284245237,29.90516271575477,300,,20,0.43,0.3889147948647896,0.4710852051352104,0.4 0.42 0.44 0.46,"
        ",,,,,,1,,0,1.0,,,True\n"
    )


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
    references = {(r["rank"], r["batch_size"], r["is_control"]) for r in rows if r["is_reference"]}
    assert references == {(4, 8, False), (32, 8, False)}
    control = next(r for r in table_rows() if r["is_control"])
    assert control["steps_lo"] is None and control["steps_hi"] is None  # no interval in the CSV either


def test_the_note_says_when_no_comparison_can_be_resolved():
    assert "With 2/3 seed(s) per cell no comparison of two cells can be resolved at 95%" in \
        tables.estimates_note([row(n=3), row(n=2)], 50)
    assert "smallest possible p-value is 0.10" in tables.estimates_note([row(n=3)], 50)
    assert "can be resolved" not in tables.estimates_note([row(n=4)], 50)
    assert "can be resolved" not in tables.estimates_note([], 50)


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

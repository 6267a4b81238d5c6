"""The tables' text, whole, on hand-computed rows: every figure a reader sees, and how it is rounded.

The other table tests pick single cells; these compare the full markdown (and CSV) so that a
change in a format, a rounding threshold or a column's source shows as a failing line.
"""

from lorasweep import tables
from lorasweep.throughput import throughput_rows
from test_estimates import DEGENERACY, HORIZON, table_rows
from test_tables_degeneracy import CELL, COHERENT, COLLAPSED, RULE

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


def test_the_concurrency_table_whole():
    # n / step_time: 1 / 0.5 = 2.00, 2 / 0.8 = 2.50, 4 / 1.25 = 3.20 steps/s; samples/s x 8: 16, 20, 25.6 -> 26;
    # efficiency (agg / n) / 2: 1.00, 0.625 -> 0.62 (half to even), 0.40
    levels = [{"n": n, "step_time": t, "batch_size": 8} for n, t in ((4, 1.25), (1, 0.5), (2, 0.8))]
    assert tables.concurrency_markdown(throughput_rows(levels)) == """\
| concurrent   | step_time   | agg. throughput   | samples/s   | efficiency   |
|--------------|-------------|-------------------|-------------|--------------|
| 1            | 0.50s       | 2.00 steps/s      | 16          | 1.00         |
| 2            | 0.80s       | 2.50 steps/s      | 20          | 0.62         |
| 4            | 1.25s       | 3.20 steps/s      | 26          | 0.40         |"""


def test_the_csv_keeps_every_column_and_value():
    assert tables.to_csv(table_rows()[:1]) == (
        "rank,batch_size,lr,is_control,n,avg_steps,min_steps,max_steps,censored,steps_per_seed,step_time,wall,"
        "steps_lo,steps_hi,wall_lo,wall_hi,horizon,interval_note,degenerate,judged,speedup,speedup_lo,speedup_hi\n"
        "32,8,0.0005,False,2,270.0,250,290,0,250 290,0.1,27.0,250.0,290.0,25.0,29.0,300,,,0,1.0,,\n"
    )


def test_the_samples_page_whole():
    # COLLAPSED: 4 x "the end." -> 1 distinct first sentence, Jaccard 1, bigrams 4 x (the, end): 1 / 4 distinct.
    # COHERENT: 4 distinct, no shared word (Jaccard 0), bigrams (a dog) (dog ran) (the cat) (cat sat)
    # (birds sing) (sing loud) (we ate) (ate cake): 8 of 8 distinct.
    control = {**CELL, "control": True, "batch_size": 4}
    page = tables.samples_markdown([(CELL, {1: COHERENT, 0: COLLAPSED}), (control, {})], RULE, per_seed=1)
    # the control sorts after the scaled cells of its rank, whatever its batch size
    assert page == """\
### rank 4, bs 8, lr 1e-3

seed 0, after step 2 (it reached its target 0.9): 1 of 4 first sentences distinct, mean Jaccard 1.000, distinct-2 0.250 · **degenerate**

```
once upon | the end.
```

seed 1, after step 3 (its last step, short of its target 0.9): 4 of 4 first sentences distinct, mean Jaccard 0.000, distinct-2 1.000 · not flagged

```
once upon | a dog ran.
```

### rank 4, bs 4, lr 1e-3 (no scaling)

no samples recorded
"""


def test_a_backtick_in_a_sample_cannot_close_its_fence():
    record = {**COLLAPSED, "samples": [{"prompt": "say", "completion": "a `b` c."}]}
    page = tables.samples_markdown([(CELL, {0: record})], RULE)
    assert "say | a 'b' c." in page.splitlines()

"""The lr-scaling table's degenerate column and the samples page, on hand-made cells."""

from lorasweep.analysis import metrics, tables

RULE = {"samples": 4, "max_distinct_flag": 1, "min_jaccard_flag": 0.5}
CELL = {"rank": 4, "batch_size": 8, "lr": 1e-3, "control": False, "n": 2}


def records(rewards):
    return [{"step": i + 1, "reward_mean": r, "step_s": 1.0, "t_start": float(i), "t_end": i + 1.0}
            for i, r in enumerate(rewards)]


def samples(step, reached, completions):
    return {"seed": 0, "step": step, "target": 0.9, "reached_target": reached,
            "samples": [{"prompt": "once upon", "completion": c} for c in completions]}


COLLAPSED = samples(2, True, ["the end."] * 4)  # 1 distinct first sentence, Jaccard 1
COHERENT = samples(3, False, ["a dog ran.", "the cat sat.", "birds sing loud.", "we ate cake."])  # 4 distinct, no shared word: Jaccard 0


def test_flags_follow_the_rule_and_the_row_counts_them():
    flags = tables.degenerate_flags({0: COLLAPSED, 1: COHERENT}, RULE)
    assert flags == {0: True, 1: False}
    outcome = metrics.cell_outcome({0: records([0.9, 0.9]), 1: records([0.1, 0.1, 0.1])}, 0.9, 2, 0)
    rows = tables.lr_scaling_rows([(CELL, outcome, flags), ({**CELL, "batch_size": 16}, outcome, {})], 8, 3)
    assert (rows[0]["degenerate"], rows[0]["judged"]) == (1, 2)
    assert (rows[1]["degenerate"], rows[1]["judged"]) == (None, 0)  # a cell recorded before samples were

    md = tables.lr_scaling_markdown(rows, 0.9, 3, RULE)
    header = next(line for line in md.splitlines() if line.startswith("| bs"))
    assert [c.strip() for c in header.strip("|").split("|")][-3:] == ["steps min–max", "censored", "degenerate"]
    body = [line for line in md.splitlines() if line.startswith("| 8") or line.startswith("| 16")]
    assert body[0].rstrip(" |").endswith("1/2") and body[1].rstrip(" |").endswith("—")
    assert "at most 1 distinct first sentences or a mean pairwise Jaccard similarity of word sets of at least 0.5" in md


def test_samples_page_shows_each_seeds_measures_flag_and_texts():
    page = tables.samples_markdown([(CELL, {0: COLLAPSED, 1: COHERENT})], RULE)
    assert "### rank 4, bs 8, lr 1e-3" in page
    assert ("seed 0, after step 2 (it reached its target 0.9): 1 of 4 first sentences distinct, mean Jaccard 1.000, "
            "distinct-2 0.250 · **degenerate**") in page
    assert "seed 1, after step 3 (its last step, short of its target 0.9): 4 of 4 first sentences distinct" in page
    assert "once upon | a dog ran." in page and "once upon | the cat sat." in page
    assert "birds sing loud." not in page  # two samples per seed


def base_record(completions):
    from lorasweep.training import degeneracy

    texts = [{"prompt": "once upon", "completion": c} for c in completions]
    return {"step": 0, **degeneracy.measure(completions), "samples": texts}


def test_the_untrained_base_is_the_reference_under_the_table_and_first_on_the_samples_page():
    base = base_record(["a dog ran.", "the cat sat.", "birds sing loud.", "we ate cake."])
    outcome = metrics.cell_outcome({0: records([0.9, 0.9])}, 0.9, 2, 0)
    rows = tables.lr_scaling_rows([(CELL, outcome, {0: True})], 8, 3)
    md = tables.lr_scaling_markdown(rows, 0.9, 3, RULE, base)
    assert ("The untrained base, sampled alike: 4 of 4 first sentences distinct, mean Jaccard 0.000, "
            "distinct-2 1.000 (not flagged).") in md
    page = tables.samples_markdown([(CELL, {0: COLLAPSED})], RULE, base_samples=base)
    assert page.index("### the base model, untrained (the reference)") < page.index("### rank 4, bs 8")
    assert "once upon | a dog ran." in page and "birds sing loud." not in page


def test_a_base_the_rule_already_flags_is_called_out():
    # the base itself repeats one sentence: every flag of its runs would mean nothing
    base = base_record(["the end."] * 4)
    md = tables.lr_scaling_markdown([], 0.9, 3, RULE, base)
    assert "1 of 4 first sentences distinct, mean Jaccard 1.000" in md
    assert "flagged by the same rule, so on this base the rule cannot tell a collapsed run" in md


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

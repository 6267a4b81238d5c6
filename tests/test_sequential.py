"""Seeds where the answer is still open: the sequential design's error rate, its decisions, and a tiny study."""

import json
import math
import re
import shutil

import numpy as np
import pytest

from lorasweep.analysis import coverage, inference, sequential
from lorasweep.study import grid
from workflow import snakemake

REPLICATES = 4000


def max_false_rate(replicates: int) -> float:
    return inference.ALPHA + 3 * math.sqrt(inference.ALPHA * (1 - inference.ALPHA) / replicates)


def sequential_false_resolution(rng, plan: dict, alpha_per_look: float, name: str = "typical") -> float:
    """Share of replicates in which a null claim is resolved at some look of the plan (both cells one distribution)."""
    ns = list(range(plan["initial"], plan["max"] + 1, plan["block"]))
    x, y = coverage.pair_samples(rng, name, name, plan["max"], REPLICATES)
    resolved = np.zeros(REPLICATES, dtype=bool)
    for n in ns:  # each look sees the seeds so far; a resolved replicate stops (stays resolved)
        resolved |= inference.permutation_p_value(x[:, :n], y[:, :n]) <= alpha_per_look
    return float(resolved.mean())


@pytest.mark.parametrize("plan", [{"initial": 4, "block": 4, "max": 16}, {"initial": 6, "block": 2, "max": 12}],
                         ids=["4-4-16", "6-2-12"])
def test_the_sequential_procedure_resolves_a_null_claim_at_most_five_percent_of_the_time(plan):
    cfg = {"n": plan}
    rate = sequential_false_resolution(np.random.default_rng(len(str(plan))), plan, sequential.alpha_per_look(cfg))
    assert rate <= max_false_rate(REPLICATES)
    assert sequential.alpha_per_look(cfg) == pytest.approx(0.05 / sequential.looks(cfg))


def test_looking_again_without_the_correction_resolves_too_often():
    # the same four looks, each at 0.05: the repeated looks spend more than 5% in all
    plan = {"initial": 6, "block": 2, "max": 12}
    assert sequential_false_resolution(np.random.default_rng(1), plan, 0.05) > max_false_rate(REPLICATES)


def test_blocks_and_looks_of_a_plan():
    cfg = {"n": {"initial": 4, "block": 4, "max": 16}}
    assert grid.is_sequential(cfg) and grid.rounds(cfg) == 3 and sequential.looks(cfg) == 4
    assert [grid.block_seeds(cfg, k, 100) for k in range(4)] == [(100, 4), (104, 4), (108, 4), (112, 4)]
    fixed = {"n": {"initial": 6, "max": 6}}
    assert not grid.is_sequential(fixed) and grid.rounds(fixed) == 0 and sequential.alpha_per_look(fixed) == 0.05
    assert grid.seed_plan({"n": 6}) == grid.seed_plan(fixed) == {"initial": 6, "block": 6, "max": 6}


def test_a_fixed_plan_makes_the_cells_it_always_made():
    base = {"enabled": True, "ranks": [4], "batch_sizes": [8, 32], "base_batch_size": 8, "base_lr": 1e-3,
            "scaling": "linear", "controls": [{"batch_size": 32, "lr": 1e-3}], "packing": "fused"}
    old = [c.cell_id for c in grid.lr_scaling_cells({**base, "n": 6})]
    assert old == ["r4_bs8_lr1e-03_n6_fused", "r4_bs32_lr4e-03_n6_fused", "r4_bs32_lr1e-03_n6_fused"]
    assert [c.cell_id for c in grid.lr_scaling_cells({**base, "n": {"initial": 6, "max": 6}})] == old
    blocks = [c.cell_id for c in grid.lr_scaling_cells({**base, "n": {"initial": 4, "block": 2, "max": 6}})]
    assert blocks[:2] == ["r4_bs8_lr1e-03_n4_fused_b0", "r4_bs8_lr1e-03_n2_fused_b1"] and len(blocks) == 6


def row(bs, seeds, early, control=False, n=None):
    return {"rank": 4, "batch_size": bs, "lr": 1e-3 * bs / 8 if not control else 1e-3, "is_control": control,
            "n": n or len(seeds.split()), "steps_per_seed": seeds, "horizon": 300, "step_time": 0.1,
            "early_per_seed": early, "early_steps": 20}


def test_a_decision_stops_the_cells_of_resolved_claims_and_continues_the_open_ones():
    cfg = {"n": {"initial": 6, "block": 2, "max": 10}}  # 3 looks, 0.05 / 3 each
    rows = [row(8, "200 210 190 205 195 200", "0.40 0.41 0.42 0.40 0.41 0.42"),
            row(32, "80 85 90 82 88 84", "0.55 0.56 0.57 0.55 0.56 0.57"),
            row(32, "84 80 90 85 82 88", "0.56 0.55 0.57 0.56 0.55 0.57", control=True),
            row(16, "150 160 140 155 145 150", "0.45 0.46 0.47 0.45 0.46 0.47")]
    state = sequential.decide(rows, cfg, 1)
    # bs 8 against bs 32 apart in every seed: settled at look 1; the control and the scaled bs 32 alike: open
    assert "rank 4: fewer_steps" in state["settled"] and "rank 4: higher_early_reward" in state["settled"]
    assert state["settled"]["rank 4: fewer_steps"]["look"] == 1 and state["alpha_per_look"] == pytest.approx(0.05 / 3)
    assert state["continue"] == ["r4_bs32_lr1e-03_control", "r4_bs32_lr4e-03"]
    # bs 16 stands in no claim: it stops at once, and says why
    assert state["stopped"] == {"r4_bs8_lr1e-03": "stopped: its comparisons resolved at n = 6",
                                "r4_bs16_lr2e-03": "stopped: in no claim (n = 6)"}
    # the next look: still open at 8 seeds, not past max yet
    more = [rows[0], rows[3], row(32, "80 85 90 82 88 84 86 83", "0.55 0.56 0.57 0.55 0.56 0.57 0.56 0.55"),
            row(32, "84 80 90 85 82 88 83 86", "0.56 0.55 0.57 0.56 0.55 0.57 0.55 0.56", control=True)]
    later = sequential.decide(more, cfg, 2, state)
    assert later["continue"] == ["r4_bs32_lr1e-03_control", "r4_bs32_lr4e-03"]
    final = sequential.final_state(more, cfg, later)
    assert final["continue"] == [] and final["stopped"]["r4_bs32_lr4e-03"] == "stopped: max reached (n = 8)"
    # the settled claim keeps its look's verdict in the final report
    [verdict] = sequential.final_verdicts(more, cfg, final)
    fewer = next(c for c in verdict["claims"] if c["claim"] == "fewer_steps")
    assert fewer["look"] == 1 and fewer["seeds"] == [6, 6]


@pytest.fixture(scope="module")
def sequential_study(tiny_study, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sequential") / "study"
    shutil.copytree(tiny_study, workdir, symlinks=True)
    shutil.rmtree(workdir / "results" / "cells")
    shutil.rmtree(workdir / "results" / "tables")
    dry = snakemake(workdir, "--configfile", "tests/data/sequential.yaml", "--dry-run")
    snakemake(workdir, "--configfile", "tests/data/sequential.yaml")
    return workdir, dry.stdout


def test_round_0_plans_every_cells_first_block_and_the_checkpoint(sequential_study):
    _, dry = sequential_study
    planned = set(re.findall(r"cell=(\S+)", dry))
    assert planned == {"r4_bs4_lr2e-03_n5_fused_b0", "r4_bs8_lr4e-03_n5_fused_b0", "r4_bs8_lr2e-03_n5_fused_b0"}
    assert "checkpoint sequential_round" in dry or "rule sequential_round" in dry


def test_a_large_difference_stops_after_the_first_round_and_no_difference_runs_to_max(sequential_study):
    workdir, _ = sequential_study
    results = workdir / "results"
    decision = json.loads((results / "sequential/round1.json").read_text())
    assert decision["continue"] == ["r4_bs8_lr2e-03_control", "r4_bs8_lr4e-03"]
    assert decision["stopped"] == {"r4_bs4_lr2e-03": "stopped: its comparisons resolved at n = 5"}
    blocks = sorted(p.name for p in (results / "cells/lr_scaling").iterdir())
    assert blocks == ["r4_bs4_lr2e-03_n5_fused_b0", "r4_bs8_lr2e-03_n1_fused_b1", "r4_bs8_lr2e-03_n5_fused_b0",
                      "r4_bs8_lr4e-03_n1_fused_b1", "r4_bs8_lr4e-03_n5_fused_b0"]
    # block 1's one seed is seed 5, after block 0's 0..4
    assert json.loads((results / "cells/lr_scaling/r4_bs8_lr4e-03_n1_fused_b1/summary.json").read_text())[
        "workers"][0]["seed"] == 5
    md = (results / "tables/lr_scaling.md").read_text()
    assert "| seeds" in md and "5 (stopped: its comparisons resolved at n = 5)" in md
    assert "6 (stopped: max reached (n = 6))" in md
    rec = (results / "tables/recommendations.md").read_text()
    fewer = next(line for line in rec.splitlines() if "needs fewer steps than bs 4" in line)
    assert "resolved, it holds (exact permutation test, 5 seeds per cell, look 1 of 2, p = 0.00794 <= 0.025)" in fewer
    control = next(line for line in rec.splitlines() if "the control (bs 8, unscaled lr 2e-3) needs more steps" in line)
    assert "not resolved" in control and "6 seeds per cell, look 2 of 2" in control
    assert "Sequential: sequential seeds: 5 per cell first, then 1 more per round" in rec


def test_a_finished_sequential_study_plans_nothing(sequential_study):
    workdir, _ = sequential_study
    out = snakemake(workdir, "--configfile", "tests/data/sequential.yaml", "--dry-run")
    assert "Nothing to be done" in out.stdout + out.stderr


FLAT = "0.40 0.40 0.40 0.40 0.40 0.40"


def test_each_look_tests_at_its_share_of_alpha_and_every_open_claim_keeps_its_cells():
    cfg = {"n": {"initial": 6, "block": 4, "max": 12}}  # one more round: 2 looks, 0.025 each
    rows = [row(8, "150 160 140 155 145 150", FLAT),
            row(32, "140 130 150 135 120 140", FLAT),  # fewer steps at p = 0.0303: open at 0.025, not at 0.05
            row(32, "150 160 140 155 145 150", FLAT, control=True)]
    state = sequential.decide(rows, cfg, 1)
    assert (state["round"], state["looks"], state["plan"]) == (1, 2, {"initial": 6, "block": 4, "max": 12})
    assert state["settled"] == {} and state["stopped"] == {}
    # the bs-8 cell is in the open fewer-steps claim, the control in the open control claims: all three go on
    assert state["continue"] == ["r4_bs32_lr1e-03_control", "r4_bs32_lr4e-03", "r4_bs8_lr1e-03"]
    # at 10 seeds one more block of 4 would pass max: they stop, saying so
    ten = [dict(r, n=10) for r in rows]
    assert sequential.decide(ten, cfg, 2, state)["stopped"] == {
        label: "stopped: max reached (n = 10)" for label in state["continue"]}
    # the final reading also tests at 0.025: the claim stays open there, and says it was read at the last look
    [verdict] = sequential.final_verdicts(rows, cfg, sequential.final_state(rows, cfg, state))
    fewer = next(c for c in verdict["claims"] if c["claim"] == "fewer_steps")
    assert not fewer["resolved"] and (fewer["look"], fewer["looks"]) == (2, 2)


def test_a_claim_settled_at_a_look_records_its_rank_and_the_planned_looks():
    cfg = {"n": {"initial": 6, "block": 2, "max": 10}}
    rows = [row(8, "200 210 190 205 195 200", FLAT), row(32, "80 85 90 82 88 84", FLAT),
            row(32, "84 80 90 85 82 88", FLAT, control=True)]
    final = sequential.final_state(rows, cfg)  # nothing settled before: the claim settles at the last look
    settled = final["settled"]["rank 4: fewer_steps"]
    assert (settled["rank"], settled["look"], settled["looks"]) == (4, 3, 3)


def test_a_fixed_design_tests_at_alpha_and_the_rule_states_the_plan(tmp_path):
    assert sequential.alpha_per_look({"n": 6}) == 0.05
    assert sequential.alpha_per_look({"n": {"initial": 6, "block": 3, "max": 12}}) == pytest.approx(0.05 / 3)
    rule = sequential.sequential_rule({"n": {"initial": 6, "block": 3, "max": 12}})
    assert rule.startswith("sequential seeds: 6 per cell first, then 3 more per round for the cells of claims "
                           "still open, up to 12; 3 planned looks, each resolving at p <= 0.05 / 3 = 0.0167")
    assert rule.endswith("a claim keeps the verdict of the look that resolved it")
    assert sequential.label_of(row(32, "1 2", "0.1 0.2", control=True)) == "r4_bs32_lr1e-03_control"
    path = tmp_path / "round1.json"
    path.write_text('{"round": 1, "settled": {}}', encoding="utf-8")
    assert sequential.read_state(path) == {"round": 1, "settled": {}}
    assert sequential.read_state(tmp_path / "none.json") is None and sequential.read_state(None) is None


def test_a_sequential_cells_step_time_is_its_first_blocks():
    from types import SimpleNamespace

    from lorasweep.analysis import aggregate, metrics

    first = metrics.CellOutcome(workers=[SimpleNamespace(seed=s) for s in (1, 0)], worker_step_times={0: 0.60, 1: 0.62})
    later = metrics.CellOutcome(workers=[SimpleNamespace(seed=2)], worker_step_times={2: 0.40})  # a smaller block
    merged = aggregate.merge_outcomes([first, later])
    assert [w.seed for w in merged.workers] == [0, 1, 2]
    assert merged.step_time == pytest.approx(0.61) and merged.worker_step_times == {0: 0.60, 1: 0.62}

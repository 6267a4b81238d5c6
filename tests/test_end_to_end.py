"""The whole pipeline at a tiny scale; the tables' numbers must follow from the per-step data."""

import json
import math
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from workflow import snakemake


def trailing_first(rewards, target, window):
    for i in range(window, len(rewards) + 1):
        if math.fsum(rewards[i - window : i]) / window >= target:
            return i
    return None


@pytest.fixture
def study(tiny_study):
    return tiny_study


def test_tables_follow_from_the_per_step_records(study):
    config = json.loads((study / "results/study/config.json").read_text())
    t = config["training"]
    table = pd.read_csv(study / "results/tables/lr_scaling_rank4.csv")
    cells_converged = 0
    assert len(table) == 3 and table["is_control"].sum() == 1  # two scaled cells and the control
    for row in table.itertuples():
        cell_dirs = list((study / "results/cells/lr_scaling").glob(f"r{row.rank}_bs{row.batch_size}_lr*_n{row.n}"))
        cell = next(d for d in cell_dirs if json.loads((d / "summary.json").read_text())["cell"]["control"] == row.is_control)
        steps = {p.stem: [json.loads(l) for l in p.read_text().splitlines()] for p in (cell / "steps").glob("seed*.jsonl")}
        assert len(steps) == row.n
        reached = [trailing_first([r["reward_mean"] for r in recs], t["target"], t["window"]) for recs in steps.values()]
        for recs, first in zip(steps.values(), reached):
            # a worker stops at its target (not before early_steps), or runs max_steps when censored
            assert len(recs) == (max(first, t["early_steps"]) if first is not None else t["max_steps"])
            assert [r["step"] for r in recs] == list(range(1, len(recs) + 1))
            for r in recs:
                assert r["step_s"] == pytest.approx(r["gen_s"] + r["score_s"] + r["update_s"], rel=1e-6)
                # the linear schedule: the lr of update k (from 0) is lr x (1 - k / schedule_steps)
                assert r["lr"] == pytest.approx(row.lr * (1 - (r["step"] - 1) / t["schedule_steps"]), rel=1e-12)
        converged = [s for s in reached if s is not None]
        assert row.censored == len(reached) - len(converged)
        if converged:
            cells_converged += 1
            # the restricted mean up to max_steps: a censored seed counts as max_steps
            assert row.avg_steps == pytest.approx(statistics.mean(s if s is not None else t["max_steps"] for s in reached))
            assert (row.min_steps, row.max_steps) == (min(converged), max(converged))
            assert row.wall == pytest.approx(row.avg_steps * row.step_time)
            if pd.notna(row.steps_lo):  # no interval when the seeds agree
                assert row.steps_lo <= row.avg_steps <= row.steps_hi
                assert row.wall_lo == pytest.approx(row.steps_lo * row.step_time)
        else:  # every seed censored: no average, no wall, no speedup, never a number that looks measured
            assert row.censored == row.n
            assert pd.isna(row.avg_steps) and pd.isna(row.min_steps) and pd.isna(row.wall) and pd.isna(row.speedup)
        # the early reward: each seed's mean batch reward over its first early_steps steps, then their mean
        early = [statistics.fmean(r["reward_mean"] for r in recs[: t["early_steps"]]) for recs in steps.values()]
        assert row.early_reward == pytest.approx(statistics.fmean(early))
        assert sorted(float(v) for v in row.early_per_seed.split()) == pytest.approx(sorted(early), rel=1e-5)
        post_warmup = [r["step_s"] for recs in steps.values() for r in recs if r["step"] > t["warmup_steps"]]
        assert min(post_warmup) <= row.step_time <= max(post_warmup)
    # the checks above under `if converged` must have run: the tiny study reaches its target somewhere
    assert cells_converged >= 1, "no cell of the tiny study reached the target: the averages went unchecked"
    base = table[(table.batch_size == 4) & ~table.is_control].iloc[0]
    for row in table.itertuples():
        if pd.notna(row.wall) and pd.notna(base.wall):
            assert row.speedup == pytest.approx(base.wall / row.wall)
        else:
            assert pd.isna(row.speedup)


def test_markdown_tables_name_the_base_and_keep_the_study_columns(study):
    md = (study / "results/tables/lr_scaling_rank4.md").read_text()
    assert md.startswith("Base: embedded stand-in")
    header_row = next(line for line in md.splitlines() if line.startswith("| bs"))
    columns = [c.strip() for c in header_row.strip("|").split("|")]
    assert columns[:6] == ["bs", "lr", "avg steps to 0.35", "step_time", "wall to 0.35", "speedup"]
    assert columns[6:] == ["steps 95% CI", "wall 95% CI", "speedup 95% CI", "reward, first 3 steps [95% CI]",
                           "steps min–max", "censored", "degenerate"]
    assert "restricted mean up to max_steps" in md and "95% Student-t over its seeds' values" in md
    # the tiny study's 2 seeds a cell: the note says that no comparison can be resolved with them
    assert "With 2 seed(s) per cell no comparison of two cells can be resolved at 95%" in md
    assert "(no scaling)" in md
    info = json.loads((study / "results/base/base.json").read_text())
    assert info["source"] == "embedded" and len(info["weights_sha256"]) == 64


def test_the_study_trains_as_the_study_did_and_every_seed_leaves_held_out_samples(study):
    t = json.loads((study / "results/study/config.json").read_text())["training"]
    assert (t["loss_type"], t["lr_schedule"], t["schedule_steps"]) == ("grpo", "linear", 2000)
    table = pd.read_csv(study / "results/tables/lr_scaling_rank4.csv")
    assert (table["judged"] == table["n"]).all() and (table["degenerate"] <= table["n"]).all()
    for cell in (study / "results/cells/lr_scaling").iterdir():
        steps = sorted((cell / "steps").glob("seed*.jsonl"))
        samples = sorted((cell / "steps").glob("samples_seed*.json"))
        assert [p.name for p in samples] == [f"samples_{p.stem}.json" for p in steps]
        for steps_path, samples_path in zip(steps, samples):
            record = json.loads(samples_path.read_text())
            assert record["step"] == len(steps_path.read_text().splitlines())  # taken after the last step
            reached = trailing_first([json.loads(l)["reward_mean"] for l in steps_path.read_text().splitlines()],
                                     t["target"], t["window"])
            assert record["reached_target"] == (reached is not None) and record["target"] == t["target"]
            assert len(record["samples"]) == t["degeneracy"]["samples"] == 20
            assert 1 <= record["distinct_first"] <= 20 and 0 <= record["jaccard"] <= 1
    # held-out samples are judged on lr-scaling runs only: concurrency runs count steps, not quality
    assert not list((study / "results/cells/concurrency").glob("*/steps/samples_seed*.json"))
    page = (study / "results/tables/samples.md").read_text()
    # six seeds, and the untrained base first: the reference the seeds are read against
    assert page.count("first sentences distinct") == 7 and "prompt | completion" in page
    assert page.index("### the base model, untrained (the reference)") < page.index("### rank 4")


def test_worker_logs_and_a_rerun_that_has_nothing_to_do(study):
    logs = list((study / "results/logs/cells/lr_scaling").glob("*/seed*.log"))
    assert len(logs) == 6
    for cell_dir in (study / "results/cells/lr_scaling").iterdir():
        summary = json.loads((cell_dir / "summary.json").read_text())
        launcher_log = (study / "results/logs/cells/lr_scaling" / cell_dir.name / "launcher.log").read_text()
        steps = [w["steps_to_target"] for w in summary["workers"]]
        assert (f"cell {cell_dir.name}: done; step time {summary['step_time']:.3f} s, steps to target {steps} "
                f"({summary['censored']} censored)") in launcher_log
        assert "steps/s together" not in launcher_log
    out = snakemake(study, "--configfile", "tests/data/tiny.yaml", "--dry-run")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_concurrency_table_recommendations_and_plots(study):
    table = pd.read_csv(study / "results/tables/concurrency.csv")
    # both series by default (concurrency.packing): n processes, and n runs fused in one process
    assert list(zip(table["packing"], table["n"])) == [("processes", 1), ("processes", 2), ("fused", 1), ("fused", 2)]
    for row in table.itertuples():
        fused = row.packing == "fused"
        suffix = "_fused" if fused else ""
        assert row.agg_steps_per_s == pytest.approx(row.n / row.step_time)
        assert row.samples_per_s == pytest.approx(row.n * row.batch_size / row.step_time)
        per_worker = [float(t) for t in str(row.worker_step_times).split()]
        assert len(per_worker) == row.n
        assert statistics.median(per_worker) == pytest.approx(row.step_time, rel=1e-3)
        summary = json.loads(next((study / "results/cells/concurrency").glob(f"r4_bs4_*_n{row.n}{suffix}/summary.json")).read_text())
        # the suite runs on CPUs: MPS does not apply, and the record says so
        assert summary["mps"]["state"] == "off" and "does not apply" in summary["mps"]["reason"]
        assert summary["device_name"].startswith("CPU (")
        assert summary["threads_per_worker"] == (2 if fused else max(1, 2 // row.n))  # one fused process has them all
        # the launcher's own log gives the same figures (a fixed-step cell: its throughput line)
        cell_dir = next((study / "results/cells/concurrency").glob(f"r4_bs4_*_n{row.n}{suffix}"))
        launcher_log = (study / "results/logs/cells/concurrency" / cell_dir.name / "launcher.log").read_text()
        assert (f"cell {cell_dir.name}: done; step time {summary['step_time']:.3f} s with {row.n} worker(s) "
                f"stepping at once, {row.n / summary['step_time']:.2f} steps/s together") in launcher_log
        assert "steps to target" not in launcher_log
    md = (study / "results/tables/concurrency.md").read_text()
    assert md.splitlines()[2].startswith("Base: embedded stand-in") and "MPS: does not apply (CPU)" in md and "device: CPU (" in md
    assert "fused: n runs in one process" in md and "## processes and fused side by side" in md
    rec = (study / "results/tables/recommendations.md").read_text()
    assert "Best efficiency" in rec and "Rule:" in rec
    for name in ("steps_vs_batch", "wall_per_cell", "concurrency"):
        assert (study / f"results/plots/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recommendations_state_a_verdict_per_claim_and_the_report_opens_on_the_answer(study, tmp_path):
    rec = (study / "results/tables/recommendations.md").read_text()
    # the tiny study has a scaled bs 4 -> 8 pair and a control at bs 8: three claims on steps and wall,
    # two on the early reward; with 2 seeds a cell the exact test cannot resolve any, and each says so
    verdicts = [line for line in rec.splitlines() if line.startswith("- **Verdict, rank 4**")]
    assert len(verdicts) == 5, rec
    assert all("cannot be resolved with 2 seeds per cell: the smallest p-value the exact test can give there is 0.33"
               in line for line in verdicts)
    assert sum("reward over its first 3 steps" in line for line in verdicts) == 2
    front = (study / "results/tables/front.html").read_text()
    assert "<h2>The answer</h2>" in front and "Verdict, rank 4" in front
    assert "speedup [95% CI]" in front and 'src="data:image/png;base64,' in front

    report_dir = tmp_path / "report_study"
    shutil.copytree(study, report_dir, symlinks=True)
    snakemake(report_dir, "--configfile", "tests/data/tiny.yaml", "--report", "results/report.html")
    page = (report_dir / "results/report.html").read_text()
    # the workflow description, which the report shows on its first page, carries the answer
    assert "The answer" in page and "Verdict, rank 4" in page and "speedup [95% CI]" in page

"""``python -m lorasweep status`` on a fake results tree: done, running, failed and waiting cells."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lorasweep.study import grid

from lorasweep.launch import progress, status

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests/data/tiny.yaml"  # window 2, target 0.35, max_steps 6, n 2, seeds 0 and 1


def records(rewards, step_s, t0=1000.0):
    out, t = [], t0
    for i, (reward, s) in enumerate(zip(rewards, step_s)):
        out.append({"step": i + 1, "reward_mean": reward, "step_s": s, "t_start": t, "t_end": t + s})
        t += s
    return out


def write_jsonl(path: Path, rows, torn_tail: str = ""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn_tail)


@pytest.fixture
def tree(tmp_path):
    """bs 4: done; bs 8 scaled: running (seed 0 mid-run, seed 1 finished at its target); control: failed."""
    results = tmp_path / "results"
    done = results / "cells/lr_scaling/r4_bs4_lr2e-03_n2"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({
        "step_time": 0.25,
        "workers": [{"seed": 0, "steps_to_target": 4, "steps_run": 4}, {"seed": 1, "steps_to_target": None, "steps_run": 6}],
    }))
    work = results / "cells/lr_scaling/r4_bs8_lr4e-03_n2/steps.work/steps"
    # seed 0: three steps and a line still being written
    write_jsonl(work / "seed0.jsonl.partial", records([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]), torn_tail='{"step": 4, "rew')
    write_jsonl(work / "seed1.jsonl", records([0.3, 0.4], [0.5, 0.5]))  # trailing 0.35: reached, finished
    failed_logs = results / "logs/cells/lr_scaling/r4_bs8_lr2e-03_n2"
    write_jsonl(failed_logs / "seed1.unfinished.jsonl", records([0.1], [1.0]))
    return results


def test_status_of_each_cell_from_the_results_tree(tree):
    study = status.load_plan([TINY])
    cells = {c.path: status.cell_status(c, study, tree) for c in grid.plan(study)}
    assert cells["lr_scaling/r4_bs4_lr2e-03_n2"]["state"] == "done"
    assert cells["lr_scaling/r4_bs4_lr2e-03_n2"]["detail"] == "steps to target 4 >6; 0.25 s/step"
    running = cells["lr_scaling/r4_bs8_lr4e-03_n2"]
    assert running["state"] == "running"
    seed0, seed1 = running["workers"]
    # three complete records (the torn fourth line is not one); trailing over the window of 2: (0.2 + 0.3) / 2;
    # pace: the median of 1, 2, 3 s; ETA: (6 - 3) steps x 2 s
    assert (seed0.step, seed0.total, seed0.reward) == (3, 6, 0.3)
    assert seed0.trailing == pytest.approx(0.25) and seed0.step_s == 2.0 and seed0.eta_s == 6.0
    assert not seed0.reached and not seed0.finished
    assert seed1.finished and seed1.reached and seed1.eta_s == 0.0
    assert cells["lr_scaling/r4_bs8_lr2e-03_n2"]["state"] == "failed"
    assert cells["concurrency/r4_bs4_lr2e-03_n1"]["state"] == "waiting"  # a concurrency cell, not started


def test_status_table_names_states_steps_rewards_and_eta(tree):
    study = status.load_plan([TINY])
    statuses = [status.cell_status(c, study, tree) for c in grid.plan(study)]
    text = status.render(statuses, study, now=1010.0)
    # the tiny study plans 3 lr-scaling cells and 2 + 2 concurrency cells (processes and fused)
    assert text.startswith("1 of 7 cells done, 1 running, 4 waiting, 1 failed\n")
    lines = text.splitlines()
    row = next(line for line in lines if "seed 0" in line).split()
    # cell, step, reward, trailing, ETA, notes: the last record ended at 1006 s, 4 s before ``now``
    assert row[:7] == ["seed", "0", "3/6", "0.300", "0.250", "≤", "6s"]
    assert "2.00 s/step, last step 4s ago" in text
    assert "reached the target" in next(line for line in lines if "seed 1" in line)
    assert any(line.startswith("lr_scaling/r4_bs8_lr4e-03_n2") and "≤ 6s" in line for line in lines)


def test_status_command_is_fast_and_imports_no_torch(tree):
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from lorasweep.__main__ import main; "
         f"code = main(['status', '--configfile', {str(TINY)!r}, '--results', {str(tree)!r}]); "
         "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(code)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "1 of 7 cells done" in done.stdout and "lr_scaling/r4_bs8_lr4e-03_n2" in done.stdout
    assert done.stdout.rstrip().endswith("no torch")


def test_without_a_config_file_status_follows_the_runs_own_resolved_config(tree):
    # a run started with --config (here 3 seeds a cell, not config.yaml's) records what it resolved first
    study = status.load_plan([TINY])
    study["lr_scaling"]["n"] = 3
    (tree / "study").mkdir()
    (tree / "study" / "config.json").write_text(json.dumps(study, sort_keys=True), encoding="utf-8")
    paths = [c.path for c in grid.plan(status.run_plan(tree))]
    assert "lr_scaling/r4_bs4_lr2e-03_n3" in paths and "lr_scaling/r4_bs4_lr2e-03_n2" not in paths
    # a named config file wins; with neither, config.yaml
    assert status.run_plan(tree, [TINY]) == status.load_plan([TINY])
    assert status.run_plan(tree.parent / "elsewhere") == status.load_plan([])


def test_read_records_stops_at_a_torn_line(tmp_path):
    path = tmp_path / "seed0.jsonl.partial"
    write_jsonl(path, records([0.5], [1.0]), torn_tail='{"step": 2')
    assert [r["step"] for r in progress.read_records(path)] == [1]
    assert progress.read_records(tmp_path / "missing") == []


def test_durations_read_as_people_write_them():
    assert [progress.duration(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]


def test_describe_a_worker_in_one_line():
    state = progress.worker_progress(0, records([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]), 6, 2, 0.35)
    assert progress.describe(state, 2) == (
        "seed 0: step 3/6, reward 0.300 (trailing 2: 0.250), 2.00 s/step, ETA ≤ 6s")
    fixed = progress.worker_progress(1, records([0.9], [1.0]), 4, 2, None)  # a concurrency run: no target
    assert progress.describe(fixed, 2).endswith("trailing 2: n/a), 1.00 s/step, ETA ≤ 3s")

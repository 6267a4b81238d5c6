"""A cell spec's mode is one of the named modes, the workflow hands each experiment its own,
and a fixed-step cell's launcher log says its step time and throughput."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorasweep.study import grid

from lorasweep.analysis import metrics
from lorasweep.study.cellspec import CellSpec
from lorasweep.study.config import deep_merge, resolve
from lorasweep.errors import LorasweepError
from workflow import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
STUDY = resolve(deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), TINY), TINY, gpus=[])


def test_the_workflow_gives_each_experiment_its_named_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    copy_workflow(tmp_path)
    out = snakemake(tmp_path, "--dry-run", "--printshellcmds", "--config", "scale=cpu", timeout=300).stdout
    specs = {}
    for line in out.splitlines():
        if " -m lorasweep cell " in line:
            words = shlex.split(line)
            spec = json.loads(words[words.index("--spec") + 1])
            specs[words[words.index("--steps-dir") + 1]] = spec
    experiments = {spec["cell"]["experiment"] for spec in specs.values()}
    assert experiments == {grid.LR_SCALING, grid.CONCURRENCY}
    for steps_dir, spec in specs.items():
        assert spec["mode"] == grid.MODE_OF_EXPERIMENT[spec["cell"]["experiment"]], steps_dir
    assert {spec["mode"] for spec in specs.values()} == {grid.TO_TARGET, grid.FIXED_STEPS}


def tiny_spec(base: Path, experiment: str, n: int) -> CellSpec:
    """The tiny study's cell of ``experiment`` with ``n`` worker processes, on ``base``."""
    cell = next(c for c in grid.plan(STUDY) if c.experiment == experiment and c.n == n and c.packing == grid.PROCESSES)
    return CellSpec.for_cell(STUDY, cell, str(base / "model"), str(base / "prompts.jsonl"))


@pytest.mark.parametrize("mode", ["concurrency", "to-target", None])
def test_a_cell_with_an_unknown_mode_stops_before_anything_runs(tmp_path, mode):
    good = tiny_spec(tmp_path / "base", grid.LR_SCALING, 2).to_dict()
    expected = r"cell r4_bs4_lr2e-03_n2: mode .* is not one of 'to_target', 'fixed_steps'"
    with pytest.raises(LorasweepError, match=expected):
        CellSpec.from_dict({**good, "mode": mode})
    # the launcher's command line: one line, exit status 2, nothing written
    done = subprocess.run(
        [sys.executable, "-m", "lorasweep", "cell", "--spec", json.dumps({**good, "mode": mode}),
         "--steps-dir", str(tmp_path / "out/steps"), "--summary", str(tmp_path / "out/summary.json"),
         "--log-dir", str(tmp_path / "out/logs"), "--cores", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert re.fullmatch("lorasweep cell: error: " + expected + "\n", done.stderr), done.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def random_base(tmp_path_factory) -> Path:
    """A random-init tiny base (the device check's): a fixed-step cell's step times need no trained model."""
    from lorasweep.bench.tiny_base import TINY_MODEL, make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("base"), TINY_MODEL, stories=300)


def test_a_fixed_step_cell_logs_its_step_time_and_throughput_in_the_launcher_log(random_base, tmp_path):
    spec = tiny_spec(random_base, grid.CONCURRENCY, 2)
    assert spec.mode == grid.FIXED_STEPS and spec.steps == 4 and "window" not in spec.training
    out, log = tmp_path / "cell", tmp_path / "launcher.log"
    # as the cell rule runs it: the launcher's stdout and stderr are its log
    with open(log, "w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir", str(out / "steps"),
             "--summary", str(out / "summary.json"), "--log-dir", str(tmp_path / "logs"), "--cores", "2"],
            cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=300,
            env={**os.environ, "LORASWEEP_PROGRESS_S": "0.1"})
    text = log.read_text()
    assert done.returncode == 0, text
    summary = json.loads((out / "summary.json").read_text())
    records = {seed: [json.loads(line) for line in (out / f"steps/seed{seed}.jsonl").read_text().splitlines()]
               for seed in (0, 1)}
    assert [len(r) for r in records.values()] == [4, 4]
    step_time = summary["step_time"]
    assert step_time == metrics.cell_step_time(records, STUDY["training"]["warmup_steps"])
    # the median of two workers' medians lies within the steady steps' range
    steady = [r["step_s"] for rs in records.values() for r in rs if r["step"] > 1]
    assert min(steady) <= step_time <= max(steady)
    done_line = (f"cell r4_bs4_lr2e-03_n2: done; step time {step_time:.3f} s with 2 worker(s) stepping at once, "
                 f"{2 / step_time:.2f} steps/s together")
    assert done_line in text.splitlines(), text
    # the progress lines of a fixed-step cell (no target, no window) are readable
    assert "progress unreadable" not in text, text
    progress = [line for line in text.splitlines() if re.match(r"cell r4_bs4_lr2e-03_n2: seed [01]: ", line)]
    assert progress, text
    for line in progress:
        assert re.fullmatch(r"cell r4_bs4_lr2e-03_n2: seed [01]: (no step yet|step [1-4]/4, reward -?\d\.\d{3}, "
                            r"\d+\.\d\d s/step, (finished|ETA ≤ .+))", line), line

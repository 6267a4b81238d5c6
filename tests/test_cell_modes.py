"""A cell spec's mode is one of the named modes, and the workflow hands each experiment its own."""

import json
import shlex

import pytest

from lorasweep import cell, grid
from lorasweep.errors import LorasweepError
from workflow import copy_workflow, snakemake


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


@pytest.mark.parametrize("mode", ["concurrency", "to-target", None])
def test_a_cell_with_an_unknown_mode_stops_before_anything_runs(tmp_path, mode):
    spec = {"cell": {"cell_id": "r4_bs8_lr1e-03_n2"}, "mode": mode}
    with pytest.raises(LorasweepError, match=r"cell r4_bs8_lr1e-03_n2: mode .* is not one of 'to_target', 'fixed_steps'"):
        cell.run_cell(spec, tmp_path / "steps", tmp_path / "summary.json", tmp_path / "logs", cores=1)
    assert list(tmp_path.iterdir()) == []

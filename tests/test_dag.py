"""The planned DAG holds exactly one cell job per configured cell."""

import re

import pytest
import yaml

from lorasweep.study import grid
from lorasweep.study.config import deep_merge, resolve
from workflow import ROOT, copy_workflow, snakemake


def planned_cells(out: str) -> list:
    return sorted(re.findall(r"wildcards: experiment=(\w+), cell=(\S+)", out))


@pytest.mark.parametrize("extra", [[], ["--config", "lr_scaling={batch_sizes: [8, 16, 32, 64]}"]])
def test_dry_run_plans_one_job_per_configured_cell(tmp_path, extra):
    copy_workflow(tmp_path)
    out = snakemake(tmp_path, "--dry-run", *extra).stdout
    overrides = {"lr_scaling": {"batch_sizes": [8, 16, 32, 64]}} if extra else {}
    config = deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), overrides)
    expected = sorted((c.experiment, c.cell_id) for c in grid.plan(resolve(config, overrides, gpus=[])))
    assert planned_cells(out) == expected
    assert len(expected) == len(set(expected)) >= 8
    assert re.search(r"^cell\s+%d$" % len(expected), out, re.M)


def test_a_bad_config_stops_the_dry_run_with_one_clear_message(tmp_path):
    copy_workflow(tmp_path)
    out = snakemake(tmp_path, "--dry-run", "--config", "training={target: 1.5}", check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "config key 'training.target': value 1.5 is not allowed; expected a number of at most 1" in text
    assert "Traceback" not in text


def test_a_gpu_study_can_be_dry_run_on_a_host_without_a_gpu(tmp_path):
    # planning (a dry run, or a cluster's login node) needs no GPU; the GPU grid is planned
    copy_workflow(tmp_path)
    out = snakemake(tmp_path, "--dry-run", "--config", "scale=gpu").stdout
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    expected = sorted((c.experiment, c.cell_id) for c in grid.plan(resolve(config, {"scale": "gpu"}, gpus=["planned"])))
    assert planned_cells(out) == expected
    # the study's grid, not the CPU preset's
    assert ("lr_scaling", "r32_bs128_lr1.2e-03_n3") in expected and ("concurrency", "r32_bs32_lr3e-04_n20") in expected
    # running it here is refused before any job starts
    out = snakemake(tmp_path, "--config", "scale=gpu", check=False)
    assert out.returncode != 0
    assert "lorasweep: error: config key 'scale': value 'gpu' is not allowed here; no CUDA GPU" in out.stderr
    assert not (tmp_path / "results").exists()

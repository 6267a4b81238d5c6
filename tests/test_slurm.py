"""The workflow on SLURM: the profile (a dry run), and a real one-node cluster.

The cluster test runs tests/slurm/run_slurm_test.sh, which needs root (it installs
slurm-wlm and munge with apt-get and starts the daemons); it starts in the background
when collection ends and runs alongside the rest of the suite (tests/slurm_cluster.py,
which also says how LORASWEEP_SLURM_TEST picks its form). CI runs the reduced form:
``.ci/run`` is ``LORASWEEP_SLURM_TEST=reduced make test``.
"""

import re
import subprocess
import sys

import pytest

import slurm_cluster
from workflow import ROOT, SNAKEMAKE, copy_workflow

SCRIPT = slurm_cluster.SCRIPT


@pytest.fixture(scope="module")
def slurm_plugin():
    """The pinned executor plugin, installed into this interpreter as the script would."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements-slurm.txt")],
            capture_output=True, text=True, timeout=600,
        )
        if out.returncode != 0:
            pytest.fail(f"pip install -r requirements-slurm.txt failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def test_the_plugin_pin_is_the_installed_version(slurm_plugin):
    from importlib.metadata import version

    pins = dict(
        line.split("==") for line in (ROOT / "requirements-slurm.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert version("snakemake-executor-plugin-slurm") == pins["snakemake-executor-plugin-slurm"]


def test_the_profile_sizes_each_cell_job_from_the_cell(slurm_plugin, tmp_path):
    # a dry run through profiles/slurm: the profile parses, and its per-cell expressions
    # give each cell job n+1 CPUs, and memory and a time limit that grow with n
    workdir = copy_workflow(tmp_path)
    # no --cores: the profile's own budget applies (a smaller one would cap the threads)
    out = subprocess.run(
        [*SNAKEMAKE, "--executor", "slurm", "--profile", "profiles/slurm", "--configfile", "tests/data/tiny.yaml",
         "--dry-run"], cwd=workdir, capture_output=True, text=True, timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    jobs = [block for block in text.split("\n\n") if "rule cell:" in block]
    assert jobs, text[-3000:]
    for block in jobs:
        experiment = re.search(r"wildcards: experiment=(\w+), cell=r\d+_bs\d+_lr\S+_n(\d+)", block)
        assert experiment, block
        n = int(experiment.group(2))
        assert f"threads: {n + 1}\n" in block, block
        runtime = 60 if experiment.group(1) == "lr_scaling" else 20 + n
        assert f"mem_mb={2048 + 3072 * n}," in block and f"runtime={runtime}," in block, block


def test_the_tiny_sweep_on_a_one_node_slurm_cluster_matches_a_local_run():
    reason = slurm_cluster.skip_reason()
    if reason:
        pytest.skip(reason)
    run = slurm_cluster.started()
    assert run is not None, "conftest.py starts the cluster test when it is collected"
    try:
        status = run.wait()
    except TimeoutError as error:
        pytest.fail(f"{error}:\n{run.output()[1][-6000:]}")
    stdout, stderr = run.output()
    assert status == 0, f"{SCRIPT.name} {run.form} failed ({status}):\n{stdout[-4000:]}\n{stderr[-6000:]}"
    assert "PASSED" in stderr

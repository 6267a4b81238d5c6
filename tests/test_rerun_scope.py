"""After a change, a dry run plans exactly the jobs the change can affect.

Each test copies the finished tiny study (results and Snakemake's records) into a
fresh git repository, makes one edit, and compares the planned jobs, by rule name
and cell, with what that edit should rerun.
"""

import os
import re
import shutil
import socket
import subprocess

import pytest
import yaml

from workflow import snakemake

LR_CELLS = {"lr_scaling/r4_bs4_lr2e-03_n2", "lr_scaling/r4_bs8_lr4e-03_n2", "lr_scaling/r4_bs8_lr2e-03_n2"}
# both series by default (concurrency.packing): processes, and fused (ids ending in _fused)
CONCURRENCY_CELLS = {"concurrency/r4_bs4_lr2e-03_n1", "concurrency/r4_bs4_lr2e-03_n2",
                     "concurrency/r4_bs4_lr2e-03_n1_fused", "concurrency/r4_bs4_lr2e-03_n2_fused"}
AGGREGATION = {"lr_scaling_tables", "concurrency_tables", "recommendations"}
STUDY_RECORD = {"provenance", "archive", "all"}


@pytest.fixture
def study(tiny_study, tmp_path):
    workdir = tmp_path / "study"
    shutil.copytree(tiny_study, workdir, symlinks=True)
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "study"]):
        subprocess.run(["git", *command], cwd=workdir, check=True, capture_output=True)
    return workdir


def planned(workdir, *extra, env=None) -> set:
    """{(rule, cell)} of a dry run; cell is experiment/cell_id for cell jobs, None otherwise."""
    out = snakemake(workdir, "--dry-run", "--configfile", "tests/data/tiny.yaml", *extra, env=env).stdout
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if not match:
            continue
        cell = re.search(r"wildcards: experiment=(\w+), cell=(\S+)", block)
        jobs.add((match.group(1), f"{cell.group(1)}/{cell.group(2)}" if cell else None))
    return jobs


def jobs(rules=(), cells=()) -> set:
    return {(rule, None) for rule in rules} | {("cell", cell) for cell in cells}


def edit(path):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n# an edit\n")


def test_nothing_to_do_on_a_finished_study(study):
    assert planned(study) == set()


def hub_env(endpoint: str) -> dict:
    """This process's environment with the hub probe pointed at ``endpoint`` and nothing cached."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_ENDPOINT": endpoint}


def test_a_hub_that_answers_slowly_or_refuses_differently_reruns_nothing(study):
    """The study planned with base.source auto; the probe's words and timing must not matter.

    One server accepts and never answers (the probe waits its whole hub_timeout_s and
    says so), one port refuses at once: two reasons worded and timed unlike the one the
    study was planned with.
    """
    with socket.socket() as silent, socket.socket() as refusing:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        refusing.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        for port in (silent.getsockname()[1], refusing.getsockname()[1]):
            assert planned(study, env=hub_env(f"http://127.0.0.1:{port}")) == set()


def module_file(study, name):
    """The study copy's file of package module ``name``, whichever subpackage holds it."""
    (path,) = (study / "lorasweep").rglob(f"{name}.py")
    return path


def test_touching_code_without_changing_it_reruns_nothing(study):
    for name in ("worker", "sampler", "tables", "archive", "config"):
        module_file(study, name).touch()
    (study / "config.yaml").touch()
    assert planned(study) == set()


# the untrained base's reference samples are drawn with the machinery every run shares
# (lorasweep/training/run.py), so editing it redraws them too; the worker's own loop and the
# reward play no part in drawing them. One module per way of being wired: which modules each
# stage hashes is tests/test_codehash.py's question, not a dry run's
@pytest.mark.parametrize("module, redraws_base_samples", [("run", True), ("worker", False), ("rewards", False)])
def test_editing_the_trainer_reruns_every_cell_and_everything_downstream(study, module, redraws_base_samples):
    edit(module_file(study, module))
    base = {"base_samples"} if redraws_base_samples else set()
    assert planned(study) == jobs(AGGREGATION | STUDY_RECORD | base, LR_CELLS | CONCURRENCY_CELLS)


@pytest.mark.parametrize("module", ["tables"])
def test_editing_table_plot_or_recommendation_code_reruns_only_the_aggregation(study, module):
    edit(module_file(study, module))
    assert planned(study) == jobs(AGGREGATION | STUDY_RECORD)


def test_editing_the_archive_code_reruns_only_the_archive(study):
    edit(study / "lorasweep/study/archive.py")
    assert planned(study) == jobs({"archive", "all"})


def write_override(study, overrides) -> str:
    path = study / "override.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return str(path.name)


def test_changing_one_value_reruns_only_the_cells_it_changes(study):
    tiny = yaml.safe_load((study / "tests/data/tiny.yaml").read_text())
    concurrency = tiny["scales"]["cpu"]["concurrency"]
    override = write_override(study, {"scales": {"cpu": {"concurrency": {**concurrency, "steps": 5}}}})
    got = planned(study, override)
    assert got == jobs(AGGREGATION | STUDY_RECORD | {"study_config"}, CONCURRENCY_CELLS)


@pytest.mark.parametrize("key, value", [("target", 0.3), ("window", 3), ("max_steps", 7)])
def test_a_target_setting_reruns_the_runs_to_target_and_not_the_fixed_step_cells(study, key, value):
    tiny = yaml.safe_load((study / "tests/data/tiny.yaml").read_text())
    training = {**tiny["scales"]["cpu"]["training"], key: value}
    override = write_override(study, {"scales": {"cpu": {"training": training}}})
    got = planned(study, override)
    assert got == jobs(AGGREGATION | STUDY_RECORD | {"study_config"}, LR_CELLS)


def test_adding_a_batch_size_adds_only_the_new_cells(study):
    override = write_override(study, {"scales": {"cpu": {"lr_scaling": {"batch_sizes": [4, 8, 16]}}}})
    got = planned(study, override)
    assert got == jobs(AGGREGATION | STUDY_RECORD | {"study_config"}, {"lr_scaling/r4_bs16_lr8e-03_n2"})

"""Failures in the middle of a sweep (issue 6, cases 2 and 3), through real Snakemake runs.

Each test copies the finished tiny study (conftest's ``tiny_study``: results and
Snakemake's records) and takes some lr-scaling cells back to "not run yet" (their
outputs and everything downstream removed), which is where a sweep in progress
stands. Then it breaks the sweep for real: a worker process SIGKILLed through the
worker's test hook (LORASWEEP_FAULT), Ctrl-C (SIGINT to Snakemake's process group,
as a terminal sends it), and ``kill -9`` of the Snakemake process. The uninterrupted
tiny study is the reference: the recomputed cells have the same per-step records,
so the tables have the same step counts (the timing columns are measurements and
differ from run to run).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from test_fail_cell import processes_in, wait_until  # process helpers shared with the launcher tests
from workflow import SNAKEMAKE, snakemake

CONFIG = ("--configfile", "tests/data/tiny.yaml")
LR_CELLS = {"lr_scaling/r4_bs4_lr2e-03_n2", "lr_scaling/r4_bs8_lr4e-03_n2", "lr_scaling/r4_bs8_lr2e-03_n2"}
CONCURRENCY_CELLS = {"concurrency/r4_bs4_lr2e-03_n1", "concurrency/r4_bs4_lr2e-03_n2"}
# what follows the lr-scaling cells in the DAG
DOWNSTREAM = {"lr_scaling_tables", "recommendations", "provenance", "archive", "all"}
STEP_COLUMNS = ["rank", "batch_size", "lr", "is_control", "n", "avg_steps", "min_steps", "max_steps", "censored",
                "steps_per_seed"]


def study_copy(tiny_study, dest):
    shutil.copytree(tiny_study, dest, symlinks=True)
    return dest


def not_run_yet(workdir, cells):
    """Take ``cells`` back to where a sweep stands before they ran: no outputs or logs of theirs, nothing downstream."""
    results = workdir / "results"
    for cell in cells:
        (results / "cells" / cell / "summary.json").unlink()
        shutil.rmtree(results / "cells" / cell / "steps")
        shutil.rmtree(results / "logs/cells" / cell)
    downstream = [*results.glob("tables/lr_scaling*"), results / "tables/recommendations.md", *results.glob("plots/*"),
                  results / "study/provenance.json", *results.glob("archive/*")]
    for path in downstream:
        path.unlink()


def fingerprint(workdir, cells) -> dict:
    """{path: (mtime in ns, bytes)} of every output file of ``cells``."""
    found = {}
    for cell in cells:
        for path in sorted((workdir / "results/cells" / cell).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(workdir))] = (path.stat().st_mtime_ns, path.read_bytes())
    return found


def done(workdir, cells=LR_CELLS) -> set:
    return {cell for cell in cells if (workdir / "results/cells" / cell / "summary.json").exists()}


def started(workdir, cells=LR_CELLS) -> set:
    """Cells whose launcher has started its workers and is still running (its log says so, and no error yet)."""
    logs = {cell: _read(workdir / "results/logs/cells" / cell / "launcher.log") for cell in cells - done(workdir, cells)}
    return {cell for cell, log in logs.items() if "started 2 workers" in log and "error:" not in log}


def _read(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def planned(out: str):
    """(cells, rules) a dry run plans."""
    cells = {f"{e}/{c}" for e, c in re.findall(r"wildcards: experiment=(\w+), cell=(\S+)", out)}
    rules = set(re.findall(r"^(?:local)?rule (\w+):", out, re.M))
    return cells, rules


def step_counts(workdir) -> pd.DataFrame:
    table = pd.read_csv(workdir / "results/tables/lr_scaling.csv")
    return table[STEP_COLUMNS].sort_values(["rank", "batch_size", "lr", "is_control"]).reset_index(drop=True)


def rewards(workdir, cell) -> dict:
    return {path.name: [json.loads(line)["reward_mean"] for line in path.read_text().splitlines()]
            for path in sorted((workdir / "results/cells" / cell / "steps").glob("seed*.jsonl"))}


def launcher_log(workdir, cell) -> str:
    return (workdir / "results/logs/cells" / cell / "launcher.log").read_text()


def no_processes_left(workdir, timeout=10.0) -> list:
    deadline = time.monotonic() + timeout
    while processes_in(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_in(workdir)


def start_sweep(workdir) -> subprocess.Popen:
    # its own session: a Ctrl-C goes to the whole process group, as a terminal sends it
    return subprocess.Popen([*SNAKEMAKE, "--cores", "2", *CONFIG], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_killed_worker_fails_its_cell_and_the_rerun_redoes_that_cell_only(tiny_study, tmp_path, monkeypatch):
    workdir = study_copy(tiny_study, tmp_path / "study")
    cell = "lr_scaling/r4_bs8_lr4e-03_n2"
    not_run_yet(workdir, [cell])
    others = fingerprint(workdir, (LR_CELLS | CONCURRENCY_CELLS) - {cell})

    monkeypatch.setenv("LORASWEEP_FAULT", json.dumps({"kind": "kill", "step": 2, "seed": 1, "cell": cell.split("/")[1]}))
    out = snakemake(workdir, *CONFIG, check=False)
    monkeypatch.delenv("LORASWEEP_FAULT")
    text = out.stdout + out.stderr
    assert out.returncode == 1
    assert "Error in rule cell" in text
    log = f"results/logs/cells/{cell}/seed1.log"
    failure = (f"cell {cell.split('/')[1]}: worker seed 1 failed (killed by signal SIGKILL; the kernel's out-of-memory "
               f"killer sends it too); log: {log}; its 1 recorded step(s): results/logs/cells/{cell}/seed1.unfinished.jsonl; "
               "stopped the other workers (seeds 0); no summary written, the cell is not done.")
    assert failure in launcher_log(workdir, cell)
    assert failure in text  # Snakemake shows the failed job's log (show-failed-logs in the workflow profile)
    assert no_processes_left(workdir) == []
    assert not (workdir / "results/cells" / cell / "summary.json").exists()
    assert not (workdir / "results/cells" / cell / "steps").exists()
    assert fingerprint(workdir, (LR_CELLS | CONCURRENCY_CELLS) - {cell}) == others

    cells, rules = planned(snakemake(workdir, "--dry-run", *CONFIG).stdout)
    assert cells == {cell} and rules == {"cell"} | DOWNSTREAM

    snakemake(workdir, *CONFIG)
    assert fingerprint(workdir, (LR_CELLS | CONCURRENCY_CELLS) - {cell}) == others
    assert rewards(workdir, cell) == rewards(tiny_study, cell)
    pd.testing.assert_frame_equal(step_counts(workdir), step_counts(tiny_study))


def test_an_interrupted_sweep_keeps_its_finished_cells_and_the_rerun_finishes_the_rest(tiny_study, tmp_path):
    workdir = study_copy(tiny_study, tmp_path / "study")
    not_run_yet(workdir, LR_CELLS)
    concurrency = fingerprint(workdir, CONCURRENCY_CELLS)

    # 1. Ctrl-C while the second lr-scaling cell runs
    sweep = start_sweep(workdir)
    wait_until(lambda: len(done(workdir)) == 1 and started(workdir), proc=sweep, what="the second cell")
    first, (interrupted,) = done(workdir), started(workdir)
    os.killpg(sweep.pid, signal.SIGINT)
    out, _ = sweep.communicate(timeout=120)
    assert sweep.returncode != 0
    assert f"interrupted by SIGINT; stopped its 2 worker(s)" in launcher_log(workdir, interrupted)
    assert no_processes_left(workdir) == []
    assert done(workdir) == first and not (workdir / "results/cells" / interrupted / "steps.work").exists()
    kept = fingerprint(workdir, first)
    cells, _ = planned(snakemake(workdir, "--dry-run", *CONFIG).stdout)
    assert cells == LR_CELLS - first

    # 2. kill -9 of Snakemake while the next cell runs: its launcher notices and stops its workers
    sweep = start_sweep(workdir)
    wait_until(lambda: started(workdir), proc=sweep, what="a cell of the second run")
    (killed,) = started(workdir)
    sweep.kill()
    sweep.communicate(timeout=30)
    assert no_processes_left(workdir) == [], "no launcher or worker may outlive Snakemake"
    assert "is gone, so nobody waits for this cell; stopped its 2 worker(s)" in launcher_log(workdir, killed)
    assert killed not in done(workdir)

    # Snakemake's lock outlives a SIGKILL: the next run says to unlock, once
    again = snakemake(workdir, *CONFIG, check=False)
    assert again.returncode != 0 and "--unlock" in again.stdout + again.stderr
    snakemake(workdir, "--unlock", *CONFIG)
    cells, _ = planned(snakemake(workdir, "--dry-run", *CONFIG).stdout)
    assert cells == LR_CELLS - done(workdir) and killed in cells

    snakemake(workdir, *CONFIG)
    assert fingerprint(workdir, first) == kept, "a finished cell must be kept as it was"
    assert fingerprint(workdir, CONCURRENCY_CELLS) == concurrency
    # the same step counts as the uninterrupted study: every cell's records are the same
    for cell in LR_CELLS:
        assert rewards(workdir, cell) == rewards(tiny_study, cell), cell
    pd.testing.assert_frame_equal(step_counts(workdir), step_counts(tiny_study))

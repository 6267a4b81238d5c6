"""Failure behaviour of one cell (issue 6), with real fault injection into real workers.

The tiny study's base (built once per session, conftest.py) is used; every test runs
the cell launcher (``python -m lorasweep cell``) or a worker on it and breaks
something for real: SIGKILL to a worker process, an exception or a non-finite value
injected through the worker's test hook (``lorasweep.training.faults.FAULT_ENV``), an
unreachable target, a read-only or full file system, a missing MPS daemon.
Each test checks the message, the exit status and what is left on disk.
"""

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lorasweep.study import grid
from lorasweep.study.cellspec import CellSpec, WorkerSpec
from lorasweep.study.config import deep_merge, resolve
from processes import running, wait_gone

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TINY = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
STUDY = resolve(deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), TINY), TINY, gpus=[])
CELL = next(c for c in grid.plan(STUDY) if c.experiment == grid.LR_SCALING and c.batch_size == 4)  # r4_bs4_lr2e-03_n2


def lorasweep(*args, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "lorasweep", *args], cwd=cwd or ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---- processes -------------------------------------------------------------------------------


def processes_in(folder: Path) -> list:
    """(pid, command) of every running process whose working directory is inside ``folder``."""
    found, folder = [], str(Path(folder).resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (cwd == folder or cwd.startswith(folder + os.sep)) and running(int(entry.name)):
            found.append((int(entry.name), command[:120]))
    return found


def wait_until(condition, timeout=120.0, proc=None, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before {what}:\n{_output(proc)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _output(proc) -> str:
    try:
        out, err = proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        return ""
    return f"{out or ''}\n{err or ''}"[-4000:]


def worker_pids(launcher: subprocess.Popen) -> dict:
    """{seed: pid} of the launcher's worker processes, from /proc."""
    pids = {}
    for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        seed = Path(command[-2].decode()).stem if len(command) > 1 else ""
        if seed.startswith("seed"):
            pids[int(seed.removeprefix("seed"))] = int(pid)
    return pids


def files_under(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")) if Path(folder).exists() else []


# ---- the tiny base, built once ------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tiny_study, tmp_path_factory) -> Path:
    """The tiny study's embedded base (tests/data/tiny.yaml's settings, built by the workflow's own
    rules), linked into one folder: model/, prompts.jsonl, base.json. Only read here."""
    out = tmp_path_factory.mktemp("fail_base")
    built = tiny_study / "results/base"
    for name, target in {"model": built / "embedded/model", "prompts.jsonl": built / "prompts.jsonl",
                         "base.json": built / "base.json"}.items():
        (out / name).symlink_to(target)
    return out


def cell_spec(base: Path) -> CellSpec:
    """The spec the workflow hands the launcher for the bs-4 lr-scaling cell."""
    return CellSpec.for_cell(STUDY, CELL, str(base / "model"), str(base / "prompts.jsonl"))


def fixed_steps(base: Path, steps: int) -> CellSpec:
    """The bs-4 cell run for a fixed number of steps (its target settings stay, unused)."""
    return cell_spec(base).replace(mode=grid.FIXED_STEPS, steps=steps)


def launch(spec: CellSpec, where: Path, env=None, cores: int = 2, **popen) -> subprocess.Popen:
    """The cell launcher on ``spec``: outputs in <where>/cell, worker logs in <where>/logs."""
    cell = where / "cell"
    return subprocess.Popen(
        [PY, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir", str(cell / "steps"),
         "--summary", str(cell / "summary.json"), "--log-dir", str(where / "logs"), "--cores", str(cores)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def assert_not_done(where: Path):
    """Nothing under the cell's outputs: no summary, no steps, no scratch folder, no temp file."""
    assert files_under(where / "cell") == []


# ---- case 2: a worker dies ----------------------------------------------------------------------


def test_a_worker_killed_by_sigkill_fails_the_cell_within_seconds_and_stops_the_others(base, tmp_path):
    spec = fixed_steps(base, 100000)  # runs until something stops it
    launcher = launch(spec, tmp_path)
    partial = tmp_path / "cell/steps.work/steps/seed1.jsonl.partial"
    wait_until(lambda: partial.exists() and partial.stat().st_size > 0, proc=launcher, what="seed 1's first step")
    pids = worker_pids(launcher)
    assert sorted(pids) == [0, 1]

    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    out, err = launcher.communicate(timeout=60)
    assert time.monotonic() - killed < 10, "the cell must fail within seconds"
    assert launcher.returncode == 2
    log = tmp_path / "logs/seed1.log"
    assert f"worker seed 1 failed (killed by signal SIGKILL" in err
    assert f"log: {log}" in err
    assert "stopped the other workers (seeds 0)" in err
    assert "Traceback" not in err
    assert wait_gone(pids.values(), timeout=2) == [], "no worker may outlive its cell"
    assert_not_done(tmp_path)
    # what seed 1 had recorded is kept next to its log, for diagnosis
    kept = [json.loads(line) for line in (tmp_path / "logs/seed1.unfinished.jsonl").read_text().splitlines()]
    assert kept and [r["step"] for r in kept] == list(range(1, len(kept) + 1))
    assert f"its {len(kept)} recorded step(s): {tmp_path / 'logs/seed1.unfinished.jsonl'}" in err


def test_a_worker_that_raises_fails_the_cell_naming_the_exception(base, tmp_path):
    # the fault is a worker's, not the cell's: it reaches the launcher's workers through the environment
    env = {**os.environ, "LORASWEEP_FAULT": json.dumps({"kind": "raise", "step": 2, "seed": 0})}
    launcher = launch(fixed_steps(base, 100000), tmp_path, env=env)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 2
    assert ("worker seed 0 failed (exit status 1: RuntimeError: injected fault at step 2 (test hook LORASWEEP_FAULT))"
            in err)
    assert f"log: {tmp_path / 'logs/seed0.log'}" in err and "stopped the other workers (seeds 1)" in err
    assert "Traceback" in (tmp_path / "logs/seed0.log").read_text()  # the worker's own log keeps it
    assert "Traceback" not in err
    assert processes_in(tmp_path) == [] and wait_gone(_pids_in_log(out)) == []
    assert_not_done(tmp_path)


def _pids_in_log(launcher_out: str) -> list:
    line = next(line for line in launcher_out.splitlines() if "started" in line and "pids" in line)
    return [int(p) for p in line.split("pids ", 1)[1].split(",", 1)[0].split()]


def test_killing_the_launcher_takes_its_workers_down(base, tmp_path):
    # SIGKILL cannot be handled: the workers go because the kernel signals them (PR_SET_PDEATHSIG)
    launcher = launch(fixed_steps(base, 100000), tmp_path)
    wait_until(lambda: (tmp_path / "cell/steps.work/go").exists(), proc=launcher, what="the start barrier")
    pids = worker_pids(launcher)
    launcher.kill()
    launcher.communicate(timeout=30)
    assert wait_gone(pids.values(), timeout=5) == []
    assert not (tmp_path / "cell/summary.json").exists() and not (tmp_path / "cell/steps").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_launcher_stops_the_workers_and_leaves_no_output(base, tmp_path, signum):
    launcher = launch(fixed_steps(base, 100000), tmp_path)
    wait_until(lambda: (tmp_path / "cell/steps.work/go").exists(), proc=launcher, what="the start barrier")
    pids = worker_pids(launcher)
    launcher.send_signal(signum)
    out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 128 + signum
    assert f"interrupted by {signal.Signals(signum).name}; stopped its 2 worker(s)" in err
    assert wait_gone(pids.values(), timeout=2) == []
    assert_not_done(tmp_path)


# ---- case 4: numerical failure ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, message",
    [
        ("nan_loss", "step 3: loss is nan; stopping this run before the update (a smaller lr may help)"),
        ("inf_loss", "step 3: loss is inf; stopping this run before the update"),
        ("nan_grad", "step 3: grad_norm is nan; stopping this run before the update"),
        ("nan_reward", "step 3: reward is nan; stopping this run before the update (the reward function returned"),
    ],
)
def test_a_non_finite_loss_gradient_or_reward_stops_the_worker_naming_the_step(base, tmp_path, torch_settings, kind, message):
    from lorasweep.training.run import NonFiniteError
    from lorasweep.training.worker import train

    spec = WorkerSpec(fixed_steps(base, 5), seed=0, threads=1, steps_out=str(tmp_path / "seed0.jsonl"),
                      fault={"kind": kind, "step": 3})
    with pytest.raises(NonFiniteError) as error:
        train(spec.to_dict(), log=lambda message: None)
    assert message in str(error.value)
    assert not (tmp_path / "seed0.jsonl").exists()  # the records never appear under their final name
    recorded = (tmp_path / "seed0.jsonl.partial").read_text().splitlines()
    assert [json.loads(line)["step"] for line in recorded] == [1, 2]  # the bad step was not recorded


def test_a_nan_loss_fails_the_cell_naming_the_seed_and_the_step(base, tmp_path):
    # through the environment, as the workflow tests do: the hook reaches workers the launcher starts
    env = {**os.environ, "LORASWEEP_FAULT": json.dumps({"kind": "nan_loss", "step": 3, "seed": 1})}
    launcher = launch(cell_spec(base).with_training(target=1.0), tmp_path, env=env)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 2
    assert ("worker seed 1 failed (exit status 2: step 3: loss is nan; stopping this run before the update "
            "(a smaller lr may help))") in err
    assert f"log: {tmp_path / 'logs/seed1.log'}" in err
    assert "its 2 recorded step(s)" in err
    assert_not_done(tmp_path)


def fused_cell_spec(base: Path, **training) -> CellSpec:
    """The bs-4 cell with its two seeds trained as one fused pack (packing: fused)."""
    from dataclasses import replace

    return cell_spec(base).replace(cell=replace(CELL, packing=grid.FUSED)).with_training(**training)


def test_a_fused_cell_writes_what_a_process_cell_writes(base, tmp_path):
    # two cores: a run to the target trains one single-thread pack per core, here one seed each
    launcher = launch(fused_cell_spec(base, target=1.0, max_steps=3), tmp_path)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err
    assert "started 2 fused workers (seed 0, seed 1) (seeds 0..1" in out and "1 thread(s) each" in out
    summary = json.loads((tmp_path / "cell/summary.json").read_text())
    assert summary["cell"]["cell_id"] == "r4_bs4_lr2e-03_n2_fused" and summary["cell"]["packing"] == "fused"
    assert [w["steps_run"] for w in summary["workers"]] == [3, 3] and summary["censored"] == 2
    assert summary["packs"] == [[0], [1]] and summary["avg_steps"] is None  # no seed reached the target
    assert files_under(tmp_path / "cell") == ["steps", "steps/samples_seed0.json", "steps/samples_seed1.json",
                                              "steps/seed0.jsonl", "steps/seed1.jsonl", "summary.json"]
    assert summary["mps"]["state"] == "off"
    assert (tmp_path / "logs/fused_seed0.log").exists() and (tmp_path / "logs/fused_seed1.log").exists()


def test_a_nan_loss_fails_a_fused_cell_naming_the_seed_and_the_step(base, tmp_path):
    env = {**os.environ, "LORASWEEP_FAULT": json.dumps({"kind": "nan_loss", "step": 3, "seed": 1})}
    # one core: one pack holds both seeds, and the error names the run of the pack that failed
    launcher = launch(fused_cell_spec(base, target=1.0), tmp_path, env=env, cores=1)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 2
    assert ("fused worker (seeds 0..1) failed (exit status 2: seed 1: step 3: loss is nan; stopping this run "
            "before the update (a smaller lr may help))") in err
    assert f"log: {tmp_path / 'logs/fused.log'}" in err
    assert f"its 2 recorded step(s): {tmp_path / 'logs/seed1.unfinished.jsonl'}" in err
    assert (tmp_path / "logs/seed0.unfinished.jsonl").exists()  # the other run's records are kept too
    assert_not_done(tmp_path)


# ---- case 5: target never reached --------------------------------------------------------------


def test_an_unreachable_target_is_censored_and_the_tables_say_so(base, tmp_path):
    max_steps = 4
    spec = cell_spec(base).with_training(target=1.0, max_steps=max_steps)
    assert spec.steps == max_steps
    launcher = launch(spec, tmp_path)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err
    summary = json.loads((tmp_path / "cell/summary.json").read_text())
    assert summary["censored"] == 2 and summary["avg_steps"] is None
    assert [w["steps_to_target"] for w in summary["workers"]] == [None, None]
    assert [w["steps_run"] for w in summary["workers"]] == [max_steps, max_steps]

    def tables(target):
        config = deep_merge(STUDY, {"training": {"target": target, "max_steps": max_steps}})
        (tmp_path / "config.json").write_text(json.dumps(config))
        out_dir = tmp_path / f"tables-{target:g}"
        done = lorasweep("aggregate", "--experiment", "lr_scaling", "--config", str(tmp_path / "config.json"),
                         "--base-info", str(base / "base.json"), "--cells", str(tmp_path / "cell"), "--out-dir", str(out_dir))
        assert done.returncode == 0, done.stdout + done.stderr
        return out_dir, (out_dir / "lr_scaling_rank4.md").read_text(), pd.read_csv(out_dir / "lr_scaling.csv")

    out_dir, md, csv = tables(1.0)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| bs"))
    row = lines[lines.index(header) + 2]  # the one cell's row, below the separator
    cells = dict(zip((c.strip() for c in header.strip("|").split("|")), (c.strip() for c in row.strip("|").split("|"))))
    assert cells["avg steps to 1"] == f"not reached (> {max_steps})"
    assert cells["wall to 1"] == "—" and cells["speedup"] == "—"  # no wall time to target, no speedup
    assert cells["steps 95% CI"] == "—" and cells["wall 95% CI"] == "—"
    assert cells["censored"] == "2/2"
    assert re.fullmatch(r"[012]/2", cells["degenerate"])  # both seeds sampled their held-out prompts after the last step
    assert csv.loc[0, "censored"] == 2 and pd.isna(csv.loc[0, "avg_steps"]) and pd.isna(csv.loc[0, "speedup"])
    assert csv.loc[0, "steps_per_seed"] == f">{max_steps} >{max_steps}"

    # recommendations and plots from a table without a single converged cell: no crash
    done = lorasweep("recommend", "--lr-table", str(out_dir / "lr_scaling.csv"), "--base-info", str(base / "base.json"),
                     "--out", str(tmp_path / "recommendations.md"), "--plots-dir", str(tmp_path / "plots"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "recommendations.md").read_text().strip()

    # Re-aggregated (no retraining) at a target only one seed reached, the average says how
    # many seeds it leaves out.
    best = {}
    for path in (tmp_path / "cell/steps").glob("seed*.jsonl"):
        rewards = [json.loads(line)["reward_mean"] for line in path.read_text().splitlines()]
        window = STUDY["training"]["window"]
        best[path.stem] = max(math.fsum(rewards[i - window:i]) / window for i in range(window, len(rewards) + 1))
    high, low = sorted(best.values(), reverse=True)
    if high == low:
        pytest.skip("both seeds peaked at the same trailing reward")
    _, md, csv = tables(high)
    assert "(1 of 2 not reached)" in md and "1/2" in md
    assert "some seeds did not reach the target" in md
    assert csv.loc[0, "censored"] == 1 and not pd.isna(csv.loc[0, "avg_steps"])


# ---- progress while a cell runs ---------------------------------------------------------------


def test_the_launcher_logs_each_workers_progress_and_status_shows_the_running_cell(base, tmp_path):
    results = tmp_path / "results"
    cell_dir = results / "cells" / CELL.path
    spec = fixed_steps(base, 100000)  # runs until stopped
    env = {**os.environ, "LORASWEEP_PROGRESS_S": "0.2"}
    launcher = subprocess.Popen(
        [PY, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir", str(cell_dir / "steps"),
         "--summary", str(cell_dir / "summary.json"), "--log-dir", str(tmp_path / "logs"), "--cores", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    partials = [cell_dir / f"steps.work/steps/seed{seed}.jsonl.partial" for seed in (0, 1)]
    wait_until(lambda: all(p.exists() and len(p.read_text().splitlines()) >= 3 for p in partials),
               proc=launcher, what="three steps of each worker")
    time.sleep(0.5)  # at least two progress intervals after the workers started stepping

    # the status command reads the same scratch records while the cell runs
    shown = lorasweep("status", "--configfile", str(ROOT / "tests/data/tiny.yaml"), "--results", str(results))
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith(CELL.path))
    assert row.split()[1] == "running"
    seed_rows = [line.split() for line in shown.stdout.splitlines() if line.strip().startswith("seed ")]
    assert [r[1] for r in seed_rows] == ["0", "1"] and all(int(r[2].split("/")[0]) >= 3 for r in seed_rows)

    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=30)
    lines = [line for line in out.splitlines() if re.match(rf"cell {CELL.cell_id}: seed \d: step \d+/100000, ", line)]
    for seed in (0, 1):
        mine = [line for line in lines if f": seed {seed}: " in line]
        assert len(mine) >= 2, out
        assert re.search(r"reward \d\.\d{3} \(trailing 2: (n/a|\d\.\d{3})\), \d+\.\d\d s/step, ETA ≤ ", mine[-1])


# ---- case 7: results folder unwritable, disk full -------------------------------------------------


def _namespace_prefix():
    """A command prefix that runs a shell script in a private mount namespace, or None.

    As root, ``chmod`` does not stop writes, but a read-only bind mount or a tiny tmpfs
    does; in a private mount namespace they vanish with the process and touch nothing else.
    """
    for prefix in (["unshare", "--mount"], ["unshare", "--map-root-user", "--mount"]):
        if shutil.which(prefix[0]) is None:
            return None
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt && echo ok"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "ok":
            return prefix
    return None


NAMESPACE = _namespace_prefix()


def _launcher_command(spec: CellSpec, where: Path) -> str:
    cell = where / "cell"
    return shlex.join([PY, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir", str(cell / "steps"),
                       "--summary", str(cell / "summary.json"), "--log-dir", str(where / "logs"), "--cores", "2"])


def run_in_namespace(setup: str, spec: CellSpec, where: Path):
    """Mount (``setup``), run the launcher, then list the cell folder as the launcher saw it."""
    script = textwrap.dedent(f"""\
        set -e
        {setup}
        set +e
        {_launcher_command(spec, where)} >{where}/out.txt 2>{where}/err.txt
        echo "status $?"
        cd {where}/cell && find . -mindepth 1 | sort
    """)
    done = subprocess.run([*NAMESPACE, "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    status = int(next(line for line in lines if line.startswith("status "))[7:])
    listing = [line for line in lines if line.startswith("./")]
    return status, (where / "err.txt").read_text(), listing


def test_a_read_only_results_folder_is_a_clear_error_before_any_worker_starts(base, tmp_path):
    (tmp_path / "cell").mkdir()
    spec = cell_spec(base)
    if NAMESPACE is not None:
        status, err, listing = run_in_namespace(
            f"mount --bind {tmp_path}/cell {tmp_path}/cell; mount -o remount,bind,ro {tmp_path}/cell", spec, tmp_path)
        reason = "Read-only file system"
    elif os.geteuid() != 0:
        (tmp_path / "cell").chmod(0o555)
        launcher = launch(spec, tmp_path)
        _, err = launcher.communicate(timeout=60)
        status, listing, reason = launcher.returncode, files_under(tmp_path / "cell"), "Permission denied"
        (tmp_path / "cell").chmod(0o755)
    else:
        pytest.skip("root without mount namespaces: nothing here can make a folder unwritable")
    assert status == 2
    assert re.search(rf"cell {CELL.cell_id}: {reason}: {tmp_path}/cell/(summary\.json|steps\.work);", err), err
    assert "the cell is not done (no summary written). Make the results folder writable" in err
    assert "Traceback" not in err
    assert listing == []
    assert not list((tmp_path / "logs").glob("seed*.log")), "no worker may start"


@pytest.mark.skipif(NAMESPACE is None, reason="needs a private mount namespace (unshare) for a tiny tmpfs")
def test_a_full_disk_fails_the_cell_clearly_and_leaves_nothing_that_looks_done(base, tmp_path):
    # 12 KiB: room for the two worker specs and one page of per-step records, not two
    (tmp_path / "cell").mkdir()
    spec = fixed_steps(base, 30)
    status, err, listing = run_in_namespace(f"mount -t tmpfs -o size=12k tmpfs {tmp_path}/cell", spec, tmp_path)
    assert status == 2, err
    assert "No space left on device" in err
    # every way the launcher can fail says both (whether the disk filled in a worker or in the launcher)
    assert "the cell is not done" in err and "no summary written" in err
    assert "Traceback" not in err
    assert listing == [], f"left behind on the full disk: {listing}"
    assert processes_in(tmp_path) == []


@pytest.mark.skipif(NAMESPACE is None, reason="needs a private mount namespace (unshare) for a tiny tmpfs")
def test_an_atomic_write_that_runs_out_of_space_leaves_no_file(tmp_path):
    script = textwrap.dedent(f"""\
        mount -t tmpfs -o size=8k tmpfs {tmp_path}
        echo previous > {tmp_path}/summary.json
        {PY} -c "from lorasweep import atomic; atomic.write_text('{tmp_path}/summary.json', 'x' * 20000)"
        echo "status $?"
        ls -A {tmp_path}
        cat {tmp_path}/summary.json
    """)
    done = subprocess.run([*NAMESPACE, "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "No space left on device" in done.stderr
    # the old file is intact and no temp file is left
    assert done.stdout.splitlines() == ["status 1", "summary.json", "previous"]


# ---- case 8: MPS required but not there ------------------------------------------------------


FAKE_SMI = "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-fake)'\n"
FAKE_CONTROL_THAT_FAILS = "#!/bin/sh\necho 'fake: cannot start the MPS control daemon' >&2\nexit 1\n"


def _fake_bin(folder: Path, scripts: dict) -> Path:
    folder.mkdir()
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


@pytest.mark.parametrize(
    "scripts, reason, hint",
    [
        # no control binary: nothing to start, so the way out is not to require MPS
        ({"nvidia-smi": FAKE_SMI}, "nvidia-cuda-mps-control was not found on PATH", "set mps: auto or off"),
        # a daemon that will not start: the pipe folder it was given is what to look at
        ({"nvidia-smi": FAKE_SMI, "nvidia-cuda-mps-control": FAKE_CONTROL_THAT_FAILS},
         "nvidia-cuda-mps-control -d failed (exit 1): fake: cannot start the MPS control daemon", "(pipe folder "),
    ],
)
def test_mps_required_without_a_daemon_is_rejected_before_any_worker_starts(tmp_path, scripts, reason, hint):
    fake = _fake_bin(tmp_path / "bin", scripts)
    spec = cell_spec(tmp_path / "no-base").replace(device="cuda", mps="required")
    launcher = launch(spec, tmp_path, env={**os.environ, "PATH": str(fake)})
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 2
    assert f"mps: required, but {reason}" in err
    assert hint in err
    assert "Traceback" not in err
    assert not list((tmp_path / "logs").glob("seed*.log")), "no worker may start"
    assert_not_done(tmp_path)

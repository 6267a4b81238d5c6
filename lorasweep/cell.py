"""The cell launcher: n worker processes of one (rank, bs, lr, n) at once.

Workers load their model, report ready and wait at a start barrier, so that
their steps overlap and the measured step time is the step time under n-way
sharing. On a GPU they share it through MPS (``lorasweep.mps``). If any worker
fails, the others are stopped at once and the error names the seed, its exit
status and its log; the summary, the file that marks a cell done, is written
last and only when every worker finished.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import atomic, grid, metrics
from .errors import LorasweepError
from .mps import MpsDaemon

POLL_S = 0.1
BARRIER_TIMEOUT_S = 900  # loading a model takes seconds; this only bounds a hang
STOP_GRACE_S = 5


class WorkerFailed(LorasweepError):
    pass


def threads_per_worker(setting, cores: int, n: int) -> int:
    """Torch threads for each CPU worker: explicit, or the job's cores shared out (at least one)."""
    if setting != "auto":
        return int(setting)
    return max(1, cores // n)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _last_lines(path: Path, count: int = 5) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in lines[-count:])


def _stop_all(procs: dict):
    """SIGTERM every live worker, then SIGKILL whatever outlives the grace period."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Terminated(BaseException):
    """Raised from the SIGTERM handler so that every ``finally`` runs."""


def _raise_terminated(signum, frame):
    raise _Terminated(signum)


def run_cell(spec: dict, steps_dir, summary_path, log_dir, cores: int, log=print) -> dict:
    cell = spec["cell"]
    training = spec["training"]
    seeds = grid.seeds(training["seed0"], cell["n"])
    steps_dir, log_dir = Path(steps_dir), Path(log_dir)
    work = steps_dir.parent / (steps_dir.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    (work / "ready").mkdir(parents=True)
    steps_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = threads_per_worker(training["threads_per_worker"], cores, cell["n"])

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    procs, logs = {}, {}
    mode = spec["mps"] if spec["device"] == "cuda" else "off"
    try:
        mps = MpsDaemon(work, mode, log_dir=log_dir / "mps")
        with mps:
            try:
                env = mps.worker_env(dict(os.environ))
                env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
                for seed in seeds:
                    procs[seed], logs[seed] = _start_worker(spec, seed, threads, steps_dir, log_dir, work, env)
                log(f"cell {cell['cell_id']}: started {len(procs)} workers (seeds {seeds[0]}..{seeds[-1]}, "
                    f"{threads} thread(s) each), logs in {log_dir}")
                _wait(procs, logs, cell, until_ready=work / "ready", go=work / "go")
                log(f"cell {cell['cell_id']}: all workers ready, started together")
                mps.verify_clients([p.pid for p in procs.values()], timeout_s=30)
                _wait(procs, logs, cell)
            finally:
                # workers go before the MPS daemon, which would otherwise wait for its clients
                _stop_all(procs)
        mps_record = mps.record()
    except (_Terminated, SystemExit):
        raise LorasweepError(f"cell {cell['cell_id']}: terminated; stopped its {len(procs)} workers") from None
    finally:
        _stop_all(procs)
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)

    records = {seed: atomic.read_jsonl(steps_dir / f"seed{seed}.jsonl") for seed in seeds}
    outcome = metrics.cell_outcome(records, training["target"], training["window"], training["warmup_steps"])
    summary = {
        "cell": cell,
        "mode": spec["mode"],
        "device": spec["device"],
        "threads_per_worker": threads,
        "mps": mps_record,
        "target": training["target"],
        "window": training["window"],
        "step_time": outcome.step_time,
        "avg_steps": outcome.avg_steps,
        "censored": outcome.censored,
        "workers": [vars(w) for w in outcome.workers],
    }
    atomic.write_json(summary_path, summary)
    log(f"cell {cell['cell_id']}: done; step time {outcome.step_time:.3f} s, steps to target "
        f"{[w.steps_to_target for w in outcome.workers]} ({outcome.censored} censored)")
    return summary


def _start_worker(spec, seed, threads, steps_dir, log_dir, work, env):
    worker_spec = {
        **spec,
        "seed": seed,
        "threads": threads,
        "steps_out": str(steps_dir / f"seed{seed}.jsonl"),
        "barrier": {"ready_dir": str(work / "ready"), "go": str(work / "go"), "timeout_s": BARRIER_TIMEOUT_S},
    }
    spec_path = work / f"seed{seed}.json"
    atomic.write_json(spec_path, worker_spec)
    log_path = log_dir / f"seed{seed}.log"
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lorasweep", "worker", str(spec_path)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    return proc, log_path


def _wait(procs: dict, logs: dict, cell: dict, until_ready: Path = None, go: Path = None):
    """Watch the workers until all exit (or, with ``until_ready``, all are ready); fail fast on the first failure."""
    while True:
        for seed, proc in procs.items():
            code = proc.poll()
            if code is not None and code != 0:
                raise WorkerFailed(
                    f"cell {cell['cell_id']}: worker seed {seed} failed ({_describe_exit(code)}); "
                    f"log: {logs[seed]}\n{_last_lines(logs[seed])}"
                )
        if until_ready is not None:
            ready = {p.name for p in until_ready.iterdir()}
            if all(f"seed{seed}" in ready for seed in procs):
                go.touch()
                return
        elif all(proc.poll() == 0 for proc in procs.values()):
            return
        time.sleep(POLL_S)


def main(args) -> int:
    spec = json.loads(args.spec)
    run_cell(spec, args.steps_dir, args.summary, args.log_dir, args.cores, log=lambda m: print(m, flush=True))
    return 0

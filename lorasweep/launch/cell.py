"""The cell launcher: n worker processes of one (rank, bs, lr, n) at once, or one fused process.

Workers load their model, report ready and wait at a start barrier, so that
their steps overlap and the measured step time is the step time under n-way
sharing. On a GPU they share it through MPS (``lorasweep.launch.mps``). A cell whose
packing is fused starts one process that trains its n seeds as one pack
(``lorasweep.training.fused``) and is watched, published and summarised the same way;
a failure of one of its runs fails the cell, and the error names that run's seed.

A cell is done when, and only when, its summary exists:

- workers write their per-step records into the cell's scratch folder
  (``<steps>.work``); the ``steps`` folder appears, by one rename, only once
  every worker has finished, and ``summary.json`` is written (atomically) last;
- if any worker fails (a signal, an exception, a non-finite loss), the others
  are stopped at once and the error names the seed, its exit status or the
  exception, and its log; what the workers had recorded is kept next to their
  logs (``seed<k>.unfinished.jsonl``) and nothing is left under the outputs;
- SIGINT, SIGTERM and SIGHUP (Ctrl-C, Snakemake cancelling the job, a closed
  terminal) stop the workers the same way; the exit status is 128 + signal;
- if the process that started the launcher (Snakemake, through its job shell)
  disappears, e.g. killed with SIGKILL, the launcher stops its workers instead
  of finishing a cell nobody waits for; workers in turn die with the launcher
  (``PR_SET_PDEATHSIG`` on Linux), so no worker outlives its cell;
- the MPS daemon, if one was started, is stopped after the workers.

Starting, stopping and reaping the workers, watching the launcher's own parent,
and the stop signals (one layer, which the MPS daemon joins) are
``lorasweep.launch.supervise``'s; what a failed worker's log says is read by
``lorasweep.launch.worker_log``.
"""

import errno
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from .. import atomic
from ..study import grid
from .. import hardware
from . import progress, supervise, worker_log
from ..analysis import metrics
from ..study.cellspec import Barrier, CellSpec, FusedSpec, WorkerSpec
from ..errors import LorasweepError
from .mps import MpsDaemon

POLL_S = 0.1
BARRIER_TIMEOUT_S = 900  # loading a model takes seconds; this only bounds a hang
UNFINISHED = "seed{seed}.unfinished.jsonl"  # a failed cell's per-step records, kept next to the logs
FUSED_LOG = "fused.log"  # a fused cell's process, when it has one pack
PACK_LOG = "fused_{seeds}.log"  # one of several packs: fused_seeds0-2.log, fused_seed3.log
# seconds between the launcher's progress lines (one per worker); the environment variable
# only changes how often the log speaks, never a result
PROGRESS_ENV = "LORASWEEP_PROGRESS_S"
PROGRESS_S = 5.0


class WorkerFailed(LorasweepError):
    pass


class CellInterrupted(LorasweepError):
    """The launcher was told to stop (a signal) or lost the process that started it."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def threads_per_worker(setting, cores: int, n: int) -> int:
    """Torch threads for each CPU worker: explicit, or the job's cores shared out (at least one)."""
    if setting != "auto":
        return int(setting)
    return max(1, cores // n)


def fused_packs(spec: CellSpec, cores: int) -> list:
    """How a fused cell's seeds are split into processes: lists of seeds, one per pack.

    A run toward the target on a CPU trains its seeds as one pack per core of the job
    (seeds dealt out in order, 0..k-1 to the first pack): the two threads of one
    process run in lock-step on small matrices, while one single-thread pack per
    core keeps every core busy (docs/measurements.md). On a GPU, and in the
    concurrency experiment, whose fused series measures n runs in one process, one
    pack holds every seed.
    """
    seeds = spec.seeds
    count = min(len(seeds), max(1, cores)) if spec.device == "cpu" and spec.mode == grid.TO_TARGET else 1
    size, extra = divmod(len(seeds), count)
    packs, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        packs.append(seeds[start:end])
        start = end
    return packs


# ---- the cell ------------------------------------------------------------------------------


def run_cell(spec: CellSpec, steps_dir, summary_path, log_dir, cores: int, log=print) -> dict:
    # the spec was validated when it was built (a bad mode, a bad step count stop there)
    cell_id = spec.cell_id
    signals = supervise.StopSignals()
    try:
        with signals:
            return _run_cell(spec, Path(steps_dir), Path(summary_path), Path(log_dir), cores, log, signals)
    except supervise.Terminated as stop:  # while preparing, before any worker started
        raise CellInterrupted(f"cell {cell_id}: interrupted by {signal.Signals(stop.signum).name}; "
                              "no summary written", 128 + stop.signum) from None
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        hint = {errno.ENOSPC: " Free some space, then run the workflow again.",
                errno.EDQUOT: " Free some space, then run the workflow again.",
                errno.EROFS: " Make the results folder writable, then run the workflow again.",
                errno.EACCES: " Make the results folder writable, then run the workflow again.",
                errno.EPERM: " Make the results folder writable, then run the workflow again."}.get(error.errno, "")
        raise LorasweepError(
            f"cell {cell_id}: {error.strerror or error}{where}; the cell is not done (no summary written).{hint}"
        ) from None


def _run_cell(spec: CellSpec, steps_dir: Path, summary_path: Path, log_dir: Path, cores: int, log, signals) -> dict:
    cell = spec.cell.as_dict()  # the summary's record of the cell, and the name in every message
    training = spec.training
    seeds = spec.seeds
    work = steps_dir.parent / (steps_dir.name + ".work")
    # A cell is redone from scratch: nothing of an earlier attempt may survive a failure of this one.
    summary_path.unlink(missing_ok=True)
    shutil.rmtree(steps_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    (work / "ready").mkdir(parents=True)
    (work / "steps").mkdir()
    log_dir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (log_dir / UNFINISHED.format(seed=seed)).unlink(missing_ok=True)
    fused = spec.fused
    packs = fused_packs(spec, cores) if fused else []
    threads = threads_per_worker(training["threads_per_worker"], cores, len(packs) if fused else cell["n"])

    owners = supervise.owners()
    procs, logs = {}, {}
    on_gpu = spec.device == "cuda"
    finished = False
    try:
        mps = MpsDaemon(
            work,
            spec.mps if on_gpu and not fused else "off",
            log_dir=log_dir / "mps",
            off_reason="MPS does not apply: one fused process" if fused else
            "mps: off in the config" if on_gpu else "MPS does not apply: the workers run on the CPU",
        )
        with mps:
            try:
                env = mps.worker_env(dict(os.environ))
                env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
                for pack in packs:  # one process per pack, watched under its first seed (its name at the barrier)
                    with signals.held():
                        procs[pack[0]], logs[pack[0]] = _start_fused(spec, pack, len(packs), threads, log_dir, work,
                                                                     env)
                for seed in [] if fused else seeds:
                    with signals.held():
                        procs[seed], logs[seed] = _start_worker(spec, seed, threads, log_dir, work, env)
                started = (f"{len(procs)} workers" if not fused else "1 fused worker" if len(packs) == 1 else
                           f"{len(packs)} fused workers ({', '.join(_seed_range(p) for p in packs)})")
                log(f"cell {cell['cell_id']}: started {started} (seeds {seeds[0]}..{seeds[-1]}, "
                    f"pids {' '.join(str(p.pid) for p in procs.values())}, {threads} thread(s) each), "
                    f"logs in {log_dir}")
                _wait(procs, logs, cell, work, log_dir, owners, until_ready=work / "ready", go=work / "go")
                log(f"cell {cell['cell_id']}: all workers ready, started together")
                mps.verify_clients([p.pid for p in procs.values()], timeout_s=30)
                _wait(procs, logs, cell, work, log_dir, owners,
                      report_progress=lambda: _log_progress(spec, seeds, work / "steps", log))
                finished = True
            finally:
                # workers go before the MPS daemon, which would otherwise wait for its clients
                signals.cleaning_up = True
                supervise.stop(procs.values())
        mps_record = mps.record()
    except supervise.Terminated as stop:  # the MPS daemon joined this layer: one signal, one unwinding
        signals.cleaning_up = True
        raise CellInterrupted(
            f"cell {cell['cell_id']}: interrupted by {signal.Signals(stop.signum).name}; stopped its "
            f"{len(procs)} worker(s); no summary written, so the cell is not done and a rerun redoes it",
            128 + stop.signum,
        ) from None
    finally:
        signals.cleaning_up = True
        supervise.stop(procs.values())
        if not finished or signals.received is not None:
            _keep_unfinished_records(work / "steps", log_dir)
            shutil.rmtree(work, ignore_errors=True)
    if signals.received is not None:  # arrived while the workers were being stopped
        raise CellInterrupted(
            f"cell {cell['cell_id']}: interrupted by {signal.Signals(signals.received).name}; "
            "no summary written, so the cell is not done and a rerun redoes it",
            128 + signals.received,
        )

    records = {seed: atomic.read_jsonl(work / "steps" / f"seed{seed}.jsonl") for seed in seeds}
    summary = {
        "cell": cell,
        "mode": spec.mode,
        "device": spec.device,
        # named where the job ran: on a cluster that is not where the study was planned
        "device_name": (hardware.gpu_names() or ["CUDA GPU"])[0] if on_gpu else f"CPU ({hardware.cpu_model()})",
        "threads_per_worker": threads,
        "mps": mps_record,
        # which engine trained the runs: the fast decoder or the model's own modules (lorasweep.study.engine)
        "engine": training.get("engine", "fast"),
    }
    if fused:
        summary["packs"] = packs
    if spec.mode == grid.FIXED_STEPS:  # a fixed step count: reaching the target is not the question
        step_time = metrics.cell_step_time(records, training["warmup_steps"])
        summary["step_time"] = step_time
        summary["workers"] = [{"seed": seed, "steps_run": len(records[seed])} for seed in seeds]
        _publish(work, steps_dir, summary_path, summary)
        log(f"cell {cell['cell_id']}: done; step time {step_time:.3f} s with {cell['n']} worker(s) "
            f"stepping at once, {cell['n'] / step_time:.2f} steps/s together")
    else:
        outcome = metrics.cell_outcome(records, training["target"], training["window"], training["warmup_steps"],
                                       training.get("early_steps"))
        observations = metrics.seed_observations(outcome.workers, spec.steps)
        summary.update({
            "target": training["target"],
            "window": training["window"],
            "step_time": outcome.step_time,
            # the restricted mean up to max_steps, as the tables give it (a censored seed counts as
            # max_steps); none when no seed reached the target
            "avg_steps": metrics.restricted_mean(observations, spec.steps) if outcome.converged else None,
            "censored": outcome.censored,
            "workers": [vars(w) for w in outcome.workers],
        })
        _publish(work, steps_dir, summary_path, summary)
        log(f"cell {cell['cell_id']}: done; step time {outcome.step_time:.3f} s, steps to target "
            f"{[w.steps_to_target for w in outcome.workers]} ({outcome.censored} censored)")
    return summary


def _publish(work: Path, steps_dir: Path, summary_path: Path, summary: dict):
    """The steps folder by one rename, then the summary: the cell looks done only when it is."""
    try:
        os.replace(work / "steps", steps_dir)
        atomic.write_json(summary_path, summary)
    except BaseException:
        shutil.rmtree(steps_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _keep_unfinished_records(steps: Path, log_dir: Path):
    """Move what the workers recorded before the cell failed next to their logs, for diagnosis."""
    for path in sorted(steps.glob("seed*.jsonl*")):
        seed = path.name.split(".")[0].removeprefix("seed")
        try:
            shutil.move(str(path), str(log_dir / UNFINISHED.format(seed=seed)))
        except OSError:
            pass


def _barrier(work: Path) -> Barrier:
    return Barrier(ready_dir=str(work / "ready"), go=str(work / "go"), timeout_s=BARRIER_TIMEOUT_S)


def _seed_range(seeds: list) -> str:
    return f"seeds {seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"


def _start_fused(spec: CellSpec, seeds: list, pack_count: int, threads, log_dir, work, env):
    """One process training ``seeds`` of the cell as one pack (``python -m lorasweep fused``)."""
    fused_spec = FusedSpec.of_cell(spec, lambda seed: work / "steps" / f"seed{seed}.jsonl", threads, _barrier(work),
                                   seeds=seeds)
    name = FUSED_LOG if pack_count == 1 else PACK_LOG.format(
        seeds=f"seeds{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed{seeds[0]}")
    return _spawn("fused", fused_spec.to_dict(), work / f"fused_seed{seeds[0]}.json", log_dir / name, env)


def _start_worker(spec: CellSpec, seed, threads, log_dir, work, env):
    worker_spec = WorkerSpec(spec, seed=seed, threads=threads, steps_out=str(work / "steps" / f"seed{seed}.jsonl"),
                             barrier=_barrier(work))
    return _spawn("worker", worker_spec.to_dict(), work / f"seed{seed}.json", log_dir / f"seed{seed}.log", env)


def _spawn(command: str, worker_spec: dict, spec_path: Path, log_path: Path, env):
    """Start one process of the cell on ``worker_spec`` (a WorkerSpec's or FusedSpec's ``to_dict``)."""
    atomic.write_json(spec_path, worker_spec)
    with open(log_path, "w", encoding="utf-8") as out:
        proc = supervise.start([sys.executable, "-m", "lorasweep", command, str(spec_path)], stdout=out, env=env)
    return proc, log_path


def _progress_interval() -> float:
    try:
        return max(0.1, float(os.environ.get(PROGRESS_ENV, PROGRESS_S)))
    except ValueError:
        return PROGRESS_S


def _log_progress(spec: CellSpec, seeds: list, steps_dir: Path, log):
    """One line per worker: its step, rewards, pace and ETA, from the records it is writing."""
    training = spec.training
    target = training["target"] if spec.mode == grid.TO_TARGET else None
    # a fixed-step cell's spec leaves the window out (it decides nothing there): no trailing mean then
    window = training.get("window")
    for seed in seeds:
        try:
            path = progress.worker_records_path(steps_dir, seed)
            records = progress.read_records(path) if path else []
            state = progress.worker_progress(seed, records, spec.steps, window, target,
                                             finished=path is not None and path.suffix == ".jsonl")
            text = progress.describe(state, window)
        except (KeyError, TypeError, ValueError) as error:  # a progress line must never fail the cell
            text = f"seed {seed}: progress unreadable ({type(error).__name__}: {error})"
        log(f"cell {spec.cell_id}: {text}")


def _wait(procs: dict, logs: dict, cell: dict, work: Path, log_dir: Path, owners: list,
          until_ready: Path = None, go: Path = None, report_progress=None):
    """Watch the workers until all exit (or, with ``until_ready``, all are ready); fail fast on the first failure.

    ``report_progress``, if given, is called every few seconds (``PROGRESS_S``) while they run.
    """
    interval = _progress_interval()
    next_progress = time.monotonic() + interval
    while True:
        for seed, proc in procs.items():
            code = proc.poll()
            if code is not None and code != 0:
                _raise_worker_failed(seed, code, procs, logs, cell, work, log_dir)
        gone = supervise.gone_owner(owners)
        if gone is not None:
            raise CellInterrupted(
                f"cell {cell['cell_id']}: the process that started it (pid {gone}) is gone, so nobody waits "
                f"for this cell; stopped its {len(procs)} worker(s); no summary written", 1,
            )
        if until_ready is not None:
            ready = {p.name for p in until_ready.iterdir()}
            if all(f"seed{seed}" in ready for seed in procs):
                go.touch()
                return
        elif all(proc.poll() == 0 for proc in procs.values()):
            return
        if report_progress is not None and time.monotonic() >= next_progress:
            report_progress()
            next_progress = time.monotonic() + interval
        time.sleep(POLL_S)


def _raise_worker_failed(seed, code, procs, logs, cell, work, log_dir):
    others = [s for s, p in procs.items() if s != seed and p.poll() is None]
    supervise.stop(procs.values())  # first, so that the message can say what is left
    _keep_unfinished_records(work / "steps", log_dir)
    log_path = logs[seed]
    lines = worker_log.read_lines(log_path)
    error = worker_log.error_message(lines)
    what = supervise.describe_exit(code) + (f": {error}" if error else "")
    who = f"worker seed {seed}"
    if cell.get("packing") == grid.FUSED:
        pack = _pack_of(seed, procs, cell)
        who = f"fused worker ({_seed_range(pack)})"
        named = re.match(r"seed (\d+): ", error or "")  # a run's own failure names its seed first
        if named:
            seed = int(named.group(1))
    kept = log_dir / UNFINISHED.format(seed=seed)
    recorded = len(worker_log.read_lines(kept)) if kept.exists() else 0
    records = f"its {recorded} recorded step(s): {kept}" if recorded else "it recorded no step"
    stopped = f"; stopped the other workers (seeds {', '.join(map(str, others))})" if others else ""
    raise WorkerFailed(
        f"cell {cell['cell_id']}: {who} failed ({what}); log: {log_path}; {records}"
        f"{stopped}; no summary written, the cell is not done.\n"
        f"  last lines of {log_path}:\n{worker_log.last_lines(lines)}"
    )


def _pack_of(first_seed: int, procs: dict, cell: dict) -> list:
    """The seeds of the pack watched under ``first_seed``: up to the next pack's first seed, or the cell's last."""
    firsts = sorted(procs)
    later = [s for s in firsts if s > first_seed]
    end = later[0] if later else firsts[0] + cell["n"]
    return list(range(first_seed, end))


def main(args) -> int:
    spec = CellSpec.from_json(args.spec)
    try:
        run_cell(spec, args.steps_dir, args.summary, args.log_dir, args.cores, log=lambda m: print(m, flush=True))
    except CellInterrupted as stop:
        print(f"lorasweep cell: error: {stop}", file=sys.stderr, flush=True)
        return stop.exit_status
    return 0

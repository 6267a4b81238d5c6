"""``python -m lorasweep status``: where a sweep stands, cell by cell, while it runs.

The plan comes from the run's own resolved config, ``results/study/config.json``
(its first job writes it, ``--config`` overrides included), or, before that exists or
when config files are named, from the config files as the workflow resolves them; each
cell's state from what is on disk under the results folder:

- done: its ``summary.json`` exists (written last, so a cell is done only when it is);
- running: its scratch folder ``steps.work`` exists; each worker's step, latest and
  trailing reward and ETA come from the records it is writing;
- failed: neither, but a failed attempt left ``seed<k>.unfinished.jsonl`` next to its logs;
- waiting: nothing yet.

Reads files only and imports no torch, so it answers in well under a second.
"""

import json
import time
from pathlib import Path

import yaml
from tabulate import tabulate

from ..study import grid
from . import progress
from ..study.config import deep_merge, resolve

ROOT = Path(__file__).resolve().parents[2]
DONE, RUNNING, FAILED, WAITING = "done", "running", "failed", "waiting"


def load_plan(configfiles=(), config_path=ROOT / "config.yaml") -> dict:
    """The resolved study, as Snakemake resolves it: config.yaml, then each ``--configfile`` over it."""
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    overrides = {}
    for path in configfiles:
        overrides = deep_merge(overrides, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    return resolve(deep_merge(config, overrides), overrides)


def cell_status(cell: grid.Cell, study: dict, results: Path) -> dict:
    """State of one planned cell and, while it runs, of each of its workers."""
    cell_dir = results / "cells" / cell.path
    log_dir = results / "logs" / "cells" / cell.path
    training = study["training"]
    fixed = cell.experiment == grid.CONCURRENCY
    total = study["concurrency"]["steps"] if fixed else training["max_steps"]
    status = {"cell": cell, "state": WAITING, "workers": [], "detail": ""}
    if (cell_dir / "summary.json").exists():
        status["state"] = DONE
        summary = json.loads((cell_dir / "summary.json").read_text(encoding="utf-8"))
        status["detail"] = _done_detail(summary, fixed)
        return status
    work = cell_dir / "steps.work" / "steps"
    if (cell_dir / "steps.work").exists():
        status["state"] = RUNNING
        first = training["seed0"] if cell.block is None else \
            grid.block_seeds(study["lr_scaling"], cell.block, training["seed0"])[0]
        for seed in grid.seeds(first, cell.n):
            path = progress.worker_records_path(work, seed)
            records = progress.read_records(path) if path else []
            status["workers"].append(progress.worker_progress(
                seed, records, total, training["window"], None if fixed else training["target"],
                finished=path is not None and path.suffix == ".jsonl",
            ))
        return status
    if log_dir.exists() and any(log_dir.glob("seed*.unfinished.jsonl")):
        status["state"] = FAILED
        status["detail"] = f"see {log_dir}/launcher.log"
    return status


def _done_detail(summary: dict, fixed: bool) -> str:
    step_time = summary.get("step_time")
    pace = f"{step_time:.2f} s/step" if step_time else "no step time"
    if fixed:
        return pace
    steps = " ".join(
        str(w["steps_to_target"]) if w["steps_to_target"] is not None else f">{w['steps_run']}"
        for w in summary.get("workers", [])
    )
    return f"steps to target {steps}; {pace}"


def status_rows(statuses: list, window: int, now: float) -> list:
    """Table rows: one per cell, and one per worker of a running cell."""
    rows = []
    for status in statuses:
        cell = status["cell"]
        if status["state"] != RUNNING:
            rows.append([cell.path, status["state"], "", "", "", "", status["detail"]])
            continue
        etas = [w.eta_s for w in status["workers"]]
        cell_eta = None if any(e is None for e in etas) or not etas else max(etas)
        rows.append([cell.path, RUNNING, "", "", "", f"≤ {progress.duration(cell_eta)}", ""])
        for w in status["workers"]:
            trailing = "n/a" if w.trailing is None else f"{w.trailing:.3f}"
            if w.step == 0:
                note = "no step yet"
            elif w.reached:
                note = "reached the target"
            elif w.finished:
                note = "finished"
            else:
                note = f"{w.step_s:.2f} s/step, last step {progress.duration(max(0.0, now - w.last_record_at))} ago"
            rows.append([f"  seed {w.seed}", "", f"{w.step}/{w.total}",
                         "" if w.reward is None else f"{w.reward:.3f}", trailing,
                         "" if w.step == 0 else f"≤ {progress.duration(w.eta_s)}", note])
    return rows


def render(statuses: list, study: dict, now: float) -> str:
    counts = {state: sum(s["state"] == state for s in statuses) for state in (DONE, RUNNING, FAILED, WAITING)}
    window = study["training"]["window"]
    headline = (f"{counts[DONE]} of {len(statuses)} cells done, {counts[RUNNING]} running, "
                f"{counts[WAITING]} waiting" + (f", {counts[FAILED]} failed" if counts[FAILED] else ""))
    table = tabulate(
        status_rows(statuses, window, now),
        headers=["cell", "state", "step", "reward", f"trailing {window}", "ETA", "notes"],
        tablefmt="simple", disable_numparse=True,
    )
    footer = (f"target {study['training']['target']:g} (trailing mean over {window} steps), max "
              f"{study['training']['max_steps']} steps; ETA is an upper bound: the steps left at the recent pace "
              "(a run stops earlier when it reaches the target)")
    return f"{headline}\n\n{table}\n\n{footer}\n"


def sequential_status(study: dict, results: Path) -> tuple:
    """A sequential study's rounds: (line to print, the blocks of decided rounds that were not granted)."""
    lr = study["lr_scaling"]
    if not lr["enabled"] or not grid.is_sequential(lr):
        return "", set()
    rounds = grid.rounds(lr)
    decided, skipped = 0, set()
    for round_ in range(1, rounds + 1):
        path = results / "sequential" / f"round{round_}.json"
        if not path.exists():
            break
        decided = round_
        granted = set(json.loads(path.read_text(encoding="utf-8"))["continue"])
        skipped |= {c.path for c in grid.plan(study) if c.block == round_
                    and grid.cell_label(c.rank, c.batch_size, c.lr, c.control) not in granted}
    plan = grid.seed_plan(lr)
    line = (f"sequential seeds: {plan['initial']} per cell, then blocks of {plan['block']} up to {plan['max']}; "
            f"round {decided} of {rounds} decided" + (f", round {decided + 1} waits for round {decided}'s blocks"
                                                       if decided < rounds else ""))
    return line, skipped


def run_plan(results: Path, configfiles=()) -> dict:
    """The study a run under ``results`` follows: config files when named, else the run's own resolved config."""
    recorded = results / "study" / "config.json"
    if not configfiles and recorded.exists():
        return json.loads(recorded.read_text(encoding="utf-8"))
    return load_plan(configfiles)


def main(args) -> int:
    results = Path(args.results)
    study = run_plan(results, args.configfile or [])
    line, skipped = sequential_status(study, results)
    # blocks a decided round did not grant never run: they are not part of the study
    statuses = [cell_status(cell, study, results) for cell in grid.plan(study) if cell.path not in skipped]
    print(render(statuses, study, time.time()), end="")
    if line:
        print(line)
    return 0

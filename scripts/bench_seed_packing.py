#!/usr/bin/env python3
"""How a run-to-target cell's seeds share the CPU: n processes, one fused pack, or one pack per core.

    .venv/bin/python scripts/bench_seed_packing.py [--cells 4:8:1e-3 4:32:4e-3] [--n 6] [--rounds 2]

Runs lr-scaling cells of the resolved CPU preset (to the target, its max_steps and
early_steps) through the cell launcher on the base that `make run` built
(results/base), three ways, alternating them in each round so that a slow spell of
the machine hits all three alike:

- processes: n worker processes, one thread each;
- one pack: the n seeds fused in one process with every core (``--cores`` threads);
- packs per core: the launcher's default for a fused cell on a CPU, one single-thread
  pack per core.

Prints each cell's wall time from launch to summary (what the sweep pays), its step
time (docs/numbers.md, definition 3) and its run-steps per second (the steps all its
seeds ran, over the wall time). A pack sums in another order than a lone worker, so a
seed's trajectory parts from its lone twin's after some steps and the step counts
differ between the ways: run-steps per second compares the rate of work, the wall
what one cell cost.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lorasweep.study import grid
from lorasweep.study.cellspec import CellSpec
from lorasweep.study.config import resolve

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("processes", "one pack", "packs per core")


def run(resolved: dict, rank: int, batch_size: int, lr: float, n: int, way: str, cores: int, out: Path) -> dict:
    packing = grid.PROCESSES if way == "processes" else grid.FUSED
    cell = grid.Cell(grid.LR_SCALING, rank, batch_size, lr, n, packing=packing)
    spec = CellSpec.for_cell(resolved, cell, str(ROOT / "results/base/embedded/model"),
                             str(ROOT / "results/base/prompts.jsonl"))
    # one pack: the launcher makes one pack per core, so give it one "core" and the threads by hand
    launch_cores = 1 if way == "one pack" else cores
    if way == "one pack":
        spec = spec.with_training(threads_per_worker=cores)
    folder = out / f"{cell.cell_id}_{way.replace(' ', '_')}"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir", str(folder / "steps"),
         "--summary", str(folder / "summary.json"), "--log-dir", str(folder / "logs"), "--cores", str(launch_cores)],
        cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{cell.cell_id} ({way}) failed:\n{done.stderr[-3000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    return {"wall_s": wall, "step_s": summary["step_time"],
            "steps": [w["steps_to_target"] for w in summary["workers"]],
            "run_steps_per_s": sum(w["steps_run"] for w in summary["workers"]) / wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=["4:8:1e-3", "4:32:4e-3"], help="rank:batch_size:lr")
    p.add_argument("--n", type=int, default=6, help="seeds per cell")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    if not (ROOT / "results/base/prompts.jsonl").exists():
        sys.exit("missing results/base: build the base first (.venv/bin/snakemake --cores all results/base/base.json)")
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    resolved = resolve(config, {"scale": "cpu"}, gpus=[])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for text in args.cells:
                rank, batch_size, lr = text.split(":")
                for way in WAYS if round_ % 2 == 0 else reversed(WAYS):
                    r = run(resolved, int(rank), int(batch_size), float(lr), args.n, way, args.cores,
                            Path(tmp) / f"round{round_}")
                    results.setdefault((text, way), []).append(r)
                    print(f"round {round_ + 1}, cell {text}, {way}: {r['wall_s']:.1f} s, step {r['step_s']:.3f} s, "
                          f"steps to target {r['steps']}", file=sys.stderr, flush=True)
    print(f"\n{args.n} seeds per cell, {args.cores} cores, {args.rounds} round(s), median of the rounds\n")
    print("| cell (rank:bs:lr) | way | wall per cell | step time | run-steps/s | run-steps/s vs processes |")
    print("|---|---|---|---|---|---|")
    for text in args.cells:
        base = statistics.median(r["run_steps_per_s"] for r in results[text, "processes"])
        for way in WAYS:
            wall = statistics.median(r["wall_s"] for r in results[text, way])
            step = statistics.median(r["step_s"] for r in results[text, way])
            rate = statistics.median(r["run_steps_per_s"] for r in results[text, way])
            print(f"| {text} | {way} | {wall:.1f} s | {step:.3f} s | {rate:.1f} | {rate / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

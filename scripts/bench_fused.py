#!/usr/bin/env python3
"""Fused runs against processes on this machine's CPU: aggregate throughput and peak memory.

    python scripts/bench_fused.py [--levels 1 2 4 8] [--batch-sizes 8 16] [--steps 12] [--cores 2]
    python scripts/bench_fused.py --matmul      # only the stacked-matmul comparison behind lorasweep/training/fused.py

For each batch size and each K, one concurrency cell of K processes and one of
K runs fused in one process, both through the cell launcher (``python -m
lorasweep cell``) with the CPU preset's training settings (G 8, 32 new tokens,
rank 32 by default): aggregate steps/s = K / step time, the step time measured
as every cell's (docs/numbers.md, definition 6). While each cell runs, the
resident memory of the launcher's whole process tree is sampled every 0.1 s;
its peak is reported for the largest K. The base is the embedded one when
``results/base`` holds it, else a random-init base of the study's shape (under
random weights EOS is rare, so nearly every row decodes all its tokens: the
worst case). Prints markdown tables.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def tree_rss_kib(pid: int) -> int:
    """Resident memory (KiB) of ``pid`` and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def study(steps: int, warmup: int, rank: int) -> dict:
    from lorasweep.study.config import resolve

    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    resolved = resolve(config, {"scale": "cpu"}, gpus=[])
    resolved["training"].update(warmup_steps=warmup, sample_every=0, threads_per_worker="auto")
    resolved["concurrency"].update(steps=steps, rank=rank)
    return resolved


def base_paths(work: Path) -> tuple:
    """(model dir, prompts file, what it is): the embedded base if built here, else a random-init one."""
    embedded = ROOT / "results/base/embedded/model"
    prompts = ROOT / "results/base/prompts.jsonl"
    if embedded.exists() and prompts.exists():
        return embedded, prompts, "embedded base (results/base)"
    from lorasweep.bench.tiny_base import STUDY_MODEL, make_tiny_base

    folder = make_tiny_base(work / "base", STUDY_MODEL, stories=3000)
    return folder / "model", folder / "prompts.jsonl", "random-init base of the study's shape"


def run_cell(resolved: dict, model: Path, prompts: Path, batch_size: int, k: int, packing: str, cores: int,
             work: Path) -> dict:
    from lorasweep.study import grid
    from lorasweep.study.cellspec import CellSpec

    lr = resolved["concurrency"]["settings"][0]["lr"]
    cell = grid.Cell(grid.CONCURRENCY, resolved["concurrency"]["rank"], batch_size, float(lr), k, packing=packing)
    spec = CellSpec.for_cell(resolved, cell, str(model), str(prompts))
    out = work / cell.cell_id
    launcher = subprocess.Popen(
        [sys.executable, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir", str(out / "steps"),
         "--summary", str(out / "summary.json"), "--log-dir", str(out / "logs"), "--cores", str(cores)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, started = 0, time.perf_counter()
    while launcher.poll() is None:
        peak = max(peak, tree_rss_kib(launcher.pid))
        time.sleep(0.1)
    output = launcher.stdout.read()
    if launcher.returncode != 0:
        raise SystemExit(f"{cell.cell_id} failed:\n{output[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"bs": batch_size, "k": k, "packing": packing, "step_s": summary["step_time"],
            "steps_per_s": k / summary["step_time"], "peak_rss_mib": peak / 1024,
            "wall_s": time.perf_counter() - started}


def matmul_table() -> str:
    """One projection (q/k/v, 384 x 128) of K = 8 runs at rank 32, one thread: three ways to apply K adapters."""
    import torch

    torch.set_num_threads(1)
    k, r, d, out = 8, 32, 128, 384
    w, a, b = torch.randn(out, d), torch.randn(k, r, d), torch.randn(k, out, r)
    merged = w + torch.bmm(b, a)

    def timed(f, n=200):
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n * 1e6

    lines = ["| rows per run | merged bmm | shared W + low-rank bmm | per-run mm loop |", "|---|---|---|---|"]
    for rows in (16, 640):
        x = torch.randn(k, rows, d)
        lines.append(f"| {rows} | {timed(lambda: torch.bmm(x, merged.transpose(1, 2))):.0f} us | "
                     f"{timed(lambda: (x.view(-1, d) @ w.t()).view(k, rows, out) + torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2))):.0f} us | "
                     f"{timed(lambda: [x[i] @ merged[i].t() for i in range(k)]):.0f} us |")
    lines.append(f"\nmerging W + B A for K = 8: {timed(lambda: w + torch.bmm(b, a)):.0f} us per projection per step")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    p.add_argument("--steps", type=int, default=12, help="steps per run (the first --warmup are not timed)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--cores", type=int, default=2, help="the cell's cores: shared out among K processes, "
                                                         "all of them for the one fused process")
    p.add_argument("--matmul", action="store_true", help="only the stacked-matmul comparison")
    args = p.parse_args()
    if args.matmul:
        print(matmul_table())
        return 0
    from lorasweep import hardware

    resolved = study(args.steps, args.warmup, args.rank)
    t = resolved["training"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, prompts, what = base_paths(Path(tmp))
        for batch_size in args.batch_sizes:
            for k in args.levels:
                for packing in ("processes", "fused"):
                    rows.append(run_cell(resolved, model, prompts, batch_size, k, packing, args.cores, Path(tmp)))
                    r = rows[-1]
                    print(f"bs {batch_size} K {k} {packing}: {r['steps_per_s']:.2f} steps/s "
                          f"({r['step_s']:.3f} s/step), peak RSS {r['peak_rss_mib']:.0f} MiB, "
                          f"{r['wall_s']:.0f} s wall", file=sys.stderr, flush=True)
    print(f"CPU: {hardware.cpu_model()}, {args.cores} cores for each cell; {what}; G {t['generations_per_prompt']}, "
          f"{t['max_new_tokens']} new tokens, rank {args.rank}, {args.steps} steps ({args.warmup} untimed)\n")
    print("| bs | K | processes: steps/s | fused: steps/s | fused / processes |")
    print("|---|---|---|---|---|")
    by = {(r["bs"], r["k"], r["packing"]): r for r in rows}
    for batch_size in args.batch_sizes:
        for k in args.levels:
            proc, fused = by[batch_size, k, "processes"], by[batch_size, k, "fused"]
            print(f"| {batch_size} | {k} | {proc['steps_per_s']:.2f} | {fused['steps_per_s']:.2f} | "
                  f"{fused['steps_per_s'] / proc['steps_per_s']:.2f}x |")
    k = max(args.levels)
    print(f"\nPeak resident memory of the cell's process tree at K = {k}:\n")
    print("| bs | processes | fused |")
    print("|---|---|---|")
    for batch_size in args.batch_sizes:
        print(f"| {batch_size} | {by[batch_size, k, 'processes']['peak_rss_mib']:.0f} MiB | "
              f"{by[batch_size, k, 'fused']['peak_rss_mib']:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

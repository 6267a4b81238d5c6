#!/usr/bin/env python3
"""The GPU check in one command: what the worker does on this machine's GPU, as a markdown table.

    python scripts/device_check.py --out device_check.md [--wheels wheels/]
    python scripts/device_check.py --cpu --out device_check.md     # the same, tiny, on the CPU (CI)

Needs no network and no prepared data: it builds a random-init base of the
study's shape (SimpleStories-1.25M: hidden 128, 4 layers, vocab 4096) with a
tokenizer trained on generated stories, so that, EOS being rare under random
weights, nearly every row decodes the full 128 tokens (the worst case). Then:

1. the GPU's name and driver (``lorasweep.hardware``);
2. ``pytest -m gpu`` (the tests that need CUDA);
3. one worker's step time at bs 32 and 128 (G 16, 128 new tokens, rank 32),
   with the decode step eager and as a CUDA graph, split into generate / score /
   update, next to the 0.66-0.79 s/step measured with TRL under MPS before;
4. cells of n = 1, 4, 8, 12 workers under MPS (the cell launcher of the
   study), aggregate steps/s, and whether the MPS daemon saw every worker;
5. fused cells of n = 1, 4, 16, 64 runs in one process (packing: fused),
   aggregate steps/s by the same definition.

``--wheels DIR`` installs what is missing (pytest, snakemake, ...) from a folder
of wheels first (``pip install --no-index --find-links DIR``); docs/gpu.md says
how to pack one. ``--cpu`` runs every part at tiny sizes on the CPU (decode:
the dropping one; MPS: off), in about a minute on 2 cores. The table is printed
last and written to ``--out``.
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
# the one path line of the project: a GPU machine runs this script from a copy of the checkout
# without installing the package (its image has torch, transformers and peft, and no network)
sys.path.insert(0, str(ROOT))

from lorasweep.bench.specs import cell_spec, worker_spec  # noqa: E402
from lorasweep.bench.tiny_base import STUDY_MODEL, TINY_MODEL, make_tiny_base  # noqa: E402

SEED_STEP_S = "0.66-0.79"  # s/step, TRL under MPS on an H200, measured before this engine
# module -> wheel name, for what the check and the gpu tests import
NEEDED = {"pytest": "pytest", "yaml": "pyyaml", "jsonschema": "jsonschema", "tabulate": "tabulate",
          "pandas": "pandas", "snakemake": "snakemake", "peft": "peft", "transformers": "transformers",
          "tokenizers": "tokenizers", "scipy": "scipy"}
PLANS = {
    # what each mode measures: worker batch sizes, G, new tokens, rank, steps (warm-up included)
    "gpu": {"model": STUDY_MODEL, "stories": 3000, "batch_sizes": [32, 128], "group": 16, "tokens": 128,
            "rank": 32, "steps": 12, "warmup": 4, "levels": [1, 4, 8, 12], "fused_levels": [1, 4, 16, 64],
            "cell_bs": 128, "cell_steps": 12,
            "modes": ["eager", "graph"]},
    "cpu": {"model": TINY_MODEL, "stories": 300, "batch_sizes": [8, 16], "group": 4, "tokens": 8,
            "rank": 4, "steps": 4, "warmup": 1, "levels": [1, 2], "fused_levels": [1, 2], "cell_bs": 8, "cell_steps": 3,
            "modes": ["dropping"]},
}


# ---- the parts ---------------------------------------------------------------------------------


def install_missing(wheels) -> list:
    """Install the missing modules' wheels from ``wheels`` (offline); returns what is still missing."""
    missing = [wheel for module, wheel in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing and wheels:
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *missing]
        if subprocess.run(command, check=False).returncode != 0:  # a system interpreter: into the user site
            subprocess.run(command + ["--user"], check=False)
            import site

            if site.getusersitepackages() not in sys.path:
                sys.path.append(site.getusersitepackages())
        importlib.invalidate_caches()
        missing = [wheel for module, wheel in NEEDED.items() if importlib.util.find_spec(module) is None]
    return missing


def run_gpu_tests(timeout_s: int) -> str:
    if importlib.util.find_spec("pytest") is None:
        return "not run: pytest is not installed (see --wheels)"
    started = time.perf_counter()
    # only the files that hold gpu tests: collecting the others would need what a GPU machine may lack (snakemake)
    files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in path.read_text(encoding="utf-8"))
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s} s"
    lines = [line.strip("= ") for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else proc.stderr.strip()[-200:]
    if proc.returncode not in (0, 5):
        failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        summary += "; " + "; ".join(failed[:3])
        print(proc.stdout[-3000:], file=sys.stderr)
    return f"{summary} ({time.perf_counter() - started:.0f} s)"


def run_worker(job: dict) -> dict:
    """One worker's median step parts. On the CPU in this process (an interpreter start costs more than the
    run); on a GPU in a fresh process, so that this one never opens a CUDA context of its own (the MPS
    daemon of the cells below starts on a GPU nobody else holds) and no run inherits another's state."""
    if job["device"] != "cuda":
        return worker_medians(job)
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True,
                              text=True, timeout=job["timeout_s"], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {job['timeout_s']} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_medians(job: dict) -> dict:
    from lorasweep.training.static_decode import GRAPH_ENV
    from lorasweep.training.worker import train

    os.environ[GRAPH_ENV] = "0" if job["mode"] == "eager" else "1"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec = worker_spec(job["base"], Path(tmp) / "steps.jsonl", job["device"], job["batch_size"],
                               job["group"], job["tokens"], job["rank"], job["steps"], job["threads"])
            path = train(spec.to_dict(), log=lambda m: None)
            records = [json.loads(line) for line in path.read_text().splitlines()][job["warmup"]:]
    except Exception as error:  # the table says what failed; the other parts still run
        return {"error": f"{type(error).__name__}: {error}"[:200]}
    finally:
        os.environ.pop(GRAPH_ENV, None)
    return {part: statistics.median(r[part] for r in records)
            for part in ("gen_s", "score_s", "update_s", "step_s", "tokens")}


def run_cells(base, plan: dict, device: str, mps: str, work: Path, timeout_s: int, deadline: float,
              packing: str = "processes") -> list:
    rows = []
    fused = packing == "fused"
    for n in plan["fused_levels" if fused else "levels"]:
        if time.perf_counter() > deadline:
            rows.append({"n": n, "error": "not run: time budget spent"})
            continue
        spec = cell_spec(base, device, n, plan["cell_bs"], plan["group"], plan["tokens"], plan["rank"],
                         plan["cell_steps"], None if fused else mps, packing)
        out = work / f"cell_n{n}{'_fused' if fused else ''}"
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir",
                 str(out / "steps"), "--summary", str(out / "summary.json"), "--log-dir", str(out / "logs"),
                 "--cores", str(os.cpu_count() if device == "cuda" else 1 if fused else n)],
                cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            ok = proc.returncode == 0
            error = "" if ok else (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1][:200]
        except subprocess.TimeoutExpired:
            ok, error = False, f"timed out after {timeout_s} s"
        if not ok:
            rows.append({"n": n, "error": error})
            continue
        summary = json.loads((out / "summary.json").read_text())
        verification = summary["mps"].get("verification") or {}
        rows.append({"n": n, "step_s": summary["step_time"], "steps_per_s": n / summary["step_time"],
                     "mps": summary["mps"]["state"], "clients_ok": verification.get("ok"),
                     "wall_s": time.perf_counter() - started})
    return rows


def table(rows: list) -> str:
    lines = ["| check | result |", "|---|---|"]
    lines += [f"| {name} | {str(value).replace('|', '/')} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="device_check.md", help="where the table is written")
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    p.add_argument("--wheels", help="folder of wheels to install missing packages from (offline)")
    p.add_argument("--skip-tests", action="store_true", help="leave out pytest -m gpu")
    p.add_argument("--budget-s", type=float, default=450, help="parts not started by then are left out")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(worker_medians(json.loads(args.child))))
        return 0
    started = time.perf_counter()
    missing = install_missing(args.wheels)
    import torch

    from lorasweep import hardware

    mode = "cpu" if args.cpu else "gpu"
    plan = PLANS[mode]
    device = "cpu" if args.cpu else "cuda"
    rows = []
    if args.cpu:
        rows.append(("device", f"CPU ({hardware.cpu_model()}), {hardware.cpu_count()} cores; --cpu mode, tiny sizes"))
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible to torch; use --cpu for the CPU run")
        names = hardware.gpu_names() or ["CUDA GPU (nvidia-smi not found)"]  # no CUDA context in this process
        rows.append(("device", f"{names[0]} (driver {hardware.gpu_driver() or 'unknown'}, CUDA "
                               f"{torch.version.cuda}), {hardware.cpu_count()} host cores"))
    rows.append(("software", f"torch {torch.__version__}, python {sys.version.split()[0]}"
                             + (f"; missing: {', '.join(missing)}" if missing else "")))
    rows.append(("pytest -m gpu", "skipped (--skip-tests)" if args.skip_tests else run_gpu_tests(180)))
    print(f"[{time.perf_counter() - started:.0f} s] tests done", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_base(Path(tmp) / "base", plan["model"], plan["stories"])
        print(f"[{time.perf_counter() - started:.0f} s] base built", flush=True)
        for batch_size in plan["batch_sizes"]:
            for decode in plan["modes"]:
                job = {"base": str(base), "device": device, "batch_size": batch_size, "group": plan["group"],
                       "tokens": plan["tokens"], "rank": plan["rank"], "steps": plan["steps"],
                       "warmup": plan["warmup"], "threads": 1, "mode": decode, "timeout_s": 150}
                name = f"worker bs {batch_size} {decode}"
                if time.perf_counter() > started + args.budget_s:
                    rows.append((name, "not run: time budget spent"))
                    continue
                r = run_worker(job)
                if "error" in r:
                    rows.append((name, f"failed: {r['error']}"))
                else:
                    versus = f"; {0.73 / r['step_s']:.1f}x the seed's {SEED_STEP_S} s" if device == "cuda" else ""
                    rows.append((name, f"{r['step_s']:.4f} s/step (generate {r['gen_s']:.4f}, score "
                                       f"{r['score_s']:.4f}, update {r['update_s']:.4f}; {r['tokens']:.0f} "
                                       f"tokens){versus}"))
                print(f"[{time.perf_counter() - started:.0f} s] {name}: {rows[-1][1]}", flush=True)
        control = shutil.which("nvidia-cuda-mps-control")
        mps = "off" if args.cpu else ("auto" if control else "off")
        rows.append(("nvidia-cuda-mps-control", control or "not found"))
        for c in run_cells(base, plan, device, mps, Path(tmp), timeout_s=150, deadline=started + args.budget_s):
            name = f"cell n {c['n']} (bs {plan['cell_bs']})"
            if "error" in c:
                rows.append((name, c["error"] if c["error"].startswith("not run") else f"failed: {c['error']}"))
            else:
                rows.append((name, f"{c['steps_per_s']:.2f} steps/s together ({c['step_s']:.4f} s/step per "
                                   f"worker); MPS {c['mps']}, clients attached: {c['clients_ok']}"))
            print(f"[{time.perf_counter() - started:.0f} s] {name}: {rows[-1][1]}", flush=True)
        for c in run_cells(base, plan, device, mps, Path(tmp), timeout_s=150, deadline=started + args.budget_s,
                           packing="fused"):
            name = f"fused cell n {c['n']} (bs {plan['cell_bs']})"
            if "error" in c:
                rows.append((name, c["error"] if c["error"].startswith("not run") else f"failed: {c['error']}"))
            else:
                versus = f"; {c['steps_per_s'] / 10.4:.1f}x the seed's 10.4 steps/s" if device == "cuda" else ""
                rows.append((name, f"{c['steps_per_s']:.2f} steps/s together ({c['step_s']:.4f} s/step for the "
                                   f"pack){versus}"))
            print(f"[{time.perf_counter() - started:.0f} s] {name}: {rows[-1][1]}", flush=True)
    rows.append(("wall time", f"{time.perf_counter() - started:.0f} s"))
    text = table(rows)
    Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

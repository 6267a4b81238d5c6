#!/usr/bin/env python3
"""Steady-state step time of one worker, split into generate / score / update.

Runs one GRPO + LoRA worker for a few steps on a base model folder (for example
the one `make run` builds, results/base/embedded/model) and prints the median
and spread of each part after warm-up.

    .venv/bin/python scripts/bench_worker.py --rank 32 --batch-size 16 --steps 25
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

# lorasweep is the installed package (an editable install of this checkout)
from lorasweep.study.cellspec import WorkerSpec
from lorasweep.study.config import resolve
from lorasweep.training.worker import train

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--generations", type=int, help="G (default: the resolved config's)")
    p.add_argument("--max-new-tokens", type=int, help="default: the resolved config's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--noise-scale", type=int, help="training.noise_scale: every this many updates, 0 off "
                                                   "(default: the config's)")
    p.add_argument("--base-dir", default=str(ROOT / "results/base/embedded/model"))
    p.add_argument("--prompts", default=str(ROOT / "results/base/prompts.jsonl"))
    args = p.parse_args()

    for needed in (args.base_dir, args.prompts):
        if not Path(needed).exists():
            sys.exit(f"missing {needed}: build the base first (.venv/bin/snakemake --cores all results/base/base.json)")
    config = resolve(yaml.safe_load((ROOT / "config.yaml").read_text()), {})
    training = dict(config["training"], sample_every=0)
    if args.generations:
        training["generations_per_prompt"] = args.generations
    if args.max_new_tokens:
        training["max_new_tokens"] = args.max_new_tokens
    if args.noise_scale is not None:
        training["noise_scale"] = args.noise_scale
    with tempfile.TemporaryDirectory() as tmp:
        spec = WorkerSpec.alone(rank=args.rank, batch_size=args.batch_size, lr=args.lr, training=training,
                                steps=args.steps, device=args.device, base_dir=args.base_dir, prompts=args.prompts,
                                steps_out=Path(tmp) / "steps.jsonl", threads=args.threads)
        path = train(spec.to_dict(), log=lambda m: None)
        records = [json.loads(line) for line in path.read_text().splitlines()][args.warmup:]
    print(f"rank {args.rank}, bs {args.batch_size} (G={training['generations_per_prompt']}, "
          f"{training['max_new_tokens']} new tokens), {args.threads} thread(s), device {args.device}, "
          f"noise scale every {training.get('noise_scale') or 'no'} update(s), "
          f"{len(records)} steps after {args.warmup} warm-up")
    for part in ("gen_s", "score_s", "update_s", "step_s"):
        values = [r[part] for r in records]
        print(f"  {part[:-2]:>8}: median {statistics.median(values):.4f} s, mean {statistics.mean(values):.4f} s  "
              f"(min {min(values):.4f}, max {max(values):.4f})")
    tokens = statistics.mean(r["tokens"] for r in records)
    print(f"  completion tokens per step: {tokens:.0f}; {tokens / statistics.median(r['step_s'] for r in records):.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One-off specs for measuring outside a study: one worker, or one concurrency cell, on a base folder.

They train as a cell of the project's config.yaml does (loss, schedule, sampling);
only logging and warm-up are set for a short measurement.
"""

from pathlib import Path

import yaml

CONFIG_PATH = Path(__file__).resolve().parents[2] / "config.yaml"
TRAINING = {**yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))["training"],
            "warmup_steps": 2, "sample_every": 0, "threads_per_worker": 1}


def training(group: int, tokens: int) -> dict:
    return dict(TRAINING, generations_per_prompt=group, max_new_tokens=tokens)


def worker_spec(base, steps_out, device: str, batch_size: int, group: int, tokens: int, rank: int, steps: int,
                threads: int = 1):
    """One worker (seed 0) of a one-worker fixed-step cell, starting at once: a ``WorkerSpec``."""
    from ..study.cellspec import WorkerSpec

    base = Path(base)
    return WorkerSpec.alone(rank=rank, batch_size=batch_size, lr=1e-3, training=training(group, tokens), steps=steps,
                            device=device, base_dir=base / "model", prompts=base / "prompts.jsonl",
                            steps_out=steps_out, threads=threads)


def cell_spec(base, device: str, n: int, batch_size: int, group: int, tokens: int, rank: int, steps: int,
              mps, packing: str = "processes"):
    """A fixed-step concurrency cell of n at lr 1e-3 on the base in ``base``: a ``CellSpec``."""
    from ..study.cellspec import CellSpec
    from ..study.grid import CONCURRENCY, FIXED_STEPS, Cell

    base = Path(base)
    return CellSpec(cell=Cell(CONCURRENCY, rank, batch_size, 1e-3, n, packing=packing),
                    training=training(group, tokens), mode=FIXED_STEPS, steps=steps, device=device, mps=mps,
                    base_dir=str(base / "model"), prompts=str(base / "prompts.jsonl"))

"""The cells of a study: (rank, batch size, lr, n) per experiment, and their lr.

This is the one place that decides which cells exist and what learning rate each
gets. Planning imports no torch, so a dry run of the workflow stays fast.
"""

import math
from dataclasses import asdict, dataclass
from typing import Optional

from .config import lr_for_rank

LR_SCALING = "lr_scaling"
CONCURRENCY = "concurrency"

# How a cell's workers run (a cell spec's "mode", lorasweep.study.cellspec): to the target, stopping there or at
# max_steps (the lr_scaling experiment), or a fixed number of steps whose step time is
# the point (the concurrency experiment).
TO_TARGET = "to_target"
FIXED_STEPS = "fixed_steps"
MODE_OF_EXPERIMENT = {LR_SCALING: TO_TARGET, CONCURRENCY: FIXED_STEPS}
# How a cell's n runs share the device: n worker processes (under MPS on a GPU), or one
# process that trains all n as one fused pack over one base (lorasweep/training/fused.py)
PROCESSES = "processes"
FUSED = "fused"
PACKINGS = (PROCESSES, FUSED)
# what only a run to the target looks at (its stop, its early reward, its noise scale); a
# fixed-step cell's spec leaves them out, so that changing them does not rerun cells they
# cannot change, and its step time is the plain update's
TARGET_KEYS = ("target", "window", "max_steps", "early_steps", "noise_scale")


def scaled_lr(base_lr: float, base_batch_size: int, batch_size: int, rule: str) -> float:
    """lr for ``batch_size`` from (base_batch_size, base_lr): linear, or square-root, scaling."""
    ratio = batch_size / base_batch_size
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"unknown lr scaling rule {rule!r}; expected 'linear' or 'sqrt'")


def format_lr(lr: float) -> str:
    """The lr as a cell id writes it: 3e-04, 1.2e-03.

    An identifier, not a display (people read ``formatting.lr``, "3e-4"): it names the
    cell's folder, so changing it would make every finished cell look missing.
    """
    mantissa, exponent = f"{lr:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


@dataclass(frozen=True)
class Cell:
    experiment: str
    rank: int
    batch_size: int
    lr: float
    n: int
    control: bool = False  # an lr_scaling cell whose lr was not scaled
    packing: str = PROCESSES
    # a sequential study's block of seeds (0 the first): one job of a cell whose seeds come in blocks;
    # None for a cell of fixed seeds, whose spec and folder are as they always were
    block: Optional[int] = None

    @property
    def cell_id(self) -> str:
        # a fused cell is another measurement of the same (rank, bs, lr, n): its own folder
        suffix = "_fused" if self.packing == FUSED else ""
        block = "" if self.block is None else f"_b{self.block}"
        return f"r{self.rank}_bs{self.batch_size}_lr{format_lr(self.lr)}_n{self.n}{suffix}{block}"

    @property
    def path(self) -> str:
        return f"{self.experiment}/{self.cell_id}"

    @property
    def key(self) -> tuple:
        """What a cell is, whatever its seeds: (rank, batch size, lr, control, packing); a sequential
        cell's blocks share it, and the tables merge them into one row."""
        return (self.rank, self.batch_size, self.lr, self.control, self.packing)

    def as_dict(self) -> dict:
        data = {**asdict(self), "cell_id": self.cell_id}
        if self.block is None:
            del data["block"]
        return data


def cell_label(rank, batch_size, lr, control) -> str:
    """A cell as a sequential study's decisions name it, whatever its seeds: r4_bs8_lr1e-03 (and _control)."""
    return f"r{rank}_bs{batch_size}_lr{format_lr(lr)}" + ("_control" if control else "")


def seed_plan(cfg: dict) -> dict:
    """A cell's seeds: {initial, block, max}; ``lr_scaling.n`` is a number (fixed: initial = max = n) or that mapping."""
    n = cfg["n"]
    if isinstance(n, dict):
        return {"initial": int(n["initial"]), "block": int(n.get("block", n["initial"])), "max": int(n["max"])}
    return {"initial": int(n), "block": int(n), "max": int(n)}


def is_sequential(cfg: dict) -> bool:
    """Seeds in blocks, added only where a comparison is still open (docs/numbers.md, "Sequential seeds")."""
    plan = seed_plan(cfg)
    return plan["max"] > plan["initial"]


def rounds(cfg: dict) -> int:
    """Rounds after the first of a sequential study: blocks a cell may get beyond its initial one."""
    plan = seed_plan(cfg)
    return (plan["max"] - plan["initial"]) // plan["block"] if is_sequential(cfg) else 0


def block_seeds(cfg: dict, block: int, seed0: int) -> tuple:
    """(first seed, count) of block ``block``: the initial block first, then blocks of ``block`` seeds."""
    plan = seed_plan(cfg)
    if block == 0:
        return seed0, plan["initial"]
    return seed0 + plan["initial"] + (block - 1) * plan["block"], plan["block"]


def lr_scaling_cells(cfg: dict) -> list:
    """Scaled cells for every rank x batch size, then the control cells that differ from them.

    A sequential study plans every block a cell may get (round 0's and each later
    round's); which ones run is decided between rounds (``lorasweep.analysis.sequential``).
    """
    if not cfg["enabled"]:
        return []
    plan = seed_plan(cfg)
    cells = []
    packing = cfg.get("packing", PROCESSES)

    def add(rank, batch_size, lr, control):
        if any((c.rank, c.batch_size, c.lr) == (rank, batch_size, lr) for c in cells):
            return  # a control whose lr is the scaled one is that cell
        if not is_sequential(cfg):
            cells.append(Cell(LR_SCALING, rank, batch_size, lr, plan["max"], control=control, packing=packing))
            return
        for block in range(rounds(cfg) + 1):
            cells.append(Cell(LR_SCALING, rank, batch_size, lr, block_seeds(cfg, block, 0)[1], control=control,
                              packing=packing, block=block))

    for rank in cfg["ranks"]:
        base_lr = lr_for_rank(cfg["base_lr"], rank)
        for batch_size in cfg["batch_sizes"]:
            add(rank, batch_size, scaled_lr(base_lr, cfg["base_batch_size"], batch_size, cfg["scaling"]), False)
        for control in cfg["controls"]:
            add(rank, control["batch_size"], lr_for_rank(control["lr"], rank), True)
    return cells


def concurrency_cells(cfg: dict) -> list:
    if not cfg["enabled"]:
        return []
    cells = []
    for packing in cfg.get("packing", [PROCESSES]):
        for setting in cfg["settings"]:
            levels = setting["levels"]
            if packing == FUSED and cfg.get("fused_levels") is not None:
                levels = cfg["fused_levels"]
            cells += [Cell(CONCURRENCY, cfg["rank"], setting["batch_size"], float(setting["lr"]), n, packing=packing)
                      for n in levels]
    return cells


def plan(resolved: dict) -> list:
    """Every cell of the study, in a stable order."""
    return lr_scaling_cells(resolved["lr_scaling"]) + concurrency_cells(resolved["concurrency"])


def seeds(seed0: int, n: int) -> list:
    """The n concurrent workers of a cell are also its n seeds."""
    return list(range(seed0, seed0 + n))

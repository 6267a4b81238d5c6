"""The cells of a study: (rank, batch size, lr, n) per experiment, and their lr.

This is the one place that decides which cells exist and what learning rate each
gets. Planning imports no torch, so a dry run of the workflow stays fast.
"""

import math
from dataclasses import asdict, dataclass

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

    @property
    def cell_id(self) -> str:
        # a fused cell is another measurement of the same (rank, bs, lr, n): its own folder
        suffix = "_fused" if self.packing == FUSED else ""
        return f"r{self.rank}_bs{self.batch_size}_lr{format_lr(self.lr)}_n{self.n}{suffix}"

    @property
    def path(self) -> str:
        return f"{self.experiment}/{self.cell_id}"

    def as_dict(self) -> dict:
        return {**asdict(self), "cell_id": self.cell_id}


def lr_scaling_cells(cfg: dict) -> list:
    """Scaled cells for every rank x batch size, then the control cells that differ from them."""
    if not cfg["enabled"]:
        return []
    cells = []
    packing = cfg.get("packing", PROCESSES)
    for rank in cfg["ranks"]:
        base_lr = lr_for_rank(cfg["base_lr"], rank)
        for batch_size in cfg["batch_sizes"]:
            lr = scaled_lr(base_lr, cfg["base_batch_size"], batch_size, cfg["scaling"])
            cells.append(Cell(LR_SCALING, rank, batch_size, lr, cfg["n"], packing=packing))
        for control in cfg["controls"]:
            cell = Cell(LR_SCALING, rank, control["batch_size"], lr_for_rank(control["lr"], rank), cfg["n"],
                        control=True, packing=packing)
            if not any(c.cell_id == cell.cell_id for c in cells):
                cells.append(cell)
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

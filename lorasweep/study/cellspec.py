"""What a cell job is given: the typed cell spec, and the per-process specs built from it.

``CellSpec`` is everything that decides a cell's result and nothing else
(docs/design.md §6). The workflow passes its JSON (``to_json``) as the cell job's
parameter, so a change in any value here reruns that cell, and a change elsewhere
does not; that JSON text must therefore stay byte-for-byte what it was for an
unchanged study, or every finished study would rerun.

The launcher (``lorasweep.launch.cell``) turns it into one ``WorkerSpec`` per worker
process, or one ``FusedSpec`` for a fused pack; their ``to_dict`` is the JSON file
each process reads. Planning imports this module: no torch here.
"""

import dataclasses
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional

from ..errors import LorasweepError
from .grid import block_seeds, CONCURRENCY, FIXED_STEPS, LR_SCALING, MODE_OF_EXPERIMENT, PACKINGS, PROCESSES, FUSED, \
    TARGET_KEYS, TO_TARGET, Cell

MODES = (TO_TARGET, FIXED_STEPS)
DEVICES = ("cpu", "cuda")
# how GPU workers share the device (lorasweep.launch.mps); None where it does not apply
MPS_MODES = ("auto", "required", "off")
EXPERIMENTS = (LR_SCALING, CONCURRENCY)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _json_copy(value, what: str):
    """A deep, JSON-clean copy: the spec travels as JSON, so anything else would change on the way."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise LorasweepError(f"{what} is not JSON: {error}") from None


def cell_from_dict(data: Mapping) -> Cell:
    """A ``Cell`` from its ``as_dict`` form; the cell id, if given, must be the one its fields make."""
    names = [f.name for f in dataclasses.fields(Cell)]
    unknown = sorted(set(data) - set(names) - {"cell_id"})
    missing = [name for name in ("experiment", "rank", "batch_size", "lr", "n") if name not in data]
    where = f"cell {data.get('cell_id', '?')}"
    if unknown or missing:
        raise LorasweepError(f"{where}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"missing key(s) {', '.join(missing)}"] if missing else [])))
    cell = Cell(**{name: data[name] for name in names if name in data})
    if "cell_id" in data and data["cell_id"] != cell.cell_id:
        raise LorasweepError(f"{where}: its fields make the cell id {cell.cell_id}")
    return cell


@dataclass(frozen=True)
class CellSpec:
    """Everything that decides one cell's result; validated when built."""

    cell: Cell
    training: Mapping  # the study's training settings (a read-only copy)
    mode: str  # TO_TARGET or FIXED_STEPS
    steps: int  # the most steps a worker runs (a to-target run's max_steps)
    device: str  # "cpu" or "cuda"
    mps: Optional[str]  # one of MPS_MODES for worker processes on a GPU, else None
    base_dir: str
    prompts: str

    def __post_init__(self):
        if not isinstance(self.cell, Cell):
            raise LorasweepError(f"cell spec: cell must be a lorasweep.study.grid.Cell, not {type(self.cell).__name__}")
        where = f"cell {self.cell.cell_id}"
        problems = []
        if self.cell.experiment not in EXPERIMENTS:
            problems.append(f"experiment {self.cell.experiment!r} is not one of {', '.join(map(repr, EXPERIMENTS))}")
        if self.cell.packing not in PACKINGS:
            problems.append(f"packing {self.cell.packing!r} is not one of {', '.join(map(repr, PACKINGS))}")
        if not (_positive_int(self.cell.n) and _positive_int(self.cell.rank) and _positive_int(self.cell.batch_size)):
            problems.append(f"rank, batch size and n must be positive integers (got {self.cell.rank!r}, "
                            f"{self.cell.batch_size!r}, {self.cell.n!r})")
        if self.mode not in MODES:
            # a typo here would silently change the run
            problems.append(f"mode {self.mode!r} is not one of {', '.join(map(repr, MODES))}")
        if not _positive_int(self.steps):
            problems.append(f"steps must be a positive integer, not {self.steps!r}")
        if self.device not in DEVICES:
            problems.append(f"device {self.device!r} is not one of {', '.join(map(repr, DEVICES))}")
        if self.mps is not None and self.mps not in MPS_MODES:
            problems.append(f"mps {self.mps!r} is not one of {', '.join(map(repr, MPS_MODES))} (or none)")
        if not isinstance(self.training, Mapping):
            problems.append(f"training must be a mapping, not {type(self.training).__name__}")
        elif self.mode == TO_TARGET:
            missing = [key for key in TARGET_KEYS if key not in self.training and key not in ("early_steps", "noise_scale")]
            if missing:
                problems.append(f"a run to the target needs training key(s) {', '.join(missing)}")
        if problems:
            raise LorasweepError(f"{where}: " + "; ".join(problems))
        # a read-only copy: a spec is a value, and two cells must never share (and change) one dict
        object.__setattr__(self, "training", MappingProxyType(_json_copy(dict(self.training), f"{where}: training")))

    # ---- building one ----------------------------------------------------------------------

    @classmethod
    def for_cell(cls, study: dict, cell: Cell, base_dir: str, prompts: str) -> "CellSpec":
        """The spec of ``cell`` in the resolved ``study``: the one place a cell's spec is built."""
        training = dict(study["training"])
        mode = MODE_OF_EXPERIMENT[cell.experiment]
        if mode == FIXED_STEPS:
            steps = study["concurrency"]["steps"]
            # what only a run to the target looks at: changing it must not rerun fixed-step cells
            for key in TARGET_KEYS:
                training.pop(key, None)
        else:
            steps = training["max_steps"]
        if cell.block is not None:  # a block of a sequential cell: its own seeds, after the earlier blocks'
            training["seed0"] = block_seeds(study["lr_scaling"], cell.block, training["seed0"])[0]
        device = study["resolved"]["device"]
        return cls(
            cell=cell, training=training, mode=mode, steps=steps, device=device,
            # MPS shapes how GPU workers share the device; on a CPU, or for one fused process, it does not apply
            mps=study["mps"] if device == "cuda" and cell.packing == PROCESSES else None,
            base_dir=base_dir, prompts=prompts,
        )

    def with_training(self, **changes) -> "CellSpec":
        """This spec with some training settings changed (or added).

        A to-target run's steps are its max_steps: changing max_steps changes steps too.
        """
        steps = changes["max_steps"] if self.mode == TO_TARGET and "max_steps" in changes else self.steps
        return dataclasses.replace(self, training={**self.training, **changes}, steps=steps)

    def replace(self, **changes) -> "CellSpec":
        """``dataclasses.replace``, validated again."""
        return dataclasses.replace(self, **changes)

    # ---- what it is --------------------------------------------------------------------------

    @property
    def cell_id(self) -> str:
        return self.cell.cell_id

    @property
    def fused(self) -> bool:
        return self.cell.packing == FUSED

    @property
    def seeds(self) -> list:
        """The n concurrent workers of a cell are also its n seeds."""
        return list(range(self.training["seed0"], self.training["seed0"] + self.cell.n))

    # ---- as JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The plain form; its keys and values are exactly what the workflow has always passed."""
        return {
            "cell": self.cell.as_dict(),
            "training": _json_copy(dict(self.training), "training"),
            "mode": self.mode,
            "steps": self.steps,
            "device": self.device,
            "mps": self.mps,
            "base_dir": self.base_dir,
            "prompts": self.prompts,
        }

    def to_json(self) -> str:
        """The cell job's parameter: sorted keys, so the same spec is always the same text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping) -> "CellSpec":
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, Mapping) or not isinstance(data.get("cell"), Mapping):
            raise LorasweepError("cell spec: expected an object with a 'cell' object")
        where = f"cell {data['cell'].get('cell_id', '?')}"
        unknown = sorted(set(data) - set(names))
        missing = [name for name in names if name not in data]
        if unknown or missing:
            raise LorasweepError(f"{where}: spec has " + "; ".join(
                ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing key(s) {', '.join(missing)}"] if missing else [])))
        return cls(**{**{name: data[name] for name in names}, "cell": cell_from_dict(data["cell"])})

    @classmethod
    def from_json(cls, text: str) -> "CellSpec":
        try:
            data = json.loads(text)
        except ValueError as error:
            raise LorasweepError(f"cell spec: not JSON ({error})") from None
        return cls.from_dict(data)


# ---- what one process of a cell reads ---------------------------------------------------------


@dataclass(frozen=True)
class Barrier:
    """Where workers report ready and wait for the go, so that their steps overlap."""

    ready_dir: str
    go: str
    timeout_s: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: the cell's spec plus its seed, threads and where its records go."""

    cell_spec: CellSpec
    seed: int
    threads: int
    steps_out: str
    barrier: Optional[Barrier] = None  # None: start at once (a benchmark, a test)
    fault: Optional[dict] = None  # test-only fault injection (lorasweep.training.faults.FAULT_ENV)

    def __post_init__(self):
        if not _positive_int(self.threads):
            raise LorasweepError(f"cell {self.cell_spec.cell_id}: threads must be a positive integer, "
                                 f"not {self.threads!r}")

    @classmethod
    def alone(cls, *, rank: int, batch_size: int, lr: float, training: Mapping, steps: int, device: str,
              base_dir: str, prompts: str, steps_out, seed: int = 0, threads: int = 1) -> "WorkerSpec":
        """One worker outside any cell (a benchmark, a check): a one-worker fixed-step run that starts at once."""
        cell = Cell(CONCURRENCY, rank, batch_size, lr, 1)
        spec = CellSpec(cell=cell, training=training, mode=FIXED_STEPS, steps=steps, device=device, mps=None,
                        base_dir=str(base_dir), prompts=str(prompts))
        return cls(spec, seed=seed, threads=threads, steps_out=str(steps_out))

    def to_dict(self) -> dict:
        """The JSON a worker process reads (``python -m lorasweep worker``)."""
        out = {**self.cell_spec.to_dict(), "seed": self.seed, "threads": self.threads, "steps_out": str(self.steps_out)}
        if self.barrier is not None:
            out["barrier"] = self.barrier.to_dict()
        if self.fault is not None:
            out["fault"] = dict(self.fault)
        return out


@dataclass(frozen=True)
class FusedRun:
    seed: int
    lr: float
    steps_out: str


@dataclass(frozen=True)
class FusedSpec:
    """One process training several runs as one pack (``python -m lorasweep fused``)."""

    cell_spec: CellSpec
    runs: tuple  # FusedRun, one per seed
    threads: int
    barrier: Optional[Barrier] = None
    fault: Optional[dict] = None

    def __post_init__(self):
        object.__setattr__(self, "runs", tuple(self.runs))
        if not self.runs or not all(isinstance(run, FusedRun) for run in self.runs):
            raise LorasweepError(f"cell {self.cell_spec.cell_id}: a fused pack needs at least one FusedRun")
        if not _positive_int(self.threads):
            raise LorasweepError(f"cell {self.cell_spec.cell_id}: threads must be a positive integer, "
                                 f"not {self.threads!r}")

    @classmethod
    def of_cell(cls, cell_spec: CellSpec, steps_out, threads: int, barrier: Optional[Barrier] = None,
                seeds=None) -> "FusedSpec":
        """A pack of a cell: one run per seed (default every seed of the cell) at the cell's lr;
        ``steps_out(seed)`` names its records."""
        seeds = cell_spec.seeds if seeds is None else list(seeds)
        unknown = sorted(set(seeds) - set(cell_spec.seeds))
        if unknown:
            raise LorasweepError(f"cell {cell_spec.cell_id}: seeds {unknown} are not the cell's")
        return cls(cell_spec, tuple(FusedRun(seed, cell_spec.cell.lr, str(steps_out(seed))) for seed in seeds),
                   threads, barrier)

    def to_dict(self) -> dict:
        out = {**self.cell_spec.to_dict(), "runs": [dataclasses.asdict(run) for run in self.runs],
               "threads": self.threads}
        if self.barrier is not None:
            out["barrier"] = self.barrier.to_dict()
        if self.fault is not None:
            out["fault"] = dict(self.fault)
        return out


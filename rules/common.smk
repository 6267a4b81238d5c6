# Planning helpers: the resolved config, the cells, the base, code hashes.
import json
import sys
from pathlib import Path

# lorasweep is imported from the folder of the Snakefile: Snakemake puts that folder
# first on sys.path, ahead of the installed (editable) package, so a copy of the
# workflow plans with its own code.
from snakemake.exceptions import WorkflowError
from lorasweep.base import hub
from lorasweep.training import base_samples
from lorasweep.study import codehash, engine, grid
from lorasweep.study.cellspec import CellSpec
from lorasweep.study.config import config_hash, require_gpu_here, resolve, study_record
from lorasweep.errors import LorasweepError

# The interpreter running Snakemake (the project's venv) runs every stage. Deliberately
# not a job parameter, since moving the venv must not count as a change of every job.
PY = sys.executable


def stop_on_user_error(error: LorasweepError):
    """A user error: one message, no traceback, before any job starts."""
    print(f"lorasweep: error: {error}", file=sys.stderr)
    sys.exit(1)


def base_model_config():
    """The base's own config.json: what the engine is chosen by (lorasweep.study.engine)."""
    if BASE_SOURCE == "embedded":
        return engine.embedded_config(STUDY["model"])
    if BASE_SOURCE == "local":
        with open(f"{STUDY['base']['model_path']}/config.json", encoding="utf-8") as handle:
            return json.load(handle)
    return hub.model_config(STUDY["base"]["hub_model"])


def base_label():
    return {"embedded": "the embedded stand-in", "local": STUDY["base"].get("model_path")}.get(
        BASE_SOURCE, STUDY["base"]["hub_model"])


try:
    STUDY = resolve(config, workflow.config_settings.overwrite_config)
    # the probe's reason (worded by the network stack, timed) is no job parameter: it
    # varies between two runs of the same study, and would rerun it
    BASE_SOURCE, _ = hub.resolve_source(
        STUDY["base"]["source"], STUDY["base"]["hub_model"], STUDY["base"]["hub_timeout_s"]
    )
    # which engine trains this base: decided here from its own config, so that a dry run shows it;
    # the resolved choice replaces "auto" in the study, so every cell's spec carries it
    ENGINE, ENGINE_REASON = engine.choose(
        STUDY["training"]["engine"], base_model_config(),
        STUDY["base"]["prompt_tokens"] + STUDY["training"]["max_new_tokens"], base_label(),
    )
    STUDY["training"]["engine"] = ENGINE
    engine.check_engine_settings(STUDY, ENGINE, ENGINE_REASON)
except LorasweepError as error:
    stop_on_user_error(error)


# Planning a GPU study needs no GPU (a dry run, a cluster's login node); running its jobs
# here does. onstart runs once the executor is known, before the first job, never in a dry run.
onstart:
    if workflow.local_exec:
        try:
            require_gpu_here(STUDY)
        except LorasweepError as error:
            stop_on_user_error(error)


CELLS = {cell.path: cell for cell in grid.plan(STUDY)}
CODE = codehash.stage_hashes()
BASE_DIR = f"results/base/{BASE_SOURCE}/model"
ON_GPU = STUDY["resolved"]["device"] == "cuda"


def cells_of(experiment):
    return [cell for cell in CELLS.values() if cell.experiment == experiment]


# ---- a sequential study (lr_scaling.n: {initial, block, max}; rules/sequential.smk) ----
SEQUENTIAL = grid.is_sequential(STUDY["lr_scaling"]) if STUDY["lr_scaling"]["enabled"] else False
ROUNDS = grid.rounds(STUDY["lr_scaling"]) if SEQUENTIAL else 0


def round_file(round_):
    return f"results/sequential/round{round_}.json"


def active_lr_cells(up_to_round=None):
    """The lr-scaling jobs of rounds 0 .. ``up_to_round``: every cell's first block, then the blocks that
    each round's decision (a checkpoint) granted. A fixed study's cells, as planned."""
    cells = [c for c in cells_of(grid.LR_SCALING) if c.block in (None, 0)]
    for round_ in range(1, (ROUNDS if up_to_round is None else up_to_round) + 1):
        with open(checkpoints.sequential_round.get(round=round_).output[0], encoding="utf-8") as handle:
            granted = set(json.load(handle)["continue"])
        cells += [c for c in cells_of(grid.LR_SCALING)
                  if c.block == round_ and sequential_label(c) in granted]
    return cells


def sequential_label(cell):
    return grid.cell_label(cell.rank, cell.batch_size, cell.lr, cell.control)


def cell_dir(cell):
    return f"results/cells/{cell.path}"


PROMPTS = "results/base/prompts.jsonl"


def cell_spec(wildcards):
    """Everything that decides a cell's result (lorasweep.study.cellspec.CellSpec); a change here reruns that cell only."""
    path = f"{wildcards.experiment}/{wildcards.cell}"
    if path not in CELLS:
        raise WorkflowError(f"cell {path} is not in the plan of this config")
    return CellSpec.for_cell(STUDY, CELLS[path], BASE_DIR, PROMPTS)


# what decides the prompts; how long the hub probe may wait decides nothing
PROMPT_KEYS = ("prompt_tokens", "num_prompts", "hub_dataset", "dataset_column", "corpus_stories", "corpus_seed")


def prompts_spec():
    spec = {"source": BASE_SOURCE, **{key: STUDY["base"][key] for key in PROMPT_KEYS}}
    if STUDY["base"].get("prompts_path"):  # the file itself is the rule's input: editing it remakes the prompts
        spec["prompts_path"] = STUDY["base"]["prompts_path"]
    return spec


def prompts_from_stories():
    """Stories come from the embedded corpus unless the hub gives them or a prompts file replaces them."""
    return not STUDY["base"].get("prompts_path") and BASE_SOURCE != "hub"


def base_info_spec():
    """The base record's settings; the probe's words are the job's own (docs/design.md §6)."""
    base = STUDY["base"]
    spec = {"source": BASE_SOURCE, "base_source_setting": base["source"], "hub_model": base["hub_model"],
            "hub_timeout_s": base["hub_timeout_s"], "engine": ENGINE, "engine_reason": ENGINE_REASON}
    if BASE_SOURCE == "local":
        spec["model_path"] = base["model_path"]
    return spec


def plot_names():
    names = []
    if cells_of(grid.LR_SCALING):
        names += ["steps_vs_batch", "wall_per_cell", "noise_scale"]
    if cells_of(grid.CONCURRENCY):
        names += ["concurrency"]
    return names


def final_outputs():
    outputs = ["results/base/base.json", "results/study/config.json"]
    if cells_of(grid.LR_SCALING):
        ranks = STUDY["lr_scaling"]["ranks"]
        outputs += expand("results/tables/lr_scaling_rank{rank}.{ext}", rank=ranks, ext=["md", "csv"])
        outputs += ["results/tables/lr_scaling.md", "results/tables/samples.md"]
    if cells_of(grid.CONCURRENCY):
        outputs += ["results/tables/concurrency.md"]
    if CELLS:
        outputs += ["results/tables/recommendations.md"]
    return outputs


# ---- study record and archive (rules/archive.smk) ----
PROVENANCE = "results/study/provenance.json"
# the commit of the workflow's code is recorded wherever the jobs run; kept out of
# params so that moving the checkout does not count as a change
CHECKOUT = workflow.basedir
ARCHIVE = f"results/archive/lorasweep-{config_hash(STUDY)}.tar.gz"

# what the archive holds, relative to results/; globs may match nothing (plots and the
# report exist only when their rules do), plain paths must exist
ARCHIVE_INCLUDE = [
    "tables",
    "plots/*",
    "report*",
    "cells/*/*/summary.json",
    "cells/*/*/steps/*.jsonl",
    "cells/*/*/steps/samples_seed*.json",
    "sequential/*",
    "logs",
    "benchmarks/*",
    "study/config.json",
    "study/provenance.json",
    "base/base.json",
]
# the archive job's own log is still being written while it archives
ARCHIVE_EXCLUDE = ["logs/archive"]


def study_outputs(wildcards=None):
    """Every result the study produces, less the two files made from them here."""
    cells = [cell_dir(c) for c in active_lr_cells() + cells_of(grid.CONCURRENCY)]
    rounds = [round_file(r) for r in range(1, ROUNDS + 1)]
    return final_outputs() + rounds + [f"{d}/summary.json" for d in cells] + [f"{d}/steps" for d in cells]

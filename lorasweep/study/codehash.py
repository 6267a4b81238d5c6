"""Content hashes of the package modules each workflow stage runs.

The rules pass these hashes as ``params``, so Snakemake reruns a stage when the
code it depends on changes in content, and not when a file is merely touched.
"""

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # lorasweep/, above the stage subpackages

# which modules each stage executes; the union of what its entry points import
STAGE_MODULES = {
    "base": ["corpus", "tokenizer", "base_model", "hub", "prompts", "base_info", "hardware", "atomic"],
    "cells": ["worker", "fused", "run", "faults", "engines", "engine", "generic", "decoder", "sampler", "static_decode",
              "grpo", "rewards", "stopping", "noise_scale",
              "metrics", "inference", "degeneracy", "cell", "cellspec", "mps", "supervise", "grid", "prompts",
              "hardware", "atomic", "formatting", "tokenizer"],
    # the untrained base sampled by the worker's own sampling code
    "base_samples": ["base_samples", "run", "engines", "engine", "generic", "grpo", "decoder", "sampler",
                     "static_decode", "degeneracy", "prompts", "atomic", "tokenizer"],
    "aggregate": ["aggregate", "report", "tables", "metrics", "stopping", "inference", "noise_scale", "sequential", "degeneracy", "grid",
                  "throughput", "recommend", "plots", "atomic", "formatting"],
    "provenance": ["provenance", "hardware", "config", "atomic"],
    "archive": ["archive", "atomic"],
}
# the modules the stages' commands (python -m lorasweep <command>) run first; a test
# checks that STAGE_MODULES covers everything they import
STAGE_ENTRIES = {
    "base": ["corpus", "tokenizer", "base_model", "hub", "base_info"],
    "cells": ["cell", "worker", "fused"],
    "base_samples": ["base_samples"],
    "aggregate": ["aggregate", "report"],
    "provenance": ["provenance"],
    "archive": ["archive"],
}
# imported by stages without shaping what they write: the error type, the config
# checks (config, and rewards for its names) whose outcome the rules pass as params,
# the launcher's progress lines (they go to the log only), and its reading of a failed
# worker's log (it shapes the error message of a cell that writes nothing)
NOT_HASHED = frozenset({"errors", "config", "rewards", "progress", "worker_log"})


def module_paths() -> dict:
    """Module name -> its file, whichever stage subpackage holds it (names are unique in the package)."""
    paths = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem != "__init__":
            assert path.stem not in paths, f"two modules named {path.stem}: {paths[path.stem]} and {path}"
            paths[path.stem] = path
    return paths


def module_hash(modules) -> str:
    digest = hashlib.sha256()
    paths = module_paths()
    for name in sorted(set(modules)):
        path = paths.get(name, PACKAGE / f"{name}.py")
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def stage_hashes() -> dict:
    return {stage: module_hash(modules) for stage, modules in STAGE_MODULES.items()}

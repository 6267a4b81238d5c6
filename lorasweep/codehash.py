"""Content hashes of the package modules each workflow stage runs.

The rules pass these hashes as ``params``, so Snakemake reruns a stage when the
code it depends on changes in content, and not when a file is merely touched.
"""

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# which modules each stage executes; the union of what its entry point imports
STAGE_MODULES = {
    "base": ["corpus", "tokenizer", "base_model", "hub", "prompts", "base_info", "atomic"],
    "cells": ["worker", "sampler", "grpo", "rewards", "metrics", "cell", "mps", "grid", "prompts", "atomic"],
    "aggregate": ["aggregate", "tables", "metrics", "grid", "throughput", "recommend", "plots", "atomic"],
    "provenance": ["provenance", "hardware", "config", "atomic"],
    "archive": ["archive", "atomic"],
}


def module_hash(modules) -> str:
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        path = PACKAGE / f"{name}.py"
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def stage_hashes() -> dict:
    return {stage: module_hash(modules) for stage, modules in STAGE_MODULES.items()}

# Provenance of the study, and one deterministic archive of its results.

from lorasweep.config import config_hash

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
    cells = [cell_dir(c) for c in CELLS.values()]
    produced = [f for f in final_outputs() if f not in (PROVENANCE, ARCHIVE)]
    return produced + [f"{d}/summary.json" for d in cells] + [f"{d}/steps" for d in cells]


rule provenance:
    # depends on every result, so that it is re-recorded (commit, packages, device)
    # whenever any of them is remade
    input:
        results=study_outputs,
        config="results/study/config.json",
        base_info="results/base/base.json",
    output:
        PROVENANCE,
    log:
        "results/logs/study/provenance.log",
    params:
        code=CODE["provenance"],
    shell:
        "{PY} -m lorasweep provenance --config {input.config} --base-info {input.base_info}"
        " --workdir {CHECKOUT:q} --out {output} > {log} 2>&1"


rule archive:
    input:
        results=study_outputs,
        config="results/study/config.json",
        provenance=PROVENANCE,
        base_info="results/base/base.json",
    output:
        ARCHIVE,
    log:
        "results/logs/archive/archive.log",
    params:
        include=ARCHIVE_INCLUDE,
        exclude=ARCHIVE_EXCLUDE,
        code=CODE["archive"],
    shell:
        "{PY} -m lorasweep archive --results-dir results --out {output}"
        " --include {params.include:q} --exclude {params.exclude:q} > {log} 2>&1"

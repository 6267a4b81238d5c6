# Provenance of the study, and one deterministic archive of its results.

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

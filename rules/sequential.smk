# A sequential study (lr_scaling.n: {initial, block, max}): after each round of seed blocks, a
# checkpoint reads the verdicts so far and grants one more block only to the cells of claims
# still open (lorasweep/analysis/sequential.py). A fixed study has no round and never runs it.


checkpoint sequential_round:
    wildcard_constraints:
        round=r"\d+",
    input:
        summaries=lambda wildcards: [f"{cell_dir(c)}/summary.json" for c in active_lr_cells(int(wildcards.round) - 1)],
        previous=lambda wildcards: [round_file(int(wildcards.round) - 1)] if int(wildcards.round) > 1 else [],
        config="results/study/config.json",
    output:
        "results/sequential/round{round}.json",
    log:
        "results/logs/sequential/round{round}.log",
    params:
        cells=lambda wildcards, input: [str(Path(p).parent) for p in input.summaries],
        previous=lambda wildcards, input: f"--previous {input.previous}" if input.previous else "",
        code=CODE["aggregate"],
    shell:
        "{PY} -m lorasweep sequential-round --config {input.config} --round {wildcards.round} {params.previous}"
        " --cells {params.cells} --out {output} > {log} 2>&1"

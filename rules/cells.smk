# One job per cell: n workers of one (rank, bs, lr) at once, or one process training the
# n as a fused pack (cell ids ending in _fused). A cell owns the device while it runs
# (gpu=1 on a GPU, all cores on a CPU), so cells never disturb each other's step times.

# everything but the base pretraining and the cells runs where Snakemake runs, also on a
# cluster: these are cheap, and the hub, prompts and base_info steps may need the login node's network
localrules:
    corpus,
    tokenizer,
    hub_base,
    local_base,
    prompts,
    base_info,
    study_config,
    lr_scaling_tables,
    concurrency_tables,
    recommendations,
    sequential_round,
    provenance,
    archive,


rule cell:
    wildcard_constraints:
        experiment="lr_scaling|concurrency",
        cell=r"r\d+_bs\d+_lr[0-9.e+-]+_n\d+(_fused)?(_b\d+)?",
    input:
        model=BASE_DIR,
        prompts="results/base/prompts.jsonl",
    output:
        summary="results/cells/{experiment}/{cell}/summary.json",
        steps=directory("results/cells/{experiment}/{cell}/steps"),
    log:
        "results/logs/cells/{experiment}/{cell}/launcher.log",
    benchmark:
        "results/benchmarks/cells/{experiment}/{cell}/launcher.tsv"
    threads: workflow.cores
    resources:
        gpu=1 if ON_GPU else 0,
    params:
        spec=lambda wildcards: cell_spec(wildcards).to_json(),
        log_dir=lambda wildcards: f"results/logs/cells/{wildcards.experiment}/{wildcards.cell}",
        code=CODE["cells"],
    shell:
        "{PY} -m lorasweep cell --spec {params.spec:q} --steps-dir {output.steps} --summary {output.summary}"
        " --log-dir {params.log_dir} --cores {threads} > {log} 2>&1"

# Tables from the recorded per-step data of every cell.


rule study_config:
    # the resolved config (scale preset and overrides applied), as the tables and archive see it
    output:
        "results/study/config.json",
    log:
        "results/logs/aggregate/study_config.log",
    params:
        study=STUDY,
    run:
        from lorasweep.atomic import write_json

        write_json(output[0], params.study)
        with open(log[0], "w") as handle:
            handle.write(f"wrote {output[0]} (scale {params.study['scale']})\n")


rule lr_scaling_tables:
    input:
        summaries=[f"{cell_dir(c)}/summary.json" for c in cells_of(grid.LR_SCALING)],
        steps=[f"{cell_dir(c)}/steps" for c in cells_of(grid.LR_SCALING)],
        base_info="results/base/base.json",
        config="results/study/config.json",
    output:
        expand("results/tables/lr_scaling_rank{rank}.{ext}", rank=STUDY["lr_scaling"]["ranks"], ext=["md", "csv"]),
        "results/tables/lr_scaling.md",
        "results/tables/lr_scaling.csv",
    log:
        "results/logs/aggregate/lr_scaling_tables.log",
    params:
        cells=[cell_dir(c) for c in cells_of(grid.LR_SCALING)],
        code=CODE["aggregate"],
    shell:
        "{PY} -m lorasweep aggregate --config {input.config} --base-info {input.base_info}"
        " --cells {params.cells} --out-dir results/tables > {log} 2>&1"

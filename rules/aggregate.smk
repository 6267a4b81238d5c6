# Tables from the recorded per-step data of every cell, then recommendations and plots.


rule study_config:
    # the resolved config (scale preset and overrides applied), as the tables and archive see it
    output:
        "results/study/config.json",
    log:
        "results/logs/aggregate/study_config.log",
    params:
        study=json.dumps(study_record(STUDY), sort_keys=True),
    shell:
        "{PY} -m lorasweep study-config --study {params.study:q} --out {output} > {log} 2>&1"


rule lr_scaling_tables:
    input:
        summaries=lambda wildcards: [f"{cell_dir(c)}/summary.json" for c in active_lr_cells()],
        steps=lambda wildcards: [f"{cell_dir(c)}/steps" for c in active_lr_cells()],
        sequential=[round_file(ROUNDS)] if SEQUENTIAL else [],
        base_info="results/base/base.json",
        base_samples="results/base/samples.json",
        config="results/study/config.json",
    output:
        expand("results/tables/lr_scaling_rank{rank}.{ext}", rank=STUDY["lr_scaling"]["ranks"], ext=["md", "csv"]),
        report("results/tables/lr_scaling.md", caption="../report/lr_scaling.rst", category="Tables"),
        "results/tables/lr_scaling.csv",
        "results/tables/noise_scale.csv",
        report("results/tables/samples.md", caption="../report/samples.rst", category="Tables"),
        ["results/tables/sequential.json"] if SEQUENTIAL else [],
    log:
        "results/logs/aggregate/lr_scaling_tables.log",
    params:
        cells=lambda wildcards, input: [str(Path(p).parent) for p in input.summaries],
        sequential=lambda wildcards, input: f"--sequential {input.sequential}" if input.sequential else "",
        code=CODE["aggregate"],
    shell:
        "{PY} -m lorasweep aggregate --experiment lr_scaling --config {input.config} --base-info {input.base_info}"
        " --base-samples {input.base_samples} --cells {params.cells} {params.sequential} --out-dir results/tables"
        " > {log} 2>&1"


rule concurrency_tables:
    input:
        summaries=[f"{cell_dir(c)}/summary.json" for c in cells_of(grid.CONCURRENCY)],
        steps=[f"{cell_dir(c)}/steps" for c in cells_of(grid.CONCURRENCY)],
        base_info="results/base/base.json",
        config="results/study/config.json",
    output:
        report("results/tables/concurrency.md", caption="../report/concurrency.rst", category="Tables"),
        "results/tables/concurrency.csv",
    log:
        "results/logs/aggregate/concurrency_tables.log",
    params:
        cells=[cell_dir(c) for c in cells_of(grid.CONCURRENCY)],
        code=CODE["aggregate"],
    shell:
        "{PY} -m lorasweep aggregate --experiment concurrency --config {input.config} --base-info {input.base_info}"
        " --cells {params.cells} --out-dir results/tables > {log} 2>&1"


rule recommendations:
    input:
        lr=["results/tables/lr_scaling.csv"] if cells_of(grid.LR_SCALING) else [],
        noise=["results/tables/noise_scale.csv"] if cells_of(grid.LR_SCALING) else [],
        sequential=["results/tables/sequential.json"] if SEQUENTIAL else [],
        concurrency=["results/tables/concurrency.csv"] if cells_of(grid.CONCURRENCY) else [],
        base_info="results/base/base.json",
        config="results/study/config.json",
    output:
        recommendations=report("results/tables/recommendations.md", caption="../report/recommendations.rst", category="Recommendations"),
        # the report's first page (report/workflow.rst embeds it): verdicts, speedup tables, steps vs batch size
        front=report("results/tables/front.html", caption="../report/front.rst", category="Answer"),
        plots=[report(f"results/plots/{name}.png", caption=f"../report/plot_{name}.rst", category="Plots") for name in plot_names()],
    log:
        "results/logs/aggregate/recommendations.log",
    params:
        lr=lambda wildcards, input: f"--lr-table {input.lr}" if input.lr else "",
        noise=lambda wildcards, input: f"--noise-table {input.noise}" if input.noise else "",
        sequential=lambda wildcards, input: f"--sequential {input.sequential}" if input.sequential else "",
        concurrency=lambda wildcards, input: f"--concurrency-table {input.concurrency}" if input.concurrency else "",
        code=CODE["aggregate"],
    shell:
        "{PY} -m lorasweep recommend {params.lr} {params.noise} {params.sequential} {params.concurrency}"
        " --base-info {input.base_info}"
        " --out {output.recommendations} --plots-dir results/plots --front {output.front}"
        " --study-config {input.config} > {log} 2>&1"

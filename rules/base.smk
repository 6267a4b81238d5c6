# The base: the real model and prompts from the hub, or the embedded stand-in built here.

BASE = STUDY["base"]


rule corpus:
    output:
        "results/base/embedded/corpus.txt",
    log:
        "results/logs/base/corpus.log",
    params:
        stories=BASE["corpus_stories"],
        seed=BASE["corpus_seed"],
        code=CODE["base"],
    shell:
        "{PY} -m lorasweep corpus --out {output} --stories {params.stories} --seed {params.seed} > {log} 2>&1"


rule tokenizer:
    input:
        "results/base/embedded/corpus.txt",
    output:
        directory("results/base/embedded/tokenizer"),
    log:
        "results/logs/base/tokenizer.log",
    params:
        vocab_size=BASE["vocab_size"],
        code=CODE["base"],
    shell:
        "{PY} -m lorasweep tokenizer --corpus {input} --vocab-size {params.vocab_size} --out {output} > {log} 2>&1"


rule pretrain:
    input:
        corpus="results/base/embedded/corpus.txt",
        tokenizer="results/base/embedded/tokenizer",
    output:
        directory("results/base/embedded/model"),
    log:
        "results/logs/base/pretrain.log",
    benchmark:
        "results/benchmarks/base/pretrain.tsv"
    threads: workflow.cores
    params:
        model=json.dumps(STUDY["model"]),
        settings=BASE["pretrain"],
        code=CODE["base"],
    shell:
        "{PY} -m lorasweep pretrain --corpus {input.corpus} --tokenizer {input.tokenizer} --out {output}"
        " --model {params.model:q} --steps {params.settings[steps]} --batch-size {params.settings[batch_size]}"
        " --seq-len {params.settings[seq_len]} --lr {params.settings[lr]} --seed {params.settings[seed]}"
        " --threads {threads} > {log} 2>&1"


rule hub_base:
    output:
        directory("results/base/hub/model"),
    log:
        "results/logs/base/hub_base.log",
    params:
        model_id=BASE["hub_model"],
        code=CODE["base"],
    shell:
        "{PY} -m lorasweep hub-base --model-id {params.model_id} --out {output} > {log} 2>&1"


rule local_base:
    # a model folder of the user's, copied into the results: the archive and the weights hash then
    # describe the base that was trained on, whatever happens to the folder later
    input:
        BASE["model_path"] or [],
    output:
        directory("results/base/local/model"),
    log:
        "results/logs/base/local_base.log",
    params:
        code=CODE["base"],
    shell:
        "{PY} -m lorasweep local-base --model-path {input:q} --out {output} > {log} 2>&1"


rule prompts:
    # the prompts feed every cell: only what decides them is a parameter here
    input:
        model=BASE_DIR,
        corpus=["results/base/embedded/corpus.txt"] if prompts_from_stories() else [],
        prompts_file=[BASE["prompts_path"]] if BASE.get("prompts_path") else [],
    output:
        "results/base/prompts.jsonl",
    log:
        "results/logs/base/prompts.log",
    params:
        spec=json.dumps(prompts_spec(), sort_keys=True),
        corpus=lambda wildcards, input: f"--corpus {input.corpus}" if input.corpus else "",
        prompts_file=lambda wildcards, input: f"--prompts-file {input.prompts_file}" if input.prompts_file else "",
        code=CODE["base"],
    shell:
        "{PY} -m lorasweep prompts --spec {params.spec:q} --model-dir {input.model} {params.corpus}"
        " {params.prompts_file} --out {output} > {log} 2>&1"


rule base_info:
    # the record the tables show; it probes the hub itself for the words of its reason,
    # which vary from run to run and so are no parameter (docs/design.md §6)
    input:
        model=BASE_DIR,
        prompts="results/base/prompts.jsonl",
    output:
        "results/base/base.json",
    log:
        "results/logs/base/base_info.log",
    params:
        spec=json.dumps(base_info_spec(), sort_keys=True),
        code=CODE["base"],
    shell:
        "{PY} -m lorasweep base-info --spec {params.spec:q} --model-dir {input.model} --prompts {input.prompts}"
        " --info-out {output} > {log} 2>&1"


rule base_samples:
    # the untrained base sampled as every run is sampled when it ends: the reference the
    # degeneracy measures are read against (results/tables/samples.md)
    input:
        model=BASE_DIR,
        prompts="results/base/prompts.jsonl",
    output:
        "results/base/samples.json",
    log:
        "results/logs/base/base_samples.log",
    params:
        spec=json.dumps(base_samples.sampling_spec(STUDY["training"]), sort_keys=True),
        code=CODE["base_samples"],
    shell:
        "{PY} -m lorasweep base-samples --spec {params.spec:q} --model-dir {input.model} --prompts {input.prompts}"
        " --out {output} > {log} 2>&1"

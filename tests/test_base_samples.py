"""The untrained base's held-out samples: drawn exactly as a worker draws its own."""

import json

import torch

from lorasweep.training import base_samples

from lorasweep.training import degeneracy, run
from lorasweep.training.engines import FastEngine


def test_the_base_reference_is_what_an_untrained_policy_samples(tiny_study):
    """A fresh LoRA adapter changes nothing (its B is zero), so a worker sampling before its
    first step must draw the very texts of results/base/samples.json, seed for seed."""
    base = tiny_study / "results/base"
    record = json.loads((base / "samples.json").read_text())
    t = json.loads((tiny_study / "results/study/config.json").read_text())["training"]
    assert len(record["samples"]) == t["degeneracy"]["samples"]
    measures = degeneracy.measure([s["completion"] for s in record["samples"]])
    assert {key: record[key] for key in measures if key != "samples"} == {
        key: value for key, value in measures.items() if key != "samples"}

    torch.set_num_threads(1)
    task = run.load_task({"training": t, "base_dir": str(base / "embedded/model"),
                             "prompts": str(base / "prompts.jsonl")}, "cpu")
    torch.manual_seed(3)
    policy = run.load_policy(base / "embedded/model", 4, t["lora_targets"], "cpu")
    engine = FastEngine(policy)
    drawn = run.held_out_texts(engine, engine.frozen_weights(), task.held_out, task.tokenizer, t, "cpu")
    assert drawn == record["samples"]


def test_only_the_sampling_settings_decide_the_reference():
    training = {"max_new_tokens": 32, "temperature": 1.0, "repetition_penalty": 1.1, "target": 0.75,
                "degeneracy": {"samples": 20, "max_distinct_flag": 7, "min_jaccard_flag": 0.18}}
    spec = base_samples.sampling_spec(training)
    assert spec == {"max_new_tokens": 32, "temperature": 1.0, "repetition_penalty": 1.1, "held_out": 20}
    # the flag thresholds and the target are read at aggregation: changing them resamples nothing
    assert base_samples.sampling_spec({**training, "target": 0.5, "degeneracy": {
        "samples": 20, "max_distinct_flag": 3, "min_jaccard_flag": 0.3}}) == spec

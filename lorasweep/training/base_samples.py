"""The untrained base's held-out samples: what the degeneracy measures read before training.

A run's samples are judged by fixed thresholds (``training.degeneracy``, taken
from the study's reading of the real model). Whether those thresholds mean the
same on another base is a question the base itself answers: sampled exactly as
a worker samples when its run ends (same held-out prompts, same seed, same
temperature, penalty and length, no adapter), its measures are the reference row
of ``results/tables/samples.md`` and are quoted under each lr-scaling table.
A base that the rule would already flag makes every flag of its runs meaningless;
that is said there too (docs/design.md §2).
"""

import json

from .. import atomic
from . import degeneracy

# what decides the base's samples: the sampling settings, the engine that samples and how many prompts are held out
SAMPLING_KEYS = ("max_new_tokens", "temperature", "repetition_penalty", "engine")


def sampling_spec(training: dict) -> dict:
    """The part of ``training`` that decides the samples (the workflow passes it as the job's parameter)."""
    return {**{key: training[key] for key in SAMPLING_KEYS if key in training},
            "held_out": training["degeneracy"]["samples"]}


def sample_base(model_dir, prompts_path, spec: dict) -> dict:
    """The base's samples of the held-out prompts and their measures, as a worker records its own."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..base.prompts import read_prompts
    from .engines import engine_for
    from .run import held_out_texts, split_prompts

    torch.set_num_threads(1)  # as a CPU worker samples: one thread, so the draws match theirs
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    _, held_out = split_prompts(torch.tensor(read_prompts(prompts_path)), spec["held_out"])
    with torch.no_grad():
        engine = engine_for(spec.get("engine"), model)
        texts = held_out_texts(engine, engine.frozen_weights(), held_out, tokenizer, spec, "cpu")
    return {"step": 0, **degeneracy.measure([s["completion"] for s in texts]), "samples": texts}


def main(args) -> int:
    record = sample_base(args.model_dir, args.prompts, json.loads(args.spec))
    atomic.write_json(args.out, record)
    print(f"the untrained base on {record['samples']} held-out prompts: {record['distinct_first']} first sentences "
          f"distinct, mean Jaccard {record['jaccard']:.3f}, distinct-2 {record['distinct_2']:.3f}; wrote {args.out}")
    return 0

"""Prompts for the study, and the record of which base model and prompts it used.

Two jobs, two outputs, so that the record can change without the prompts:
``prompts.jsonl`` feeds every cell, and is rewritten only when what decides the
prompts changes (source, dataset, prompt length and count); ``base.json`` is read
by every table header, so that a reader always sees whether the numbers come
from the real SimpleStories model or from the embedded stand-in, and why.
Why the source was chosen (the hub probe's answer, worded by the network stack
and timed) is probed by the ``base.json`` job itself, never handed in as a rule
parameter: such text varies from run to run and would rerun the study
(docs/design.md §6).
"""

import hashlib
import json
from pathlib import Path

from .. import atomic
from .. import hardware
from . import hub
from ..errors import LorasweepError
from .prompts import read_prompts_meta

EMBEDDED_LABEL = "embedded stand-in (SimpleStories-1.25M architecture, pretrained here)"


def weights_sha256(model_dir) -> str:
    """SHA-256 over the model's weight files, in name order."""
    digest = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    if not files:
        raise LorasweepError(f"no weight files (*.safetensors, *.bin) in {model_dir}")
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prompts_main(args):
    """Build the prompt bank from the hub's stories or the embedded corpus."""
    from transformers import AutoTokenizer

    from . import prompts

    spec = json.loads(args.spec)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    if spec.get("prompts_path"):
        stories = prompts.read_prompts_file(spec["prompts_path"])
        prompt_source = f"prompts file {spec['prompts_path']}"
    elif spec["source"] == "hub":
        stories = hub.hub_stories(spec["hub_dataset"], spec["dataset_column"], limit=None)
        prompt_source = f"{spec['hub_dataset']} (column {spec['dataset_column']})"
    else:
        from .corpus import read_corpus

        stories = read_corpus(args.corpus)
        prompt_source = f"embedded story corpus ({spec['corpus_stories']} stories, seed {spec['corpus_seed']})"
    bank = prompts.build_prompts(stories, tokenizer, spec["prompt_tokens"], spec["num_prompts"])
    label = f"{prompt_source}, first {spec['prompt_tokens']} tokens, {len(bank)} unique"
    prompts.write_prompts(args.out, bank, {"source": label, "count": len(bank)})
    print(label)


def source_reason(spec: dict) -> str:
    """Why ``spec["source"]`` is the base: a probe made now, in the words of this run.

    The planner chose the source with the same probe; should the hub's state
    have changed since, the record says both.
    """
    if spec["base_source_setting"] in ("embedded", "local"):
        return f"base.source is {spec['base_source_setting']}"
    try:
        now, reason = hub.resolve_source(spec["base_source_setting"], spec["hub_model"], spec["hub_timeout_s"])
    except LorasweepError as error:  # base.source: hub, and the hub has gone since planning
        now, reason = "unavailable", str(error)
    if now != spec["source"]:
        return f"{spec['source']} when the study was planned; a probe at recording time: {reason}"
    return reason


def model_label(spec: dict) -> str:
    """How the tables name the base: the hub id, the local folder, or the embedded stand-in."""
    if spec["source"] == "hub":
        return spec["hub_model"]
    if spec["source"] == "local":
        return f"local model {spec['model_path']}"
    return EMBEDDED_LABEL


def _model_type(model_dir) -> str:
    config = Path(model_dir) / "config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("model_type", "?") if config.exists() else "?"


def local_main(args):
    """Copy a local model folder (model and tokenizer) into the results, checking that it loads as a causal LM."""
    import shutil

    from transformers import AutoConfig, AutoTokenizer

    source = Path(args.model_path)
    try:
        config = AutoConfig.from_pretrained(source)
        AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise LorasweepError(f"base.model_path {source}: not a model folder with its tokenizer ({error})") from None
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    print(f"copied {source} ({config.model_type}) into {out}")


def info_main(args):
    """Write ``base.json``: model, weights hash, prompts and why this source."""
    from transformers import AutoTokenizer

    spec = json.loads(args.spec)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    meta = read_prompts_meta(args.prompts)
    reason = source_reason(spec)
    info = {
        "source": spec["source"],
        "source_reason": reason,
        "model_label": model_label(spec),
        "model_type": _model_type(args.model_dir),
        # which engine trains it, and why (lorasweep.study.engine, decided when the study was planned)
        "engine": spec.get("engine", "fast"),
        "engine_reason": spec.get("engine_reason", ""),
        "model_dir": args.model_dir,
        "weights_sha256": weights_sha256(args.model_dir),
        "tokenizer_size": len(tokenizer),
        "prompt_source": meta["source"],
        "num_prompts": meta["count"],
        "cpu": hardware.cpu_model(),
    }
    pretrain_record = Path(args.model_dir) / "pretrain.json"
    if pretrain_record.exists():
        info["pretrain"] = json.loads(pretrain_record.read_text(encoding="utf-8"))
    atomic.write_json(args.info_out, info)
    print(f"{info['model_label']}; {info['prompt_source']}; source: {reason}")

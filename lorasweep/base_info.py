"""Prompts for the study, and the record of which base model and prompts it used.

``base.json`` is read by every table header: a reader always sees whether the
numbers come from the real SimpleStories model or from the embedded stand-in.
"""

import hashlib
import json
from pathlib import Path

from . import atomic, hardware
from .errors import LorasweepError


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


def main(args):
    from transformers import AutoTokenizer

    from . import prompts

    spec = json.loads(args.spec)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    if spec["source"] == "hub":
        from .hub import hub_stories

        stories = hub_stories(spec["hub_dataset"], spec["dataset_column"], limit=None)
        prompt_source = f"{spec['hub_dataset']} (column {spec['dataset_column']})"
        model_label = spec["hub_model"]
    else:
        from .corpus import read_corpus

        stories = read_corpus(args.corpus)
        prompt_source = f"embedded story corpus ({spec['corpus_stories']} stories, seed {spec['corpus_seed']})"
        model_label = "embedded stand-in (SimpleStories-1.25M architecture, pretrained here)"
    bank = prompts.build_prompts(stories, tokenizer, spec["prompt_tokens"], spec["num_prompts"])
    prompts.write_prompts(args.prompts_out, bank, {"source": prompt_source})

    info = {
        "source": spec["source"],
        "source_reason": spec["reason"],
        "model_label": model_label,
        "model_dir": args.model_dir,
        "weights_sha256": weights_sha256(args.model_dir),
        "tokenizer_size": len(tokenizer),
        "prompt_source": f"{prompt_source}, first {spec['prompt_tokens']} tokens, {len(bank)} unique",
        "num_prompts": len(bank),
        "cpu": hardware.cpu_model(),
    }
    pretrain_record = Path(args.model_dir) / "pretrain.json"
    if pretrain_record.exists():
        info["pretrain"] = json.loads(pretrain_record.read_text(encoding="utf-8"))
    atomic.write_json(args.info_out, info)
    print(f"{model_label}; {info['prompt_source']}")

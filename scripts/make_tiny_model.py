#!/usr/bin/env python3
"""A tiny random-init causal LM folder with its tokenizer and a prompts file, built offline.

    .venv/bin/python scripts/make_tiny_model.py --architecture gpt2 --out examples/own_model/base

Writes ``<out>/model`` (as ``save_pretrained`` writes it: config.json, weights, the
tokenizer), ``<out>/prompts.txt`` (one prompt a line) and ``<out>/prompts.jsonl``. The
tokenizer is a WordPiece trained on the project's generated stories; the model's sizes
are ``lorasweep.bench.tiny_base.TINY_MODEL``'s (hidden 32, 2 layers). Architectures:
llama, qwen2 and mistral (the fast engine's family), gpt2 and gpt_neox (the generic
engine's).
"""

import argparse
import sys

from lorasweep.bench.tiny_base import ARCHITECTURES, TINY_MODEL, make_tiny_base


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", choices=ARCHITECTURES, default="gpt2")
    p.add_argument("--out", required=True)
    p.add_argument("--stories", type=int, default=1500, help="generated stories the tokenizer and prompts come from")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    folder = make_tiny_base(args.out, TINY_MODEL, stories=args.stories, seed=args.seed, architecture=args.architecture)
    print(f"wrote {folder / 'model'} ({args.architecture}) and {folder / 'prompts.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

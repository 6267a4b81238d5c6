"""Command-line entry points, one subcommand per workflow stage.

``python -m lorasweep <stage> ...``: the Snakemake rules call these, and so can a
person. Imports are lazy, so that a stage that does not train never imports torch.
A LorasweepError (a mistake the user can fix) prints one line and exits 2.
"""

import argparse
import sys

from .errors import LorasweepError, error_line


def _corpus(args):
    from .base import corpus

    corpus.write_corpus(args.out, corpus.generate_stories(args.stories, args.seed))
    print(f"wrote {args.stories} stories (seed {args.seed}) to {args.out}")


def _tokenizer(args):
    from .base import corpus, tokenizer

    tok = tokenizer.train_wordpiece(corpus.read_corpus(args.corpus), args.vocab_size)
    tok.save_pretrained(args.out)
    print(f"trained a WordPiece tokenizer of {len(tok)} tokens into {args.out}")


def _pretrain(args):
    import json

    from .base import base_model

    base_model.pretrain(
        args.out, args.corpus, args.tokenizer, json.loads(args.model), args.steps, args.batch_size,
        args.seq_len, args.lr, args.seed, args.threads, log=lambda m: print(m, flush=True),
    )


def _hub_base(args):
    from .base import hub

    hub.fetch_hub_base(args.model_id, args.out)
    print(f"saved {args.model_id} into {args.out}")


def _local_base(args):
    from .base import base_info

    base_info.local_main(args)


def _prompts(args):
    from .base import base_info

    base_info.prompts_main(args)


def _base_info(args):
    from .base import base_info

    base_info.info_main(args)


def _base_samples(args):
    from .training import base_samples

    return base_samples.main(args)


def _study_config(args):
    import json

    from .atomic import write_json

    study = json.loads(args.study)
    write_json(args.out, study)
    print(f"wrote {args.out} (scale {study['scale']})")


def _worker(args):
    from .training import worker

    return worker.main(args.spec)


def _fused(args):
    from .training import fused

    return fused.main(args.spec)


def _cell(args):
    from .launch import cell

    return cell.main(args)


def _aggregate(args):
    from .analysis import aggregate

    return aggregate.main(args)


def _recommend(args):
    from .analysis import report

    return report.main(args)


def _provenance(args):
    from .study import provenance

    return provenance.main(args)


def _archive(args):
    from .study import archive

    return archive.main_archive(args)


def _verify(args):
    from .study import archive

    return archive.main_verify(args)


def _sequential_round(args):
    from .analysis import aggregate

    return aggregate.sequential_round_main(args)


def _status(args):
    from .launch import status

    return status.main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lorasweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)

    s = sub.add_parser("corpus", help="generate the embedded story corpus")
    s.add_argument("--out", required=True)
    s.add_argument("--stories", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.set_defaults(func=_corpus)

    s = sub.add_parser("tokenizer", help="train the WordPiece tokenizer on the corpus")
    s.add_argument("--corpus", required=True)
    s.add_argument("--vocab-size", type=int, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_tokenizer)

    s = sub.add_parser("pretrain", help="pretrain the embedded base model")
    for name in ("--corpus", "--tokenizer", "--out", "--model"):
        s.add_argument(name, required=True)
    for name in ("--steps", "--batch-size", "--seq-len", "--seed", "--threads"):
        s.add_argument(name, type=int, required=True)
    s.add_argument("--lr", type=float, required=True)
    s.set_defaults(func=_pretrain)

    s = sub.add_parser("hub-base", help="fetch the base model from the hub (or its cache)")
    s.add_argument("--model-id", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_hub_base)

    s = sub.add_parser("local-base", help="copy a local model folder (model and tokenizer) into the results")
    s.add_argument("--model-path", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_local_base)

    s = sub.add_parser("prompts", help="build the prompts: the opening tokens of the stories")
    s.add_argument("--spec", required=True, help="JSON: source, dataset and column or corpus settings, prompt settings")
    s.add_argument("--model-dir", required=True, help="the base folder (its tokenizer encodes the stories)")
    s.add_argument("--corpus", default=None, help="the embedded story corpus (source embedded)")
    s.add_argument("--prompts-file", default=None, help="a .txt or .jsonl file of prompts (base.prompts_path)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_prompts)

    s = sub.add_parser("base-info", help="record which base and prompts the study uses, and why")
    s.add_argument("--spec", required=True, help="JSON: source, the configured base.source, hub model id and timeout")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--prompts", required=True, help="the prompts file (its first line says how it was made)")
    s.add_argument("--info-out", required=True)
    s.set_defaults(func=_base_info)

    s = sub.add_parser("base-samples", help="sample the untrained base on the held-out prompts (degeneracy reference)")
    s.add_argument("--spec", required=True, help="JSON: max_new_tokens, temperature, repetition_penalty, held_out")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--prompts", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_base_samples)

    s = sub.add_parser("study-config", help="write the resolved config, as the tables and archive see it")
    s.add_argument("--study", required=True, help="JSON: the resolved config")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_study_config)

    s = sub.add_parser("worker", help="one GRPO + LoRA training run (spec file from the cell launcher)")
    s.add_argument("spec")
    s.set_defaults(func=_worker)

    s = sub.add_parser("fused", help="K GRPO + LoRA runs as one fused pack (spec file from the cell launcher)")
    s.add_argument("spec")
    s.set_defaults(func=_fused)

    s = sub.add_parser("cell", help="launch the n workers of one cell at once")
    s.add_argument("--spec", required=True, help="JSON cell spec")
    s.add_argument("--steps-dir", required=True)
    s.add_argument("--summary", required=True)
    s.add_argument("--log-dir", required=True)
    s.add_argument("--cores", type=int, required=True)
    s.set_defaults(func=_cell)

    s = sub.add_parser("aggregate", help="tables from the per-step records of the cells")
    s.add_argument("--config", required=True, help="the resolved config (JSON file)")
    s.add_argument("--base-info", required=True)
    s.add_argument("--cells", nargs="*", default=[], help="cell folders (holding summary.json and steps/)")
    s.add_argument("--base-samples", default=None,
                   help="the untrained base's held-out samples (results/base/samples.json), the degeneracy reference")
    s.add_argument("--experiment", choices=["lr_scaling", "concurrency"], required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--sequential", default=None, help="a sequential study's last round decision (JSON)")
    s.set_defaults(func=_aggregate)

    s = sub.add_parser("recommend", help="derived recommendations and plots from the tables")
    s.add_argument("--lr-table", default=None, help="results/tables/lr_scaling.csv")
    s.add_argument("--noise-table", default=None, help="noise_scale.csv: each seed's noise scale after each step")
    s.add_argument("--concurrency-table", default=None, help="results/tables/concurrency.csv")
    s.add_argument("--base-info", required=True)
    s.add_argument("--out", required=True, help="markdown file")
    s.add_argument("--plots-dir", required=True)
    s.add_argument("--front", default=None, help="the report's first page (HTML fragment) to write")
    s.add_argument("--study-config", default=None, help="results/study/config.json: target and max_steps")
    s.add_argument("--sequential", default=None, help="a sequential study's last look (results/tables/sequential.json)")
    s.set_defaults(func=_recommend)

    s = sub.add_parser("sequential-round", help="a sequential study's decision after a round: which cells get a block")
    s.add_argument("--config", required=True, help="results/study/config.json")
    s.add_argument("--round", type=int, required=True, help="the round the decision plans (1 after round 0)")
    s.add_argument("--previous", default=None, help="the decision of the round before")
    s.add_argument("--cells", nargs="*", default=[], help="the block folders run so far")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_sequential_round)

    s = sub.add_parser("provenance", help="record the code, packages, torch build and hardware behind the study")
    s.add_argument("--config", required=True, help="the resolved config (JSON file)")
    s.add_argument("--base-info", default=None, help="base.json: base model id, weights hash, prompt source")
    s.add_argument("--workdir", default=".", help="the checkout whose git commit is recorded")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_provenance)

    s = sub.add_parser("status", help="where a sweep stands: done, running and waiting cells, each worker's step and ETA")
    s.add_argument("--configfile", nargs="*", default=[], help="the config files the run was given (as with snakemake)")
    s.add_argument("--results", default="results", help="the results folder of the run")
    s.set_defaults(func=_status)

    s = sub.add_parser("archive", help="one deterministic .tar.gz of the results, with a SHA-256 manifest")
    s.add_argument("--results-dir", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--include", nargs="+", required=True, help="paths or globs, relative to --results-dir")
    s.add_argument("--exclude", nargs="*", default=[], help="paths or globs left out")
    s.set_defaults(func=_archive)

    s = sub.add_parser("verify", help="check an archive against its manifest, naming every file that differs")
    s.add_argument("archive")
    s.set_defaults(func=_verify)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except LorasweepError as error:
        print(error_line(args.stage, error), file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())

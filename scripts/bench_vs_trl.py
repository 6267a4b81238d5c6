#!/usr/bin/env python3
"""Step time of the project's GRPO worker against TRL's GRPOTrainer, same job, same machine.

Both trainers start from the same base weights and draw from the same prompt bank
(8-token prompts), with the same reward (``sentence_length_10_smooth`` on token
ids), LoRA rank / alpha / targets, batch size (completions per step), generations
per prompt G, completion length, temperature 1.0, repetition penalty 1.1, beta
0.02, lr (constant), AdamW with grad-norm clip 1.0, fp32, and the same number of
threads, and the loss aggregation of config.yaml (``training.loss_type``, ``grpo``) on
both sides. TRL runs with ``top_k=0``, ``top_p=1.0``,
``per_device_train_batch_size=B``, ``gradient_accumulation_steps=1``,
``steps_per_generation=1``, ``num_iterations=1``, ``num_generations=G``, and
without gradient checkpointing or bf16 (its defaults), so that one optimizer
step consumes the B completions generated for it, exactly as the worker does.

The trainers alternate (ours, TRL, ours, TRL, ...), each run in a fresh process
from the same start, so that a slow minute of a shared machine hits both. Per
batch size it prints each trainer's step time after warm-up (median and spread),
its peak memory, the mean reward over the first steps of each run, and as the
last lines ``ratio ours/trl: <value>`` (below 1 means ours is faster).

Setup (TRL lives in its own virtual environment, never in the pipeline's):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt
    .venv-bench/bin/python scripts/bench_vs_trl.py            # bs 32 and 128: about 10 min on 2 idle cores
    .venv-bench/bin/python scripts/bench_vs_trl.py --quick    # smoke run: under a minute

Two kinds of base. The default is the trained one (``--base-dir``): most of its
rows stop at EOS early, which our decode exploits (finished rows leave the batch)
and TRL's does not (it pads to the longest row). ``--full-length`` gives both
trainers a random-init base of the same shape (built offline; EOS is then about
as likely as any other token, so nearly every row runs to ``--max-new-tokens``):
the same arithmetic for both. For each part of our step the script prints the
achieved GFLOP/s (matmul FLOPs, counted from the model's shape and the tokens
decoded: generate = one forward, update = policy forward + backward + reference
forward = four) against the rate this machine multiplies square fp32 matrices at,
measured on the same number of threads. ``--ours-only`` measures our side without
TRL installed (the pipeline's own venv):

    .venv/bin/python scripts/bench_vs_trl.py --ours-only --full-length

Step times with 2 threads are only comparable on an otherwise idle machine: each line
shows the load average. On a shared machine, ``OMP_WAIT_POLICY=PASSIVE`` in front of
the command (both trainers inherit it) keeps OpenMP's spinning threads from taking
the cores the other thread waits for.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# lorasweep is the installed package (editable install of this checkout)
ROOT = Path(__file__).resolve().parent.parent

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --- one run of each trainer; each runs in its own process (see run_child) ---------------------


def run_ours(job: dict) -> dict:
    from lorasweep.study.cellspec import WorkerSpec
    from lorasweep.training.worker import train

    rate = matmul_gflops(job["threads"], seconds=0.5)  # next to the run: a shared machine's rate varies

    with tempfile.TemporaryDirectory() as tmp:
        spec = WorkerSpec.alone(rank=job["rank"], batch_size=job["batch_size"], lr=job["lr"], training=job["training"],
                                steps=job["steps"], device="cpu", base_dir=job["base_dir"], prompts=job["prompts"],
                                steps_out=Path(tmp) / "steps.jsonl", seed=job["seed"], threads=job["threads"])
        path = train(spec.to_dict(), log=lambda message: None)
        records = [json.loads(line) for line in path.read_text().splitlines()]
    return {
        "step_s": [r["step_s"] for r in records],
        "gen_s": [r["gen_s"] for r in records],
        "update_s": [r["update_s"] for r in records],
        "score_s": [r["score_s"] for r in records],
        "reward": [r["reward_mean"] for r in records],
        "tokens": [r["tokens"] for r in records],
        "threads": job["threads"],
        "peak_rss_mb": peak_rss_mb(),
        "matmul_gflops": rate,
    }


def tokenizer_for_trl(base_dir):
    """The tokenizer TRL gets, and a note on what was changed for it.

    TRL tokenizes a text prompt with the tokenizer's special tokens. A tokenizer
    whose post-processor appends [EOS] (SimpleStories' does) would hand the model
    ``prompt + [EOS]`` and put [EOS] under the repetition penalty; that
    post-processor is switched off here, so both trainers condition on the same
    8 tokens.
    """
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer("a b")["input_ids"] == tokenizer("a b", add_special_tokens=False)["input_ids"]:
        return tokenizer, "TRL's tokenization adds no special token"
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    return tokenizer, "the tokenizer appends special tokens; switched off for TRL"


def same_ids_in_trl(tokenizer, prompt_ids: list) -> list:
    """The prompts whose decoded text TRL's tokenization turns back into the same ids."""
    return [ids for ids in prompt_ids if tokenizer(tokenizer.decode(ids))["input_ids"] == ids]


def run_trl(job: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    from lorasweep.base.prompts import read_prompts
    from lorasweep.definitions.rewards import get_reward

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rate = matmul_gflops(job["threads"], seconds=0.5)
    torch.set_num_threads(job["threads"])
    t = job["training"]
    tokenizer, _ = tokenizer_for_trl(job["base_dir"])
    prompts = read_prompts(job["prompts"])
    delimiters = frozenset(tokenizer.convert_tokens_to_ids(d) for d in (".", "?", "!") if d in tokenizer.get_vocab())
    eos_id = tokenizer.eos_token_id
    score = get_reward(t["reward"])
    rewards = []

    def reward(completions, completion_ids, **kwargs):
        # TRL's completion ids end with the eos when there is one; ours exclude it
        values = [score(ids[:-1] if ids and ids[-1] == eos_id else ids, delimiters) for ids in completion_ids]
        rewards.append(sum(values) / len(values))
        return values

    class StepTimer(TrainerCallback):
        """From the start of a step (before its generation) to the end of its optimizer step."""

        def __init__(self):
            self.step_s, self.threads = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_s.append(time.perf_counter() - self.t0)
            self.threads = torch.get_num_threads()

    dataset = Dataset.from_dict({"prompt": [tokenizer.decode(ids) for ids in prompts]})
    model = AutoModelForCausalLM.from_pretrained(job["base_dir"], dtype=torch.float32)
    rank = job["rank"]
    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            output_dir=tmp, seed=job["seed"], use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            per_device_train_batch_size=job["batch_size"], gradient_accumulation_steps=1, steps_per_generation=1,
            num_iterations=1, num_generations=t["generations_per_prompt"],
            max_completion_length=t["max_new_tokens"], temperature=t["temperature"], top_k=0, top_p=1.0,
            repetition_penalty=t["repetition_penalty"], beta=t["beta"], loss_type=t["loss_type"], scale_rewards="group",
            learning_rate=job["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=t["weight_decay"],
            optim="adamw_torch", max_grad_norm=t["grad_clip"], max_steps=job["steps"],
            logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        )
        timer = StepTimer()
        trainer = GRPOTrainer(
            model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
            peft_config=LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none"),
            callbacks=[timer],
        )
        trainer.train()
    return {"step_s": timer.step_s, "reward": rewards, "threads": timer.threads, "peak_rss_mb": peak_rss_mb(),
            "matmul_gflops": rate}


def run_child(kind: str, job: dict) -> dict:
    """One run in a fresh interpreter with the thread count fixed, so no state carries over."""
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]),
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(job)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- arithmetic --------------------------------------------------------------------------------


def forward_flops_per_token(config, context: float) -> float:
    """Matmul FLOPs of one token through the decoder and the lm head, attending over ``context`` positions."""
    h, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or h // heads
    per_layer = h * (heads + 2 * kv_heads) * dim + heads * dim * h + 3 * h * inter  # qkv, o, gate/up/down
    attention = 2 * heads * dim * context  # scores and weighted values
    return 2 * (layers * (per_layer + attention) + h * vocab)


def step_flops(config, batch_size: int, prompt_len: int, tokens: float) -> dict:
    """FLOPs of one step's generate and update, for ``tokens`` completion tokens in all (eos included)."""
    per_row = tokens / batch_size
    positions = batch_size * prompt_len + tokens
    per_token = forward_flops_per_token(config, (prompt_len + per_row) / 2)
    return {"gen": per_token * positions, "update": 4 * per_token * positions}


def matmul_gflops(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    """This machine's fp32 square-matmul rate (GFLOP/s) on ``threads`` threads; best of repeated timings."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(previous)
    return 2 * n**3 / best / 1e9


def random_base(base_dir, out_dir, seed: int = 0) -> str:
    """A random-init model of ``base_dir``'s architecture with its tokenizer, in ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(AutoConfig.from_pretrained(base_dir))
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return str(out_dir)


def generated_base(out_dir) -> tuple:
    """Without a trained base: a random-init model of the study's shape, a tokenizer and prompts, built here."""
    from lorasweep.bench.tiny_base import STUDY_MODEL, make_tiny_base

    folder = make_tiny_base(out_dir, STUDY_MODEL, stories=3000)
    return str(folder / "model"), str(folder / "prompts.jsonl")


# --- the comparison --------------------------------------------------------------------------


def spread(values: list) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return (f"median {statistics.median(values):.3f} s (IQR {q[0]:.3f}-{q[2]:.3f}, "
            f"min {min(values):.3f}, max {max(values):.3f}, n={len(values)})")


def mean_and_error(values: list) -> str:
    error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} +- {error:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128], help="completions per step")
    p.add_argument("--generations", type=int, default=16, help="G, completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="steps per run (a run starts from the base each time)")
    p.add_argument("--warmup", type=int, default=1, help="first steps of each run left out of the step time")
    p.add_argument("--rounds", type=int, default=3, help="runs of each trainer, alternating; seeds 0..rounds-1")
    p.add_argument("--base-dir", default=str(ROOT / "results/base/embedded/model"))
    p.add_argument("--prompts", default=str(ROOT / "results/base/prompts.jsonl"))
    p.add_argument("--quick", action="store_true", help="smoke run: bs 32, 64 new tokens, 3 steps, 1 round")
    p.add_argument("--full-length", action="store_true",
                   help="both trainers on a random-init base of the same shape: nearly every row decodes every token")
    p.add_argument("--ours-only", action="store_true", help="measure our worker only (TRL not needed)")
    p.add_argument("--child", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        kind, job = args.child[0], json.loads(args.child[1])
        print(json.dumps(run_ours(job) if kind == "ours" else run_trl(job)))
        return 0

    trainers = ("ours",) if args.ours_only else ("ours", "trl")
    try:
        import trl
    except ImportError:
        if args.ours_only:
            trl = None
        else:
            sys.exit("TRL is not installed in this interpreter; set up the benchmark environment with\n"
                 "  python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt\n"
                 "and run this script with .venv-bench/bin/python (or measure ours alone: --ours-only)")
    if args.quick:
        args.batch_sizes, args.max_new_tokens, args.steps, args.warmup, args.rounds = [32], 64, 3, 1, 1
    have_base = all(Path(needed).exists() for needed in (args.base_dir, args.prompts))
    if not have_base and not args.full_length:
        sys.exit(f"missing {args.base_dir} or {args.prompts}: build the base first "
                 "(.venv/bin/snakemake --cores all results/base/base.json), or use --full-length")
    if args.steps <= args.warmup:
        sys.exit("--steps must be larger than --warmup")

    import yaml
    from transformers import AutoConfig

    from lorasweep.base.prompts import read_prompts, write_prompts

    # a constant lr on both sides: TRL's linear decay would run over the benchmark's few
    # steps, ours over schedule_steps; the schedule changes no step's arithmetic
    training = dict(yaml.safe_load((ROOT / "config.yaml").read_text())["training"], sample_every=0,
                    generations_per_prompt=args.generations, max_new_tokens=args.max_new_tokens,
                    temperature=1.0, repetition_penalty=1.1, beta=0.02, grad_clip=1.0, weight_decay=0.0,
                    lr_schedule="constant")
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.full_length and have_base:
            args.base_dir = random_base(args.base_dir, Path(tmp) / "random_base")
        elif args.full_length:
            args.base_dir, args.prompts = generated_base(Path(tmp) / "generated_base")
        model_config = AutoConfig.from_pretrained(args.base_dir)
        print(f"fp32 matmul rate on {args.threads} thread(s): {matmul_gflops(args.threads):.0f} GFLOP/s "
              "(1024^2, best of 1 s; measured again before each run, and each part is rated against that)")
        tokenizer, note = tokenizer_for_trl(args.base_dir)
        kept = same_ids_in_trl(tokenizer, read_prompts(args.prompts))
        prompts = str(Path(tmp) / "prompts.jsonl")
        write_prompts(prompts, kept, {"source": f"{args.prompts}, prompts that TRL tokenizes to the same ids"})
        print(f"trl {trl.__version__ if trl else '(not installed, ours only)'}; "
              f"{'random-init ' if args.full_length else ''}base {args.base_dir}; {len(kept)} prompts ({note}); rank {args.rank} "
              f"(alpha {args.rank}, {len(LORA_TARGETS)} projections), G {args.generations}, "
              f"{args.max_new_tokens} new tokens, lr {args.lr:g}, {args.threads} threads; "
              f"{args.rounds} round(s) of {args.steps} steps per trainer and batch size, {args.warmup} warm-up",
              flush=True)
        ratios = {}
        for batch_size in args.batch_sizes:
            runs = {kind: [] for kind in trainers}
            for seed in range(args.rounds):
                for kind in trainers:
                    job = {"rank": args.rank, "batch_size": batch_size, "lr": args.lr, "seed": seed,
                           "threads": args.threads, "steps": args.steps, "training": training,
                           "base_dir": args.base_dir, "prompts": prompts}
                    load = os.getloadavg()[0]
                    run = run_child(kind, job)
                    runs[kind].append(run)
                    print(f"  bs {batch_size} seed {seed} {kind:>4}: steps " +
                          " ".join(f"{s:.3f}" for s in run["step_s"]) +
                          f" s (load average {load:.1f} -> {os.getloadavg()[0]:.1f}; matmul "
                          f"{run['matmul_gflops']:.0f} GFLOP/s just before)", flush=True)
            print(f"bs {batch_size}:")
            medians = {}
            prompt_len = len(kept[0])
            for kind in trainers:
                rate = statistics.median(run["matmul_gflops"] for run in runs[kind])  # measured next to these runs
                steady = [s for run in runs[kind] for s in run["step_s"][args.warmup:]]
                medians[kind] = statistics.median(steady)
                first = [r for run in runs[kind] for r in run["reward"]]
                peak = max(run["peak_rss_mb"] for run in runs[kind])
                threads = {run["threads"] for run in runs[kind]}
                print(f"  {kind:>4}: step {spread(steady)}; peak RSS {peak:.0f} MB; threads {sorted(threads)}; "
                      f"reward over the first {args.steps} steps {mean_and_error(first)}")
                if kind == "ours":
                    tokens = statistics.mean(t for run in runs[kind] for t in run["tokens"][args.warmup:])
                    flops = step_flops(model_config, batch_size, prompt_len, tokens)
                    flops["step"] = flops["gen"] + flops["update"]
                    print(f"        completion tokens per step {tokens:.0f} of {batch_size * args.max_new_tokens} "
                          f"possible; {flops['step'] / 1e9:.1f} GFLOP per step")
                    for part in ("gen_s", "score_s", "update_s"):
                        values = [s for run in runs[kind] for s in run[part][args.warmup:]]
                        median = statistics.median(values)
                        work = flops.get(part[:-2])
                        achieved = (f"; {work / median / 1e9:.1f} GFLOP/s = {work / median / 1e9 / rate:.1%} of "
                                    f"the matmul rate") if work else ""
                        print(f"        {part[:-2]:>6}: median {median:.3f} s{achieved}")
                    print(f"          step: {flops['step'] / medians[kind] / 1e9:.1f} GFLOP/s = "
                          f"{flops['step'] / medians[kind] / 1e9 / rate:.1%} of the matmul rate")
                elif "ours" in runs:  # TRL records no token counts: rated on our step's arithmetic
                    work = step_flops(model_config, batch_size, prompt_len, statistics.mean(
                        t for run in runs["ours"] for t in run["tokens"][args.warmup:]))
                    total = work["gen"] + work["update"]
                    print(f"          step: {total / medians[kind] / 1e9:.1f} GFLOP/s = "
                          f"{total / medians[kind] / 1e9 / rate:.1%} of the matmul rate (on our step's count)")
            if "trl" in runs:
                paired = [statistics.median(o["step_s"][args.warmup:]) / statistics.median(r["step_s"][args.warmup:])
                          for o, r in zip(runs["ours"], runs["trl"])]
                print("  ours/trl per round (adjacent runs): " + " ".join(f"{x:.3f}" for x in paired))
                ratios[batch_size] = medians["ours"] / medians["trl"]
    print(f"total time {time.time() - started:.0f} s")
    for batch_size, ratio in ratios.items():
        print(f"ratio ours/trl: {ratio:.3f} (bs {batch_size}: ours is {1 / ratio:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

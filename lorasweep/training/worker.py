"""One GRPO + LoRA training run: the "worker" of a cell (docs/design.md §2).

Read top to bottom: load the base model and prompts, wrap the model in a LoRA
adapter, wait at the cell's start barrier, then per step sample completions,
score them, and take one GRPO update. Each step appends one JSON line with the
rewards, loss, KL, lr and the step time split into generate / score / update; the
file appears under its final name only when the run ends well. A run toward a
target ends by sampling held-out prompts, untimed, to judge whether it collapsed
(``lorasweep.training.degeneracy``); the samples go into a JSON file next to the steps.

A worker knows nothing of its siblings, of MPS or of Snakemake: the cell
launcher hands it a spec file and reads its exit status.
"""

import json
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import atomic, formatting
from . import degeneracy, grpo
from ..study import grid
from ..analysis import metrics
from ..errors import LorasweepError
from ..base.prompts import read_prompts
from .rewards import get_reward
from .sampler import decoder_weights, sample


# training.dtype: the precision of the merged weights that sample and take the
# update; the base and the adapter stay fp32 (bf16 is a GPU setting)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class NonFiniteError(LorasweepError):
    """A loss, gradient or reward became NaN or infinite."""


def load_policy(base_dir, rank: int, targets: list, device: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
    lora = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(targets), bias="none")
    return get_peft_model(model, lora)


def wait_at_barrier(barrier: dict, seed: int):
    """Say we are ready, then wait until the launcher says go, so all workers start together."""
    if not barrier:
        return
    Path(barrier["ready_dir"], f"seed{seed}").touch()
    deadline = time.monotonic() + barrier["timeout_s"]
    while not os.path.exists(barrier["go"]):
        if time.monotonic() > deadline:
            raise LorasweepError(f"worker seed {seed}: no start signal at {barrier['go']} within {barrier['timeout_s']} s")
        time.sleep(0.01)


def prompt_batches(num_prompts: int, per_step: int, generator: torch.Generator):
    """Prompt indices, ``per_step`` at a time: each epoch a fresh permutation, no repeat within one.

    A step that needs more prompts than its epoch has left takes the rest from
    the next epoch's permutation (the study's order: shuffled per epoch).
    """
    order = torch.empty(0, dtype=torch.long)
    while True:
        while len(order) < per_step:
            order = torch.cat([order, torch.randperm(num_prompts, generator=generator)])
        yield order[:per_step]
        order = order[per_step:]


def split_prompts(prompt_bank: torch.Tensor, held_out: int) -> tuple:
    """(training prompts, held-out prompts): the last ``held_out`` of the bank are never trained on."""
    if len(prompt_bank) <= held_out:
        raise LorasweepError(f"the prompt bank has {len(prompt_bank)} prompts; the degeneracy check holds out "
                             f"{held_out} (training.degeneracy.samples), so more are needed (base.num_prompts)")
    return prompt_bank[:-held_out], prompt_bank[-held_out:]


@torch.no_grad()
def sample_held_out(model, prompts: torch.Tensor, tokenizer, t: dict, device: str) -> list:
    """One completion per held-out prompt with the policy as it is now, from a fixed seed.

    The generator is its own, seeded alike in every worker, so the training's
    random streams are untouched and two runs are compared on the same draws.
    """
    return held_out_texts(decoder_weights(model), prompts, tokenizer, t, device)


@torch.no_grad()
def held_out_texts(weights, prompts: torch.Tensor, tokenizer, t: dict, device: str) -> list:
    """``sample_held_out`` from merged decoder weights (``sampler.decoder_weights``), as fused runs hold them."""
    generator = torch.Generator(device=device).manual_seed(degeneracy.EVAL_SEED)
    samples = sample(weights, prompts, t["max_new_tokens"], tokenizer.eos_token_id,
                     t["temperature"], t["repetition_penalty"], generator)
    rows = samples.completions.tolist()
    return [{"prompt": tokenizer.decode(prompt), "completion": tokenizer.decode(row[:n])}
            for prompt, row, n in zip(prompts.tolist(), rows, samples.lengths)]


@dataclass
class Task:
    """What a run trains on: the tokenizer, the reward and its delimiters, the prompts."""

    tokenizer: object
    delimiters: frozenset
    eos_id: int
    reward_fn: object
    train_prompts: torch.Tensor
    held_out: torch.Tensor  # never trained on: the degeneracy check samples them


def load_task(spec: dict, device: str) -> Task:
    """The tokenizer, reward and prompts of ``spec``; a tokenizer without a delimiter or an
    end token stops here with an error naming it."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ..base.tokenizer import delimiter_ids, eos_id

    hf_logging.disable_progress_bar()  # keeps worker logs to one line per event
    warnings.filterwarnings("ignore", category=FutureWarning)
    t = spec["training"]
    tokenizer = AutoTokenizer.from_pretrained(spec["base_dir"])
    delimiters, eos = frozenset(delimiter_ids(tokenizer)), eos_id(tokenizer)  # checked first: they fail fastest
    reward_fn = get_reward(t["reward"])
    prompt_bank = torch.tensor(read_prompts(spec["prompts"]), device=device)
    train_prompts, held_out = split_prompts(prompt_bank, t["degeneracy"]["samples"])
    return Task(tokenizer, delimiters, eos, reward_fn, train_prompts, held_out)


def step_record(step: int, rewards, loss, kl, lr: float, grad_norm, samples, marks: tuple, t_start: float,
                trailing) -> dict:
    """One line of a run's per-step jsonl; the worker and the fused pack write it alike, so
    that the tables cannot tell them apart. ``marks``: perf_counter at the start of the step,
    after generate, after score, after the update."""
    t0, t1, t2, t3 = marks
    return {
        "step": step,
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std().item(),
        "loss": loss.item(),
        "kl": kl.item(),
        "lr": lr,
        "grad_norm": grad_norm.item(),
        "tokens": int(samples.mask.sum().item()),
        "completion_len_mean": sum(samples.lengths) / len(samples.lengths),
        "gen_s": t1 - t0,
        "score_s": t2 - t1,
        "update_s": t3 - t2,
        "step_s": t3 - t0,
        "t_start": t_start,
        "t_end": t_start + (t3 - t0),
        "trailing_reward": trailing,
    }


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


NONFINITE_HINTS = {
    "reward": "the reward function returned a non-finite value",
    "loss": "a smaller lr may help",
    "grad_norm": "a smaller lr may help",
}


def check_finite(step: int, **values):
    """Raise NonFiniteError naming the step and the first non-finite value (give the causes first)."""
    for name, value in values.items():
        if not math.isfinite(value):
            hint = NONFINITE_HINTS.get(name, "a smaller lr may help")
            raise NonFiniteError(f"step {step}: {name} is {value}; stopping this run before the update ({hint})")


# ---- fault injection, for tests only ----------------------------------------------------
# The failure tests make a real worker fail on purpose: spec["fault"], or the JSON in
# $LORASWEEP_FAULT (which reaches workers started by Snakemake), e.g.
#   {"kind": "kill", "step": 2, "seed": 1, "cell": "r4_bs8_lr4e-03_n2"}
# kind: kill (SIGKILL itself), raise (an exception), nan_loss, inf_loss, nan_grad, nan_reward;
# seed and cell are optional filters. Never set either in a real run.
FAULT_ENV = "LORASWEEP_FAULT"
FAULT_KINDS = ("kill", "raise", "nan_loss", "inf_loss", "nan_grad", "nan_reward")


def fault_for(spec: dict) -> dict:
    """The test-only fault aimed at this worker, or {}."""
    fault = spec.get("fault")
    if fault is None and os.environ.get(FAULT_ENV):
        fault = json.loads(os.environ[FAULT_ENV])
    if not fault:
        return {}
    if fault.get("kind") not in FAULT_KINDS:
        raise LorasweepError(f"{FAULT_ENV} / spec fault: kind {fault.get('kind')!r} is not one of {', '.join(FAULT_KINDS)}")
    if "seed" in fault and fault["seed"] != spec["seed"]:
        return {}
    if "cell" in fault and fault["cell"] != spec["cell"]["cell_id"]:
        return {}
    return fault


def inject(fault: dict, step: int, point: str, value=None):
    """Apply the fault if it is due at this point of this step; returns ``value``, changed or not."""
    if not fault or fault.get("step") != step:
        return value
    kind = fault["kind"]
    if point == "start" and kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "start" and kind == "raise":
        raise RuntimeError(f"injected fault at step {step} (test hook {FAULT_ENV})")
    if point == "reward" and kind == "nan_reward":
        value = value.clone()
        value[0] = float("nan")
    if point == "loss" and kind in ("nan_loss", "inf_loss"):
        value = value * float("nan") if kind == "nan_loss" else value + float("inf")
    if point == "grad" and kind == "nan_grad":
        next(p for p in value if p.grad is not None).grad.view(-1)[0] = float("nan")
    return value


def train(spec: dict, log=print) -> Path:
    t = spec["training"]
    seed, device = spec["seed"], spec["device"]
    rank, batch_size, lr = spec["cell"]["rank"], spec["cell"]["batch_size"], spec["cell"]["lr"]
    group = t["generations_per_prompt"]
    prompts_per_step = batch_size // group

    if device == "cpu":
        torch.set_num_threads(spec["threads"])
    elif not torch.cuda.is_available():
        # a GPU study planned elsewhere (a login node) and scheduled onto a node without one
        import socket

        raise LorasweepError(f"the study runs on a CUDA GPU, but this worker on {socket.gethostname()} sees none "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    # fp32 means fp32 on a GPU too: no TF32 in the matmuls (the study's figures are fp32)
    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(seed)  # fixes the LoRA init; the generators below fix the rest
    torch.use_deterministic_algorithms(device == "cpu", warn_only=True)

    task = load_task(spec, device)
    tokenizer, delimiters, eos_id, reward_fn = task.tokenizer, task.delimiters, task.eos_id, task.reward_fn
    train_prompts, held_out = task.train_prompts, task.held_out

    model = load_policy(spec["base_dir"], rank, t["lora_targets"], device)
    dtype = DTYPES[t["dtype"]]
    with torch.no_grad(), model.disable_adapter():
        reference = decoder_weights(model, dtype)  # the KL's reference: the base weights, fixed for the run
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=t["weight_decay"])
    prompt_order = prompt_batches(len(train_prompts), prompts_per_step, torch.Generator().manual_seed(seed))
    sampling = torch.Generator(device=device).manual_seed(seed)
    fault = fault_for(spec)  # tests only: see FAULT_ENV

    out_path = Path(spec["steps_out"])
    partial = out_path.with_name(out_path.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    stop_at_target = spec["mode"] == grid.TO_TARGET
    # a fixed-step run has no target, and so no window to watch
    tracker = metrics.StopRule(t["target"], t["window"], t.get("early_steps", 0)) if stop_at_target else None
    log(f"worker seed {seed}: rank {rank}, bs {batch_size} ({prompts_per_step} prompts x {group}), lr {formatting.lr(lr)}, "
        f"device {device}, threads {torch.get_num_threads()}, up to {spec['steps']} steps")

    wait_at_barrier(spec.get("barrier"), seed)
    with open(partial, "w", encoding="utf-8") as steps_file:
        for step in range(1, spec["steps"] + 1):
            inject(fault, step, "start")
            synchronize(device)
            t_start, t0 = time.time(), time.perf_counter()

            # generate: bs/G prompts, G completions each, with the adapter merged into the weights
            # once per step; the update below differentiates through the same merge
            picks = next(prompt_order)
            prompt_ids = train_prompts[picks.to(device)].repeat_interleave(group, dim=0)
            weights = decoder_weights(model, dtype)
            samples = sample(weights, prompt_ids, t["max_new_tokens"], eos_id,
                             t["temperature"], t["repetition_penalty"], sampling)
            synchronize(device)
            t1 = time.perf_counter()

            # score: rewards on token ids, then group-relative advantages
            rows = samples.completions.tolist()
            rewards = torch.tensor([reward_fn(row[:n], delimiters) for row, n in zip(rows, samples.lengths)])
            rewards = inject(fault, step, "reward", rewards)
            advantages = grpo.group_advantages(rewards, group).to(device)
            t2 = time.perf_counter()

            # update: policy and reference log-probs, GRPO loss, one AdamW step
            logp = grpo.completion_logprobs(weights, prompt_ids, samples.completions, samples.mask, t["temperature"])
            with torch.no_grad():
                ref_logp = grpo.completion_logprobs(reference, prompt_ids, samples.completions, samples.mask,
                                                    t["temperature"])
            loss, kl = grpo.grpo_loss(logp, ref_logp, advantages, samples.mask, t["beta"], t["loss_type"],
                                      t["max_new_tokens"])
            loss = inject(fault, step, "loss", loss)
            loss.backward()
            inject(fault, step, "grad", trainable)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, t["grad_clip"])
            check_finite(step, reward=rewards.mean().item(), loss=loss.item(), grad_norm=grad_norm.item())
            step_lr = grpo.scheduled_lr(lr, step - 1, t["lr_schedule"], t["schedule_steps"])
            for param_group in optimizer.param_groups:
                param_group["lr"] = step_lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            t3 = time.perf_counter()

            stop = tracker.add(rewards.mean().item()) if stop_at_target else False
            trailing = tracker.trailing if stop_at_target else None
            record = step_record(step, rewards, loss, kl, step_lr, grad_norm, samples, (t0, t1, t2, t3), t_start,
                                 trailing)
            steps_file.write(json.dumps(record, sort_keys=True) + "\n")
            steps_file.flush()

            if t["sample_every"] and step % t["sample_every"] == 0 or step == 1:
                text = tokenizer.decode(prompt_ids[0].tolist() + rows[0][: samples.lengths[0]])
                log(f"  sample at step {step}: {text!r}")
            if step % 10 == 0 or step == 1:
                trail = "n/a" if trailing is None else f"{trailing:.3f}"
                log(f"step {step}: reward {record['reward_mean']:.3f} (trailing {trail}), kl {record['kl']:.3f}, "
                    f"{record['step_s']:.3f} s/step (gen {record['gen_s']:.3f}, update {record['update_s']:.3f})")
            if stop_at_target and tracker.reached_at == step:
                log(f"reached target {t['target']} at step {step}")
            if stop:
                if tracker.reached_at != step:
                    log(f"stopping at step {step}: the early-reward stretch (training.early_steps) is complete")
                break
        else:
            if stop_at_target:
                log(f"target {t['target']} not reached in {spec['steps']} steps (censored)")

    if stop_at_target:  # after the last step's timing: it never counts in a step time
        texts = sample_held_out(model, held_out, tokenizer, t, device)
        measures = degeneracy.measure([s["completion"] for s in texts])
        atomic.write_json(samples_path(out_path, seed), {"seed": seed, "step": step, "target": t["target"],
                                                         "reached_target": tracker.reached, **measures,
                                                         "samples": texts})
        log(f"held-out samples after step {step}: {measures['distinct_first']} of {measures['samples']} first "
            f"sentences distinct, mean Jaccard {measures['jaccard']:.3f}, distinct-2 {measures['distinct_2']:.3f}; "
            f"e.g. {texts[0]['completion']!r}")
    os.replace(partial, out_path)
    return out_path


def samples_path(steps_path: Path, seed: int) -> Path:
    """Where a worker's held-out samples go: next to its steps, so they are published with them."""
    return Path(steps_path).with_name(f"samples_seed{seed}.json")


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    train(spec, log=lambda msg: print(msg, flush=True))
    return 0

"""The machinery of one GRPO + LoRA run, which a worker and a fused pack both build on.

Loading the base with its LoRA adapter, the task (tokenizer, reward, prompts), the
prompt order, the start barrier, the held-out samples of the degeneracy check, the
per-step record and the finiteness check: a separate worker (``worker``) and the K
runs of a fused pack (``fused``) do each of these the same way, so that the tables
cannot tell their records apart (docs/design.md §2, §3).
"""

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import degeneracy
from ..base.prompts import read_prompts
from ..errors import LorasweepError
from ..definitions.rewards import check_text_rewards, get_reward, load_reward_file, reward_file


def prepare_device(spec: dict, what: str):
    """Threads on a CPU, a GPU where the study needs one, fp32 matmuls without TF32, determinism on a CPU."""
    device = spec["device"]
    if device == "cpu":
        torch.set_num_threads(spec["threads"])
    elif not torch.cuda.is_available():
        # a GPU study planned elsewhere (a login node) and scheduled onto a node without one
        import socket

        raise LorasweepError(f"the study runs on a CUDA GPU, but this {what} on {socket.gethostname()} sees none "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    # fp32 means fp32 on a GPU too: no TF32 in the matmuls (the study's figures are fp32)
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(device == "cpu", warn_only=True)


# training.dtype: the precision of the merged weights that sample and take the
# update; the base and the adapter stay fp32 (bf16 is a GPU setting)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class NonFiniteError(LorasweepError):
    """A loss, gradient or reward became NaN or infinite."""


def load_policy(base_dir, rank: int, targets, device: str):
    """The base with a LoRA adapter of ``rank`` (alpha = rank) on ``targets``: module names, or "all-linear"."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
    targets = targets if isinstance(targets, str) else list(targets)
    lora = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets, bias="none")
    try:
        return get_peft_model(model, lora)
    except ValueError as error:  # peft names the targets it could not find
        raise LorasweepError(f"training.lora_targets {targets!r} do not fit {type(model).__name__}: {error}") from None


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
def held_out_texts(engine, weights, prompts: torch.Tensor, tokenizer, t: dict, device: str) -> list:
    """One completion per held-out prompt with the policy ``weights`` of ``engine``, from a fixed seed.

    The generator is its own, seeded alike in every worker, so the training's
    random streams are untouched and two runs are compared on the same draws.
    """
    generator = torch.Generator(device=device).manual_seed(degeneracy.EVAL_SEED)
    samples = engine.sample(weights, prompts, t, tokenizer.eos_token_id, generator)
    rows = samples.completions.tolist()
    return [{"prompt": tokenizer.decode(prompt), "completion": tokenizer.decode(row[:n])}
            for prompt, row, n in zip(prompts.tolist(), rows, samples.lengths)]


class Scorer:
    """One step's rewards: a registered reward on token ids, or the user's reward file on text.

    A registered reward sees each completion's ids before its stop and the sentence
    delimiters; a reward file's function sees the decoded prompts and completions,
    TRL's convention, and whatever it raises or returns amiss stops the run with an
    error naming the file, the function and the step.
    """

    def __init__(self, name: str, tokenizer, delimiters: frozenset):
        self.tokenizer, self.delimiters = tokenizer, delimiters
        spec = reward_file(name)
        self.where = f"reward {spec[0]}:{spec[1]}" if spec else f"reward {name}"
        self.text = spec is not None
        self.fn = load_reward_file(*spec) if spec else get_reward(name)

    def __call__(self, prompt_ids: torch.Tensor, completion_rows: list, lengths: list, step: int) -> torch.Tensor:
        if not self.text:
            return torch.tensor([self.fn(row[:n], self.delimiters) for row, n in zip(completion_rows, lengths)])
        prompts = self.tokenizer.batch_decode(prompt_ids.tolist())
        completions = self.tokenizer.batch_decode([row[:n] for row, n in zip(completion_rows, lengths)])
        try:
            values = self.fn(prompts, completions)
        except Exception as error:  # noqa: BLE001 - the user's function: its error, named, stops the run
            raise LorasweepError(f"{self.where} raised at step {step}: {type(error).__name__}: {error}") from None
        return torch.tensor(check_text_rewards(values, len(completions), f"{self.where} at step {step}"))


@dataclass
class Task:
    """What a run trains on: the tokenizer, the reward and its delimiters, the prompts."""

    tokenizer: object
    delimiters: frozenset
    eos_id: int
    score: Scorer
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
    # a registered reward counts sentences, so it needs the delimiters; a reward file reads text
    text_reward = reward_file(t["reward"]) is not None
    delimiters = frozenset() if text_reward else frozenset(delimiter_ids(tokenizer))  # checked first: they fail fastest
    eos = eos_id(tokenizer)
    score = Scorer(t["reward"], tokenizer, delimiters)
    prompt_bank = torch.tensor(read_prompts(spec["prompts"]), device=device)
    train_prompts, held_out = split_prompts(prompt_bank, t["degeneracy"]["samples"])
    return Task(tokenizer, delimiters, eos, score, train_prompts, held_out)


def noise_record(small_sq: float, big_sq: float, groups_small: int, groups_big: int) -> dict:
    """The noise scale's raw figures of one update: the squared gradient norms of the small batch (its first
    ``groups_small`` groups) and of the full batch (``groups_big``); ``lorasweep.analysis.noise_scale`` estimates
    from them."""
    return {"grad_sq_small": small_sq, "grad_sq_big": big_sq, "groups_small": groups_small, "groups_big": groups_big}


def step_record(step: int, rewards, loss, kl, lr: float, grad_norm, samples, marks: tuple, t_start: float,
                trailing, noise: dict = None) -> dict:
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
        **(noise or {}),
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


def samples_path(steps_path: Path, seed: int) -> Path:
    """Where a worker's held-out samples go: next to its steps, so they are published with them."""
    return Path(steps_path).with_name(f"samples_seed{seed}.json")



"""One GRPO + LoRA training run: the "worker" of a cell (DESIGN §2).

Read top to bottom: load the base model and prompts, wrap the model in a LoRA
adapter, wait at the cell's start barrier, then per step sample completions,
score them, and take one GRPO update. Each step appends one JSON line with the
rewards, loss, KL and the step time split into generate / score / update; the
file appears under its final name only when the run ends well.

A worker knows nothing of its siblings, of MPS or of Snakemake: the cell
launcher hands it a spec file and reads its exit status.
"""

import json
import math
import os
import signal
import time
import warnings
from pathlib import Path

import torch

from . import grpo, metrics
from .errors import LorasweepError
from .prompts import read_prompts
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
    dtype = DTYPES[t.get("dtype", "fp32")]
    torch.manual_seed(seed)  # fixes the LoRA init; the generators below fix the rest
    torch.use_deterministic_algorithms(device == "cpu", warn_only=True)

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keeps worker logs to one line per event
    warnings.filterwarnings("ignore", category=FutureWarning)

    tokenizer = AutoTokenizer.from_pretrained(spec["base_dir"])
    delimiters = frozenset(tokenizer.convert_tokens_to_ids(d) for d in (".", "?", "!") if d in tokenizer.get_vocab())
    eos_id = tokenizer.eos_token_id
    reward_fn = get_reward(t["reward"])
    prompt_bank = torch.tensor(read_prompts(spec["prompts"]), device=device)

    model = load_policy(spec["base_dir"], rank, t["lora_targets"], device)
    with torch.no_grad(), model.disable_adapter():
        reference = decoder_weights(model, dtype)  # the KL's reference: the base weights, fixed for the run
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=t["weight_decay"])
    prompt_order = torch.Generator().manual_seed(seed)
    sampling = torch.Generator(device=device).manual_seed(seed)
    fault = fault_for(spec)  # tests only: see FAULT_ENV

    out_path = Path(spec["steps_out"])
    partial = out_path.with_name(out_path.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    stop_at_target = spec["mode"] == "to_target"
    rewards_so_far = []
    log(f"worker seed {seed}: rank {rank}, bs {batch_size} ({prompts_per_step} prompts x {group}), lr {lr:g}, "
        f"device {device}, threads {torch.get_num_threads()}, up to {spec['steps']} steps")

    wait_at_barrier(spec.get("barrier"), seed)
    with open(partial, "w", encoding="utf-8") as steps_file:
        for step in range(1, spec["steps"] + 1):
            inject(fault, step, "start")
            synchronize(device)
            t_start, t0 = time.time(), time.perf_counter()

            # generate: bs/G prompts, G completions each, with the adapter merged into the weights
            # once per step; the update below differentiates through the same merge
            picks = torch.randint(len(prompt_bank), (prompts_per_step,), generator=prompt_order)
            prompt_ids = prompt_bank[picks.to(device)].repeat_interleave(group, dim=0)
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
            loss, kl = grpo.grpo_loss(logp, ref_logp, advantages, samples.mask, t["beta"])
            loss = inject(fault, step, "loss", loss)
            loss.backward()
            inject(fault, step, "grad", trainable)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, t["grad_clip"])
            check_finite(step, reward=rewards.mean().item(), loss=loss.item(), grad_norm=grad_norm.item())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            t3 = time.perf_counter()

            rewards_so_far.append(rewards.mean().item())
            trailing = metrics.trailing_means(rewards_so_far[-t["window"]:], t["window"])[-1]
            record = {
                "step": step,
                "reward_mean": rewards.mean().item(),
                "reward_std": rewards.std().item(),
                "loss": loss.item(),
                "kl": kl.item(),
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
            steps_file.write(json.dumps(record, sort_keys=True) + "\n")
            steps_file.flush()

            if t["sample_every"] and step % t["sample_every"] == 0 or step == 1:
                text = tokenizer.decode(prompt_ids[0].tolist() + rows[0][: samples.lengths[0]])
                log(f"  sample at step {step}: {text!r}")
            if step % 10 == 0 or step == 1:
                trail = "n/a" if trailing is None else f"{trailing:.3f}"
                log(f"step {step}: reward {record['reward_mean']:.3f} (trailing {trail}), kl {record['kl']:.3f}, "
                    f"{record['step_s']:.3f} s/step (gen {record['gen_s']:.3f}, update {record['update_s']:.3f})")
            if stop_at_target and trailing is not None and trailing >= t["target"]:
                log(f"reached target {t['target']} at step {step}")
                break
        else:
            if stop_at_target:
                log(f"target {t['target']} not reached in {spec['steps']} steps (censored)")
    os.replace(partial, out_path)
    return out_path


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    train(spec, log=lambda msg: print(msg, flush=True))
    return 0

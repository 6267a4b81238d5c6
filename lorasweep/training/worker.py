"""One GRPO + LoRA training run: the "worker" of a cell (docs/design.md §2).

Read top to bottom: load the base model and prompts, wrap the model in a LoRA
adapter, wait at the cell's start barrier, then per step sample completions,
score them, and take one GRPO update. Each step appends one JSON line with the
rewards, loss, KL, lr and the step time split into generate / score / update; the
file appears under its final name only when the run ends well. A run toward a
target ends by sampling held-out prompts, untimed, to judge whether it collapsed
(``lorasweep.training.degeneracy``); the samples go into a JSON file next to the steps.
What this run shares with the runs of a fused pack is in ``run``.

A worker knows nothing of its siblings, of MPS or of Snakemake: the cell
launcher hands it a spec file and reads its exit status.
"""

import json
import os
import time
from pathlib import Path

import torch

from .. import atomic, formatting
from . import degeneracy, grpo
from ..study import grid
from ..definitions.stopping import StopRule
from .engines import engine_for
from .faults import fault_for, inject
from .run import DTYPES, check_finite, held_out_texts, load_policy, load_task, noise_record, prepare_device, \
    prompt_batches, samples_path, step_record, synchronize, wait_at_barrier


def train(spec: dict, log=print) -> Path:
    t = spec["training"]
    seed, device = spec["seed"], spec["device"]
    rank, batch_size, lr = spec["cell"]["rank"], spec["cell"]["batch_size"], spec["cell"]["lr"]
    group = t["generations_per_prompt"]
    prompts_per_step = batch_size // group

    prepare_device(spec, "worker")
    torch.manual_seed(seed)  # fixes the LoRA init; the generators below fix the rest

    task = load_task(spec, device)
    tokenizer, eos_id = task.tokenizer, task.eos_id
    train_prompts, held_out = task.train_prompts, task.held_out

    model = load_policy(spec["base_dir"], rank, t["lora_targets"], device)
    # the fast decoder or the model's own modules (lorasweep.study.engine decided which when planning);
    # the KL's reference, the base with the adapter off, is the engine's too
    engine = engine_for(t.get("engine"), model, DTYPES[t["dtype"]], train_prompts.shape[1] + t["max_new_tokens"])
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
    tracker = StopRule(t["target"], t["window"], t.get("early_steps", 0)) if stop_at_target else None
    log(f"worker seed {seed}: rank {rank}, bs {batch_size} ({prompts_per_step} prompts x {group}), lr {formatting.lr(lr)}, "
        f"device {device}, threads {torch.get_num_threads()}, {engine.name} engine, up to {spec['steps']} steps")

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
            weights = engine.weights()
            samples = engine.sample(weights, prompt_ids, t, eos_id, sampling)
            synchronize(device)
            t1 = time.perf_counter()

            # score: rewards (on token ids, or the user's on text), then group-relative advantages
            rows = samples.completions.tolist()
            rewards = task.score(prompt_ids, rows, samples.lengths, step)
            rewards = inject(fault, step, "reward", rewards)
            advantages = grpo.group_advantages(rewards, group).to(device)
            t2 = time.perf_counter()

            # update: policy and reference log-probs, GRPO loss, one AdamW step; with the noise scale
            # on, the loss is taken in two halves of the step's groups, whose gradients the record keeps
            halves = grpo.group_halves(len(prompt_ids), group) if grpo.noise_scale_step(t, step) else None
            if halves is None:
                loss, kl = policy_loss(engine, weights, prompt_ids, samples, advantages, t)
                loss = inject(fault, step, "loss", loss)
                loss.backward()
                noise = {}
            else:
                (loss_a, kl_a), (loss_b, kl_b) = (policy_loss(engine, weights, prompt_ids, samples, advantages, t, rows)
                                                  for rows in halves)
                masks = [samples.mask[rows] for rows in halves]
                w_a, w_b = grpo.half_weights(t["loss_type"], *masks)
                loss_a, loss_b = inject(fault, step, "loss", loss_a), inject(fault, step, "loss", loss_b)
                [(small, big)] = grpo.backward_in_two_halves([loss_a], [loss_b], [w_a], [w_b], [trainable])
                loss = (w_a * loss_a + w_b * loss_b).detach()
                tokens = [float(m.sum()) for m in masks]
                kl = (kl_a * tokens[0] + kl_b * tokens[1]) / max(1.0, sum(tokens))
                noise = noise_record(small, big, len(halves[0]) // group, len(prompt_ids) // group)
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
                                 trailing, noise)
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
        texts = held_out_texts(engine, engine.frozen_weights(), held_out, tokenizer, t, device)
        measures = degeneracy.measure([s["completion"] for s in texts])
        atomic.write_json(samples_path(out_path, seed), {"seed": seed, "step": step, "target": t["target"],
                                                         "reached_target": tracker.reached, **measures,
                                                         "samples": texts})
        log(f"held-out samples after step {step}: {measures['distinct_first']} of {measures['samples']} first "
            f"sentences distinct, mean Jaccard {measures['jaccard']:.3f}, distinct-2 {measures['distinct_2']:.3f}; "
            f"e.g. {texts[0]['completion']!r}")
    os.replace(partial, out_path)
    return out_path


def policy_loss(engine, weights, prompt_ids, samples, advantages, t: dict, rows=None) -> tuple:
    """(loss, mean KL) of the step's rows (``rows``: a subset, for the noise scale's half batch)."""
    if rows is not None:
        prompt_ids, advantages = prompt_ids[rows], advantages[rows]
        completions, mask = samples.completions[rows], samples.mask[rows]
    else:
        completions, mask = samples.completions, samples.mask
    logp = engine.logprobs(weights, prompt_ids, completions, mask, t["temperature"])
    with torch.no_grad():
        ref_logp = engine.logprobs(engine.reference, prompt_ids, completions, mask, t["temperature"])
    return grpo.grpo_loss(logp, ref_logp, advantages, mask, t["beta"], t["loss_type"], t["max_new_tokens"])


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    train(spec, log=lambda msg: print(msg, flush=True))
    return 0

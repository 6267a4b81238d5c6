"""Fused runs: K independent GRPO + LoRA runs in one process over one frozen base (docs/design.md §3).

The runs of a pack share the base model, the rank, the batch size, G and the
number of new tokens; each has its own seed and lr. A process per run repeats
the same tiny kernels K times, each with its own Python loop (and on a GPU its
own CUDA context); a pack does the arithmetic of all K runs at once:

- **weights**: each run keeps its own LoRA factors as leaf tensors (the ones a
  separate worker with that seed would get: built the worker's way and copied
  out of its peft model). Each step the factors of the runs still training are
  stacked and merged as ``W + B_k A_k * scaling``, giving weights of shape
  (K, out, in): one ``torch.bmm`` over a (K, rows, in) activation is one run's
  ``F.linear`` for every run at once. Measured on one CPU thread at the study's
  shape (hidden 128, rank 32, K 8, the q/k/v projection;
  ``scripts/bench_fused.py --matmul``): the merged ``bmm`` took 219 us for 16
  rows per run (a decode token) and 7.1 ms for 640 (an update), the shared base
  matmul plus the two low-rank products ``x A_k^T B_k^T`` 262 us and 11.5 ms, a
  loop of K ``mm`` 272 us and 7.1 ms; merging costs 0.45 ms per projection per
  step. The merged form also keeps a run's weights those of the worker's merge.
- **decode**: all K x bs rows in one forward per token. Each run draws its
  uniforms from its own generator exactly as a separate worker would: on the
  CPU one per row still in *its* batch per token (its rows leave the batch by
  the worker's own rule, ``sampler.DROP_FRACTION``, and the pack's batch is the
  runs' batches padded to the longest), on CUDA all of them up front, as the
  static decode does. So run k's tokens are the tokens of the separate run,
  given equal logits.
- **update**: the policy log-probs of all rows in one padded forward, the
  reference (the shared base) in one plain one; then per run its own GRPO loss,
  and one backward of their sum (the runs' parameters are disjoint, so each
  gets the gradient of its own loss). Per run: its own grad-norm clipping, its
  own AdamW, its own lr schedule.
- **stopping**: a run that reaches its target stops and leaves the pack (its
  weights are no longer stacked); the others go on. Its held-out samples are
  taken when the pack ends, from its final adapter, with the worker's helper.

Every run writes its own per-step jsonl in the worker's format; the step's
times are the pack's (all runs step together), so a cell's aggregate steps/s is
n / step time, as for processes.

Exactness (``tests/test_fused.py``): at step 1, run k's logits equal the
separate run's to 1e-5, its sampled tokens are identical on the same draws (and
on its own generator) and its adapter gradients agree to 1e-5. Later steps are
not bit-identical on the CPU. At step 1 peft's B is zero, so the merged weights
are the base's, bit for bit, and the recorded loss and grad norm came out
equal to the last bit on the tiny test base; from step 2 on, ``bmm`` (the
stacked merge and forward) and the worker's ``mm``/``addmm`` sum in a
different order, and the pack's policy log-probs come from one padded forward
rather than the worker's length-sorted chunks, so the grad norms differ in the
last bits (1e-8 relative over 8 steps of three runs, every token still equal).
AdamW divides by sqrt(v) per coordinate, so such a difference is not damped;
once a draw falls within it of a boundary of the inverse CDF, a token flips and
the two runs part. They remain the same runs statistically.
"""

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import atomic, formatting
from . import degeneracy, grpo
from ..study import grid
from ..definitions.stopping import StopRule
from ..errors import LorasweepError
from .decoder import BIAS_KEYS, KVCache, DecoderWeights, add_bias, apply_repetition_penalty, attend, decoder_weights, \
    draw, rope_for, samples_from_tokens
from .engines import FastEngine
from .faults import fault_for, inject
from .run import DTYPES, NonFiniteError, check_finite, held_out_texts, load_policy, load_task, noise_record, \
    prepare_device, prompt_batches, samples_path, step_record, synchronize, wait_at_barrier
from .sampler import DROP_FRACTION

# the projections a stacked decoder merges, in the order decoder_weights fuses them
FUSED_PROJECTIONS = {"qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")), "o": ("self_attn", ("o_proj",)),
                     "gate_up": ("mlp", ("gate_proj", "up_proj")), "down": ("mlp", ("down_proj",))}


# ---- the stacked decoder --------------------------------------------------------------------


def fused_hidden_states(w: DecoderWeights, tokens: torch.Tensor, start: int = 0, cache: KVCache = None):
    """``decoder.hidden_states`` for K runs at once: ``tokens`` (K, batch, length) -> (K, batch, length, hidden).

    ``w``'s projection matrices are stacked (K, out, in), one per run; embedding,
    norms and lm head are the shared base's. The cache, if any, holds K x batch
    rows, run-major.
    """
    runs, batch, length = tokens.shape
    heads, kv_heads, dim = w.num_heads, w.num_kv_heads, w.head_dim
    cos, sin = rope_for(w, start, length, cache)
    x = F.embedding(tokens, w.embed).view(runs, batch * length, -1)
    for i, layer in enumerate(w.layers):
        h = F.rms_norm(x, x.shape[-1:], layer["ln_attn"], w.rms_eps)
        qkv = add_bias(torch.bmm(h, layer["qkv"].transpose(1, 2)), layer.get("qkv_bias"))
        attn = attend(w, qkv.view(runs * batch, length, heads + 2 * kv_heads, dim), i, start, cos, sin, cache)
        attn = attn.transpose(1, 2).reshape(runs, batch * length, heads * dim)
        x = add_bias(torch.baddbmm(x, attn, layer["o"].transpose(1, 2)), layer.get("o_bias"))
        h = F.rms_norm(x, x.shape[-1:], layer["ln_mlp"], w.rms_eps)
        gate, up = add_bias(torch.bmm(h, layer["gate_up"].transpose(1, 2)), layer.get("gate_up_bias")).chunk(2, dim=-1)
        x = add_bias(torch.baddbmm(x, F.silu(gate) * up, layer["down"].transpose(1, 2)), layer.get("down_bias"))
    return F.rms_norm(x, x.shape[-1:], w.norm, w.rms_eps).view(runs, batch, length, -1)


def fused_logits(w: DecoderWeights, tokens: torch.Tensor, start: int = 0, cache: KVCache = None):
    """Logits (K, batch, vocab) of the last position of ``tokens`` (K, batch, length)."""
    return F.linear(fused_hidden_states(w, tokens, start, cache)[:, :, -1], w.lm_head)


@torch.no_grad()
def fused_sample(w: DecoderWeights, prompts: torch.Tensor, max_new_tokens: int, eos_id: int, temperature: float,
                 penalty: float, generators: list, static: bool = None, uniforms: list = None) -> list:
    """Completions for K runs, one ``decoder.Samples`` per run, each as its separate run would sample them.

    ``prompts`` (K, batch, prompt_len). ``static`` (default: on CUDA) draws each
    run's uniforms up front, (max_new_tokens, batch) from its generator, as
    ``static_decode`` does, and keeps every row to the end; otherwise each run
    draws one uniform per row of its own batch per token and its rows leave
    that batch by ``sample_dropping``'s rule. The pack's compute batch is the
    runs' batches, each padded to the longest (padding rows repeat a real row's
    state; their draws are never used). ``uniforms``, if given, a list of K
    (max_new_tokens, batch) tensors, replace the draws (tests): token t of row r
    of run k uses ``uniforms[k][t, r]``.
    """
    runs, batch, prompt_len = prompts.shape
    device = prompts.device
    static = device.type == "cuda" if static is None else static
    if static and uniforms is None:
        uniforms = [torch.rand(max_new_tokens, batch, generator=g, device=device) for g in generators]
    tokens = torch.full((runs, batch, prompt_len + max_new_tokens), eos_id, dtype=torch.long, device=device)
    tokens[:, :, :prompt_len] = prompts
    cache = KVCache(w, runs * batch, prompt_len + max_new_tokens)
    logits = fused_logits(w, prompts, 0, cache)  # (K, R, vocab); the layout below says which rows
    run_index = torch.arange(runs, device=device)[:, None]
    # layout[k, j]: the row of run k computed at column j; own[k]: run k's separate batch (rows, in order)
    layout = torch.arange(batch, device=device).expand(runs, batch).contiguous()
    own = [list(range(batch)) for _ in range(runs)]
    finished = torch.zeros(runs, batch, dtype=torch.bool, device=device)  # per column of the layout
    steps, live = [0] * runs, [True] * runs
    for t in range(max_new_tokens):
        width = layout.shape[1]
        previous = tokens[run_index, layout, : prompt_len + t].reshape(runs * width, -1)
        scores = apply_repetition_penalty(logits.reshape(runs * width, -1), previous, penalty)
        if temperature != 1.0:
            scores = scores / temperature
        if static:
            u = torch.stack([uniforms[k][t] for k in range(runs)]).gather(1, layout)
        else:
            u = torch.full((runs, width), 0.5, device=device)
            for k in range(runs):
                if live[k]:
                    count = len(own[k])
                    u[k, :count] = (torch.rand(count, generator=generators[k], device=device) if uniforms is None
                                    else uniforms[k][t, own[k]])
        token = draw(scores, uniforms=u.view(-1)).view(runs, width)
        token = torch.where(finished, torch.full_like(token, eos_id), token)
        finished |= token == eos_id
        if static:
            tokens[:, :, prompt_len + t] = token
            if t + 1 == max_new_tokens or (t + 1) % 16 == 0 and bool(finished.all()):
                steps = [t + 1] * runs
                break
            logits = fused_logits(w, token.unsqueeze(2), prompt_len + t, cache)
            continue
        # the dropping decode, each run by its own rule: write its real columns, then keep or drop its rows
        counts = torch.tensor([len(rows) if live[k] else 0 for k, rows in enumerate(own)], device=device)
        real = torch.arange(width, device=device)[None, :] < counts[:, None]
        tokens[run_index.expand(-1, width)[real], layout[real], prompt_len + t] = token[real]
        stopped = (finished & real).sum(1).tolist()  # the one host sync per token
        keep_cols, changed = [], False
        for k in range(runs):
            count = len(own[k]) if live[k] else 0
            if live[k] and (stopped[k] == count or t + 1 == max_new_tokens):
                live[k], steps[k], changed = False, t + 1, True
                keep_cols.append([])
            elif live[k] and stopped[k] >= max(1, DROP_FRACTION * count):
                cols = (~finished[k, :count]).nonzero().squeeze(1).tolist()
                own[k] = [own[k][c] for c in cols]
                keep_cols.append(cols)
                changed = True
            else:
                keep_cols.append(list(range(count)))
        if not any(live):
            break
        if changed:
            new_width = max(len(cols) for cols in keep_cols)
            cols = torch.tensor([c + [0] * (new_width - len(c)) for c in keep_cols], dtype=torch.long, device=device)
            layout, token, finished = layout.gather(1, cols), token.gather(1, cols), finished.gather(1, cols)
            cache.keep((run_index * width + cols).view(-1), prompt_len + t)
        logits = fused_logits(w, token.unsqueeze(2), prompt_len + t, cache)
    return [samples_from_tokens(tokens[k, :, prompt_len:], eos_id, steps[k]) for k in range(runs)]


def fused_completion_logprobs(w: DecoderWeights, prompt_ids, completions, mask, temperature: float = 1.0):
    """``grpo.completion_logprobs`` for K runs: (K, batch, length) log-probs, 0 where ``mask`` is False.

    One padded forward of all rows; only the states before real completion tokens
    go through the lm head and the softmax.
    """
    prompt_len, length = prompt_ids.shape[2], completions.shape[2]
    hidden = fused_hidden_states(w, torch.cat([prompt_ids, completions], dim=2))
    states = hidden[:, :, prompt_len - 1 : prompt_len - 1 + length][mask]
    logp = grpo.token_logprobs(states, w.lm_head, completions[mask], temperature)
    return logp.new_zeros(completions.shape).masked_scatter(mask, logp)


# ---- runs -----------------------------------------------------------------------------------


@dataclass
class Adapter:
    """One run's LoRA factors, in its peft model's parameter order (the order its clipping sums in)."""

    params: list  # leaf tensors, requires_grad
    factors: dict = field(default_factory=dict)  # (layer, projection) -> (A, B), the same tensors


def lora_modules(model):
    """(layer index, projection name, peft lora Linear) for every adapted projection of a peft Llama."""
    for i, layer in enumerate(model.get_base_model().model.layers):
        for part, names in FUSED_PROJECTIONS.values():
            for name in names:
                yield i, name, getattr(getattr(layer, part), name)


def adapter_of(model) -> Adapter:
    """Copies of a peft model's LoRA factors as fresh leaf tensors, in ``model.parameters()`` order."""
    copies = {id(p): p.detach().clone().requires_grad_(True) for p in model.parameters() if p.requires_grad}
    factors = {}
    for i, name, module in lora_modules(model):
        if "default" not in module.lora_A:
            raise LorasweepError(f"fused runs: layer {i} {name} has no LoRA adapter; "
                                 "fused packing needs training.lora_targets to cover the seven projections")
        factors[i, name] = (copies[id(module.lora_A["default"].weight)], copies[id(module.lora_B["default"].weight)])
    params = [copies[id(p)] for p in model.parameters() if p.requires_grad]
    if len(params) != 2 * len(factors):
        raise LorasweepError("fused runs: LoRA on modules other than the seven projections (e.g. lm_head) "
                             "is not supported; use packing: processes")
    return Adapter(params=params, factors=factors)


def stacked_weights(base: DecoderWeights, adapters: list, scaling: float, dtype=None) -> DecoderWeights:
    """The K runs' merged weights, (K, out, in) per projection; differentiable in the adapters' factors.

    Each run's matrix is ``W + (B @ A) * scaling``, the sum peft's merge and the
    worker's decoder form (``decoder._effective_weight``).
    """
    layers = []
    for i, layer in enumerate(base.layers):
        merged = {}
        for key, (_part, names) in FUSED_PROJECTIONS.items():
            deltas = [torch.bmm(torch.stack([a.factors[i, name][1] for a in adapters]),
                                torch.stack([a.factors[i, name][0] for a in adapters])) * scaling for name in names]
            merged[key] = layer[key].unsqueeze(0) + torch.cat(deltas, dim=1)
        merged["ln_attn"], merged["ln_mlp"] = layer["ln_attn"], layer["ln_mlp"]
        merged.update({key: layer.get(key) for key in BIAS_KEYS})  # the base's, shared by every run
        if dtype is not None:
            merged = {key: None if value is None else value.to(dtype) for key, value in merged.items()}
        layers.append(merged)
    if dtype is None:
        return replace(base, layers=layers)
    return replace(base, layers=layers, embed=base.embed.to(dtype), norm=base.norm.to(dtype),
                   lm_head=base.lm_head.to(dtype))


def run_weights(base: DecoderWeights, adapter: Adapter, scaling: float) -> DecoderWeights:
    """One run's plain merged weights (fp32, no graph), as ``decoder_weights`` of its peft model gives them."""
    with torch.no_grad():
        layers = []
        for i, layer in enumerate(base.layers):
            merged = {key: layer.get(key) for key in ("ln_attn", "ln_mlp", *BIAS_KEYS)}
            for key, (_part, names) in FUSED_PROJECTIONS.items():
                rows, start = [], 0
                for name in names:
                    a, b = adapter.factors[i, name]
                    rows.append(layer[key][start : start + b.shape[0]] + (b @ a) * scaling)
                    start += b.shape[0]
                merged[key] = torch.cat(rows)
            layers.append(merged)
    return replace(base, layers=layers)


@dataclass
class Run:
    seed: int
    lr: float
    adapter: Adapter
    optimizer: torch.optim.Optimizer
    prompt_order: object
    sampling: torch.Generator
    fault: dict
    out_path: Path
    partial: Path
    steps_file: object = None
    tracker: object = None
    step: int = 0
    training: bool = True


def train_fused(spec: dict, log=print) -> list:
    """Run the pack ``spec["runs"]`` (each {seed, lr, steps_out}) to the end; returns the steps paths.

    The rest of the spec is a worker's (``worker.train``); ``spec["barrier"]``, if
    any, is waited at under the first run's seed.
    """
    t = spec["training"]
    device = spec["device"]
    rank, batch_size = spec["cell"]["rank"], spec["cell"]["batch_size"]
    group = t["generations_per_prompt"]
    prompts_per_step = batch_size // group
    runs_spec = spec["runs"]
    seeds = [r["seed"] for r in runs_spec]
    if len(set(seeds)) != len(seeds):
        raise LorasweepError(f"fused runs: seeds {seeds} repeat one")

    prepare_device(spec, "fused worker")
    dtype = DTYPES[t["dtype"]]

    task = load_task(spec, device)
    tokenizer, eos_id = task.tokenizer, task.eos_id
    train_prompts, held_out = task.train_prompts, task.held_out

    stop_at_target = spec["mode"] == grid.TO_TARGET
    runs, base, scaling = [], None, None
    for r in runs_spec:
        torch.manual_seed(r["seed"])  # the LoRA init of a separate worker with this seed
        model = load_policy(spec["base_dir"], rank, t["lora_targets"], device)
        adapter = adapter_of(model)
        if base is None:  # the frozen base (and the KL's reference), taken once
            with torch.no_grad(), model.disable_adapter():
                base = decoder_weights(model)
                reference = decoder_weights(model, dtype)
            scaling = next(module.scaling["default"] for _, _, module in lora_modules(model))
            if base.lm_head.requires_grad:
                raise LorasweepError("fused runs: lm_head must not carry LoRA")
        del model
        out_path = Path(r["steps_out"])
        partial = out_path.with_name(out_path.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        runs.append(Run(
            seed=r["seed"], lr=r["lr"], adapter=adapter,
            optimizer=torch.optim.AdamW(adapter.params, lr=r["lr"], weight_decay=t["weight_decay"]),
            prompt_order=prompt_batches(len(train_prompts), prompts_per_step, torch.Generator().manual_seed(r["seed"])),
            sampling=torch.Generator(device=device).manual_seed(r["seed"]),
            fault=fault_for({**spec, "seed": r["seed"]}),
            out_path=out_path, partial=partial,
            tracker=StopRule(t["target"], t["window"], t.get("early_steps", 0)) if stop_at_target else None,
        ))
    log(f"fused worker seeds {', '.join(map(str, seeds))}: rank {rank}, bs {batch_size} ({prompts_per_step} prompts x "
        f"{group}), lr {', '.join(formatting.lr(r.lr) for r in runs)}, device {device}, "
        f"threads {torch.get_num_threads()}, up to {spec['steps']} steps")

    wait_at_barrier(spec.get("barrier"), seeds[0])
    try:
        for run in runs:
            run.steps_file = open(run.partial, "w", encoding="utf-8")
        for step in range(1, spec["steps"] + 1):
            active = [run for run in runs if run.training]
            if not active:
                break
            _fused_step(active, step, spec, train_prompts, base, reference, scaling, dtype, eos_id, task.score,
                        tokenizer, log)
        for run in runs:
            if stop_at_target and run.training:
                log(f"seed {run.seed}: target {t['target']} not reached in {spec['steps']} steps (censored)")
    finally:
        for run in runs:
            if run.steps_file is not None:
                run.steps_file.close()

    if stop_at_target:  # after the last step's timing, for every run: it never counts in a step time
        for run in runs:
            texts = held_out_texts(FastEngine, run_weights(base, run.adapter, scaling), held_out, tokenizer, t, device)
            measures = degeneracy.measure([s["completion"] for s in texts])
            atomic.write_json(samples_path(run.out_path, run.seed),
                              {"seed": run.seed, "step": run.step, "target": t["target"],
                               "reached_target": run.tracker.reached, **measures, "samples": texts})
            log(f"seed {run.seed}: held-out samples after step {run.step}: {measures['distinct_first']} of "
                f"{measures['samples']} first sentences distinct, mean Jaccard {measures['jaccard']:.3f}")
    for run in runs:
        os.replace(run.partial, run.out_path)
    return [run.out_path for run in runs]


def _fused_step(active, step, spec, train_prompts, base, reference, scaling, dtype, eos_id, score, tokenizer, log):
    """One step of every run still training: generate, score, update, record."""
    t = spec["training"]
    device, group = spec["device"], t["generations_per_prompt"]
    for run in active:
        inject(run.fault, step, "start")
    synchronize(device)
    t_start, t0 = time.time(), time.perf_counter()

    # generate: the runs' prompts (each from its own order), all rows in one decode
    prompt_ids = torch.stack([train_prompts[next(run.prompt_order).to(device)].repeat_interleave(group, dim=0)
                              for run in active])
    weights = stacked_weights(base, [run.adapter for run in active], scaling, dtype)
    samples = fused_sample(weights, prompt_ids, t["max_new_tokens"], eos_id, t["temperature"],
                           t["repetition_penalty"], [run.sampling for run in active])
    synchronize(device)
    t1 = time.perf_counter()

    # score: per run, its rewards and group-relative advantages
    rows = [s.completions.tolist() for s in samples]
    rewards, advantages = [], []
    for run, sample_k, rows_k in zip(active, samples, rows):
        r = score(prompt_ids[len(rewards)], rows_k, sample_k.lengths, step)
        r = inject(run.fault, step, "reward", r)
        rewards.append(r)
        advantages.append(grpo.group_advantages(r, group).to(device))
    t2 = time.perf_counter()

    # update: the completions padded to the longest run's, one forward for the policies, one for the reference
    length = max(s.completions.shape[1] for s in samples)
    completions = torch.stack([F.pad(s.completions, (0, length - s.completions.shape[1]), value=eos_id)
                               for s in samples])
    mask = torch.stack([F.pad(s.mask, (0, length - s.mask.shape[1]), value=False) for s in samples])
    halves = (grpo.group_halves(prompt_ids.shape[1], t["generations_per_prompt"])
              if grpo.noise_scale_step(t, step) else None)
    parts = [_pack_losses(active, samples, step, weights, reference, prompt_ids, completions, mask, advantages, t, rows)
             for rows in (halves or [None])]
    if halves is None:
        losses, kls = parts[0]
        torch.stack(losses).sum().backward()  # disjoint parameters: each run gets its own loss's gradient
        noises = [{} for _ in active]
    else:  # the noise scale's two halves of groups, per run (docs/numbers.md, definition 8)
        (losses_a, kls_a), (losses_b, kls_b) = parts
        ws = [grpo.half_weights(t["loss_type"], s.mask[halves[0]], s.mask[halves[1]]) for s in samples]
        norms = grpo.backward_in_two_halves(losses_a, losses_b, [w[0] for w in ws], [w[1] for w in ws],
                                            [run.adapter.params for run in active])
        losses = [(wa * la + wb * lb).detach() for (wa, wb), la, lb in zip(ws, losses_a, losses_b)]
        tokens = [[float(s.mask[rows].sum()) for rows in halves] for s in samples]
        kls = [(ka * ta + kb * tb) / max(1.0, ta + tb) for ka, kb, (ta, tb) in zip(kls_a, kls_b, tokens)]
        groups = prompt_ids.shape[1] // t["generations_per_prompt"]
        noises = [noise_record(small, big, len(halves[0]) // t["generations_per_prompt"], groups)
                  for small, big in norms]
    grad_norms = []
    for run, r, loss in zip(active, rewards, losses):
        inject(run.fault, step, "grad", run.adapter.params)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.adapter.params, t["grad_clip"])
        try:
            check_finite(step, reward=r.mean().item(), loss=loss.item(), grad_norm=grad_norm.item())
        except NonFiniteError as error:
            raise NonFiniteError(f"seed {run.seed}: {error}") from None
        grad_norms.append(grad_norm)
    step_lrs = []
    for run in active:
        step_lr = grpo.scheduled_lr(run.lr, step - 1, t["lr_schedule"], t["schedule_steps"])
        for param_group in run.optimizer.param_groups:
            param_group["lr"] = step_lr
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        step_lrs.append(step_lr)
    synchronize(device)
    t3 = time.perf_counter()

    stop_at_target = spec["mode"] == grid.TO_TARGET
    for i, run in enumerate(active):
        s, r = samples[i], rewards[i]
        run.step = step
        stop = run.tracker.add(r.mean().item()) if stop_at_target else False
        trailing = run.tracker.trailing if stop_at_target else None
        record = step_record(step, r, losses[i], kls[i], step_lrs[i], grad_norms[i], s, (t0, t1, t2, t3), t_start,
                             trailing, noises[i])
        run.steps_file.write(json.dumps(record, sort_keys=True) + "\n")
        run.steps_file.flush()
        if t["sample_every"] and step % t["sample_every"] == 0 or step == 1:
            text = tokenizer.decode(prompt_ids[i, 0].tolist() + rows[i][0][: s.lengths[0]])
            log(f"  seed {run.seed}: sample at step {step}: {text!r}")
        if step % 10 == 0 or step == 1:
            trail = "n/a" if trailing is None else f"{trailing:.3f}"
            log(f"seed {run.seed} step {step}: reward {record['reward_mean']:.3f} (trailing {trail}), "
                f"kl {record['kl']:.3f}, {record['step_s']:.3f} s/step for {len(active)} run(s)")
        if stop_at_target and run.tracker.reached_at == step:
            log(f"seed {run.seed}: reached target {t['target']} at step {step}")
        if stop:
            log(f"seed {run.seed}: stops after step {step}; it leaves the pack")
            run.training = False


def _pack_losses(active, samples, step, weights, reference, prompt_ids, completions, mask, advantages, t, rows=None):
    """Each run's (loss, KL) over the step's rows (``rows``: a subset of every run's rows, for the noise scale)."""
    if rows is not None:
        prompt_ids, completions, mask = prompt_ids[:, rows], completions[:, rows], mask[:, rows]
    logp = fused_completion_logprobs(weights, prompt_ids, completions, mask, t["temperature"])
    with torch.no_grad():
        k, b = len(active), prompt_ids.shape[1]
        ref_logp = grpo.completion_logprobs(reference, prompt_ids.reshape(k * b, -1), completions.reshape(k * b, -1),
                                            mask.reshape(k * b, -1), t["temperature"]).view(k, b, -1)
    losses, kls = [], []
    for i, (run, s) in enumerate(zip(active, samples)):
        n = s.completions.shape[1]
        run_mask = s.mask if rows is None else s.mask[rows]
        run_advantages = advantages[i] if rows is None else advantages[i][rows]
        loss, kl = grpo.grpo_loss(logp[i, :, :n], ref_logp[i, :, :n], run_advantages, run_mask, t["beta"],
                                  t["loss_type"], t["max_new_tokens"])
        losses.append(inject(run.fault, step, "loss", loss))
        kls.append(kl)
    return losses, kls


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    train_fused(spec, log=lambda msg: print(msg, flush=True))
    return 0

"""The fixed-shape decode (the GPU's) against the dropping decode (the CPU's), on the CPU.

Tests marked ``gpu`` need CUDA: they are collected everywhere and skipped without it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lorasweep.training import grpo
from lorasweep.training import static_decode as sd
from lorasweep.training.decoder import apply_repetition_penalty, decoder_weights
from lorasweep.training.sampler import sample, sample_dropping
from test_sampler import tiny_policy

ROOT = Path(__file__).resolve().parent.parent
EOS = 1
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def eos_prone_weights(seed=0, eos_scale=4.0):
    """The tiny policy's merged weights with the eos logit scaled, so that rows stop at varied steps."""
    model = tiny_policy(seed)
    with torch.no_grad():
        w = decoder_weights(model)
    w.lm_head = w.lm_head.clone()
    w.lm_head[EOS] *= eos_scale
    return w


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 6, 17])
def test_static_decode_emits_the_tokens_of_the_dropping_decode(seed, batch):
    w = eos_prone_weights(seed)
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, 50, (batch, 5), generator=g)
    uniforms = torch.rand(24, batch, generator=g)
    a = sample_dropping(w, prompts, 24, EOS, 1.0, 1.1, uniforms=uniforms)
    b = sd.sample_static(w, prompts, 24, EOS, 1.0, 1.1, uniforms=uniforms, graph=False, check_every=4)
    assert torch.equal(a.completions, b.completions)
    assert torch.equal(a.mask, b.mask)
    assert a.lengths == b.lengths


def test_the_equivalence_cases_cover_rows_stopping_at_different_steps_and_all_stopping():
    """The cases above are not vacuous: rows stop at several different steps, and some
    batches stop altogether before the last token (the early exit of both decodes)."""
    stop_steps, early_batches = set(), 0
    for seed in (0, 1, 2):
        w = eos_prone_weights(seed)
        g = torch.Generator().manual_seed(seed)
        for batch in (1, 6, 17):
            prompts = torch.randint(2, 50, (batch, 5), generator=g)
            uniforms = torch.rand(24, batch, generator=g)
            out = sample_dropping(w, prompts, 24, EOS, 1.0, 1.1, uniforms=uniforms)
            stop_steps |= {n for n in out.lengths if n < 24}
            early_batches += out.completions.shape[1] < 24
    assert len(stop_steps) >= 5
    assert early_batches >= 1


def test_temperature_and_no_penalty_also_agree():
    w = eos_prone_weights(3, eos_scale=3.0)
    g = torch.Generator().manual_seed(3)
    prompts = torch.randint(2, 50, (9, 4), generator=g)
    uniforms = torch.rand(16, 9, generator=g)
    for temperature, penalty in ((0.7, 1.0), (1.3, 1.2)):
        a = sample_dropping(w, prompts, 16, EOS, temperature, penalty, uniforms=uniforms)
        b = sd.sample_static(w, prompts, 16, EOS, temperature, penalty, uniforms=uniforms, graph=False, check_every=0)
        assert torch.equal(a.completions, b.completions) and a.lengths == b.lengths


def test_the_presence_mask_penalises_as_hf_does():
    """Worked example: penalty 2, tokens 0 and 1 seen (0 twice); 2.0 -> 1.0, -2.0 -> -4.0, 1.0 stays."""
    w = eos_prone_weights()
    s = sd.new_state(w, 1, 3, 2, EOS, 1.0, 2.0)
    vocab = w.lm_head.shape[0]
    prompts = torch.tensor([[0, 1, 0]])
    sd.prefill(w, s, prompts, torch.zeros(2, 1))
    assert s.presence[0].nonzero().flatten().tolist() == [0, 1]
    logits = torch.zeros(1, vocab)
    logits[0, :3] = torch.tensor([2.0, -2.0, 1.0])
    penalised = torch.where(s.presence, torch.where(logits < 0, logits * 2.0, logits / 2.0), logits)
    assert penalised[0, :3].tolist() == [1.0, -4.0, 1.0]
    assert torch.equal(penalised, apply_repetition_penalty(logits, prompts, 2.0))


def test_the_step_logits_match_the_hf_model_with_the_adapter_on_and_off():
    model = tiny_policy()
    ids = torch.randint(2, 50, (3, 9))
    for adapter in (True, False):
        with torch.no_grad():
            if adapter:
                reference, w = model(input_ids=ids).logits, decoder_weights(model)
            else:
                with model.disable_adapter():
                    reference, w = model(input_ids=ids).logits, decoder_weights(model)
        s = sd.new_state(w, 3, 5, 4, EOS, 1.0, 1.0)
        sd.prefill(w, s, ids[:, :5], torch.zeros(4, 3))
        assert torch.allclose(s.logits, reference[:, 4], atol=1e-5)
        with torch.no_grad():
            for t in range(5, 9):
                logits = sd.step_logits(w, s, ids[:, t])
                assert torch.allclose(logits, reference[:, t], atol=1e-5), (adapter, t)
                s.pos.add_(1)


def test_the_decode_step_traces_as_one_graph():
    """The proxy, on the CPU, for "capturable as a CUDA graph": fullgraph=True fails on any graph break,
    and the traced step emits what the eager one does."""
    torch._dynamo.reset()
    w = eos_prone_weights()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, 50, (4, 5), generator=g)
    uniforms = torch.rand(6, 4, generator=g)
    eager = sd.new_state(w, 4, 5, 6, EOS, 1.0, 1.1)
    traced = sd.new_state(w, 4, 5, 6, EOS, 1.0, 1.1)
    sd.prefill(w, eager, prompts, uniforms)
    sd.prefill(w, traced, prompts, uniforms)
    step = torch.compile(sd.decode_step, fullgraph=True, backend="eager", dynamic=False)
    with torch.no_grad():
        for _ in range(6):
            sd.decode_step(w, eager)
            step(w, traced)
    assert torch.equal(eager.tokens, traced.tokens)
    assert int(traced.pos) == 11
    torch._dynamo.reset()


def test_a_reused_decode_state_is_reset_by_each_generation():
    """The state (and on CUDA the graph) lives across a worker's steps: a generation after another one
    emits what it emits first, and the graph's weight buffers follow the weights they are loaded with."""
    w = eos_prone_weights()
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(2, 50, (6, 5), generator=g) for _ in range(2)]
    uniforms = [torch.rand(12, 6, generator=g) for _ in range(2)]
    first = sd.sample_static(w, prompts[0], 12, EOS, 1.0, 1.1, uniforms=uniforms[0], graph=False)
    sd.sample_static(w, prompts[1], 12, EOS, 1.0, 1.1, uniforms=uniforms[1], graph=False)
    again = sd.sample_static(w, prompts[0], 12, EOS, 1.0, 1.1, uniforms=uniforms[0], graph=False)
    assert torch.equal(first.completions, again.completions) and first.lengths == again.lengths
    buffers = sd.static_weights(eos_prone_weights(seed=9))
    sd.copy_weights(buffers, w)
    state = sd.new_state(w, 6, 5, 12, EOS, 1.0, 1.1)
    sd.prefill(buffers, state, prompts[0], uniforms[0])
    for _ in range(12):
        sd.decode_step(buffers, state)
    assert torch.equal(sd.samples_from_tokens(state.tokens[:, 5:], EOS, 12).completions, first.completions)


def test_a_worker_trains_with_the_static_decode_and_the_padded_update(tmp_path, monkeypatch):
    """The CUDA path's decode and update, driven by the real worker loop, on the CPU (without the graph)."""
    from lorasweep.training import engines, worker

    calls = []

    def static(*args):
        calls.append(1)
        return sd.sample_static(*args, graph=False)

    monkeypatch.setattr(engines, "fast_sample", static)
    monkeypatch.setattr(grpo, "completion_logprobs", grpo.padded_completion_logprobs)
    base = tiny_base(tmp_path)
    from lorasweep.bench.specs import worker_spec

    spec = worker_spec(base, tmp_path / "steps.jsonl", device="cpu", batch_size=8, group=4, tokens=6, rank=4, steps=2)
    records = [json.loads(line) for line in worker.train(spec.to_dict(), log=lambda m: None).read_text().splitlines()]
    assert len(calls) == 2 and [r["step"] for r in records] == [1, 2]
    assert all(0 < r["tokens"] <= 8 * 6 and r["loss"] == r["loss"] for r in records)


def test_sample_on_the_cpu_is_the_dropping_decode():
    w = eos_prone_weights()
    prompts = torch.randint(2, 50, (6, 5), generator=torch.Generator().manual_seed(5))
    a = sample(w, prompts, 12, EOS, 1.0, 1.1, torch.Generator().manual_seed(7))
    b = sample_dropping(w, prompts, 12, EOS, 1.0, 1.1, torch.Generator().manual_seed(7))
    assert torch.equal(a.completions, b.completions)


def test_the_padded_update_batch_gives_the_chunked_log_probs():
    model = tiny_policy()
    w = decoder_weights(model)
    prompts = torch.randint(2, 50, (10, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        samples = sample_dropping(eos_prone_weights(), prompts, 14, EOS, 1.0, 1.1, torch.Generator().manual_seed(2))
    assert len(set(samples.lengths)) > 2
    chunked = grpo.completion_logprobs(w, prompts, samples.completions, samples.mask)
    padded = grpo.padded_completion_logprobs(w, prompts, samples.completions, samples.mask)
    assert torch.allclose(chunked, padded, atol=1e-5)
    assert (padded[~samples.mask] == 0).all() and (padded[samples.mask] < 0).all()
    # and the gradient reaches the adapter the same way
    grads = []
    for fn in (grpo.completion_logprobs, grpo.padded_completion_logprobs):
        model.zero_grad()
        fn(decoder_weights(model), prompts, samples.completions, samples.mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_bf16_weights_keep_the_adapter_in_fp32():
    model = tiny_policy()
    w = decoder_weights(model, torch.bfloat16)
    assert w.embed.dtype == torch.bfloat16 and w.layers[0]["qkv"].dtype == torch.bfloat16
    w.layers[0]["qkv"].float().sum().backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n and "layers.0.self_attn.q_proj" in n][0]
    assert lora.dtype == torch.float32 and lora.grad is not None


# ---- on a GPU --------------------------------------------------------------------------------


def tiny_base(tmp_path) -> Path:
    """A random-init tiny base folder (model, tokenizer, prompts), as the device check builds."""
    from lorasweep.bench.tiny_base import make_tiny_base

    return make_tiny_base(tmp_path / "base")


# The MPS test runs first: its daemon should start on a GPU that this process holds no context on yet.


@pytest.mark.gpu
@cuda
@pytest.mark.skipif(shutil.which("nvidia-cuda-mps-control") is None, reason="needs nvidia-cuda-mps-control")
def test_a_two_worker_cell_runs_under_a_real_mps_daemon(tmp_path):
    from lorasweep.bench.specs import cell_spec

    base = tiny_base(tmp_path)
    spec = cell_spec(base, device="cuda", n=2, batch_size=32, group=16, tokens=32, rank=8, steps=4, mps="required")
    out = tmp_path / "cell"
    proc = subprocess.run(
        [sys.executable, "-m", "lorasweep", "cell", "--spec", spec.to_json(), "--steps-dir", str(out / "steps"),
         "--summary", str(out / "summary.json"), "--log-dir", str(out / "logs"), "--cores", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    mps = summary["mps"]
    assert mps["state"] == "running", mps  # a daemon of ours served the workers
    assert mps["verification"]["ok"] is True and len(mps["verification"]["expected"]) == 2, mps
    assert set(mps["verification"]["expected"]) <= set(mps["verification"]["clients"]), mps
    assert mps["stop"]["stopped"] is True, mps
    assert len(summary["workers"]) == 2


@pytest.mark.gpu
@cuda
def test_a_worker_runs_five_steps_on_cuda(tmp_path):
    from lorasweep.training.worker import train

    base = tiny_base(tmp_path)
    from lorasweep.bench.specs import worker_spec

    spec = worker_spec(base, tmp_path / "steps.jsonl", device="cuda", batch_size=32, group=16, tokens=32,
                       rank=8, steps=5)
    path = train(spec.to_dict(), log=lambda m: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["tokens"] > 0 and r["gen_s"] > 0 for r in records)


@pytest.mark.gpu
@cuda
def test_graph_replay_equals_the_eager_static_decode_on_cuda():
    w = eos_prone_weights()
    w = type(w)(**{**vars(w), "embed": w.embed.cuda(), "norm": w.norm.cuda(), "lm_head": w.lm_head.cuda(),
                   "inv_freq": w.inv_freq.cuda(),
                   "layers": [{k: v.cuda() for k, v in layer.items()} for layer in w.layers]})
    torch.set_float32_matmul_precision("highest")
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, 50, (32, 5), generator=g).cuda()
    uniforms = torch.rand(24, 32, generator=g).cuda()
    eager = sd.sample_static(w, prompts, 24, EOS, 1.0, 1.1, uniforms=uniforms, graph=False)
    graph = sd.sample_static(w, prompts, 24, EOS, 1.0, 1.1, uniforms=uniforms, graph=True)
    again = sd.sample_static(w, prompts, 24, EOS, 1.0, 1.1, uniforms=uniforms, graph=True)  # a replayed, reused graph
    assert torch.equal(eager.completions, graph.completions) and eager.lengths == graph.lengths
    assert torch.equal(graph.completions, again.completions)
    # and the CPU's dropping decode on the same draws (fp32, no TF32): the same tokens, but for a row where
    # a uniform falls within rounding of a CDF step (some 1e-5 per token here; one row allowed)
    cpu = sample_dropping(eos_prone_weights(), prompts.cpu(), 24, EOS, 1.0, 1.1, uniforms=uniforms.cpu())
    width = min(cpu.completions.shape[1], graph.completions.shape[1])
    same = (cpu.completions[:, :width] == graph.completions.cpu()[:, :width]).all(1)
    assert int(same.sum()) >= 31, same

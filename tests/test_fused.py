"""Fused runs against separate runs with the same seeds (lorasweep/training/fused.py).

K = 3 runs with different seeds and lrs in one pack; each is compared with the
run a separate worker with its seed would take: the LoRA init, the logits, the
sampled tokens (on given draws and on each run's own generator, so that the
per-run draw streams are checked too, through rows leaving the batch), the
adapter gradients, and the first recorded step of a whole training run.

Later steps are not required to be bit-identical (see the module docstring of
lorasweep/training/fused.py): ``test_later_steps_on_the_cpu`` records how far apart
they are after a few steps rather than asserting equality.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lorasweep.training import fused, grpo, run, worker

from lorasweep.study import grid
from lorasweep.study.cellspec import FusedRun, FusedSpec, WorkerSpec
from lorasweep.training.decoder import decoder_weights, forward
from lorasweep.training.sampler import sample_dropping

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [3, 7, 11]
LRS = [1e-3, 3e-3, 5e-4]
RANK = 4


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A random-init tiny base folder (model, tokenizer, prompts), as the device check builds."""
    from lorasweep.bench.tiny_base import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("fused") / "base")


EOS = 1


def policies(base: Path) -> list:
    """The separate runs' peft models, made as the worker makes them (seed, then load), with two changes
    shared by all: lora_B set to small seeded values, so that the adapters matter at step 1 (peft starts
    B at zero), and the eos token's row of the tied embedding shifted, so that random-init rows stop
    early and leave their batches (the dropping decode's bookkeeping is exercised)."""
    models = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = run.load_policy(str(base / "model"), RANK, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"], "cpu")
        g = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            model.get_base_model().lm_head.weight[EOS] += 0.6
        models.append(model)
    return models


def pack(models):
    with torch.no_grad(), models[0].disable_adapter():
        base_w = decoder_weights(models[0])
    scaling = next(m.scaling["default"] for _, _, m in fused.lora_modules(models[0]))
    adapters = [fused.adapter_of(m) for m in models]
    return base_w, scaling, adapters


def prompts_for(base: Path, batch: int) -> torch.Tensor:
    from lorasweep.base.prompts import read_prompts

    bank = torch.tensor(read_prompts(str(base / "prompts.jsonl")))
    return torch.stack([bank[k * batch : (k + 1) * batch] for k in range(len(SEEDS))])  # (K, batch, 8)


def test_the_lora_init_is_the_separate_workers(base):
    """Without the test's changes: run k's factors are exactly what torch.manual_seed(seed) + peft give."""
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = run.load_policy(str(base / "model"), RANK, ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"], "cpu")
        adapter = fused.adapter_of(model)
        expected = [p for p in model.parameters() if p.requires_grad]
        assert len(adapter.params) == len(expected) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
        assert all(torch.equal(a, b) for a, b in zip(adapter.params, expected))
    # different seeds, different A
    first = [fused.adapter_of(m).params[0] for m in policies(base)[:2]]
    assert not torch.equal(first[0], first[1])


def test_logits_at_step_1_agree_to_1e_5(base):
    models = policies(base)
    base_w, scaling, adapters = pack(models)
    stacked = fused.stacked_weights(base_w, adapters, scaling)
    prompts = prompts_for(base, 6)
    with torch.no_grad():
        logits = fused.fused_logits(stacked, prompts)
        for k, model in enumerate(models):
            separate = forward(decoder_weights(model), prompts[k], 0, None)
            assert separate.abs().max() > 0.1  # a real comparison, not of zeros
            torch.testing.assert_close(logits[k], separate, atol=1e-5, rtol=0)
        # the runs' weights differ, so their logits do
        assert (logits[0] - logits[1]).abs().max() > 1e-3


def test_sampled_tokens_at_step_1_are_identical(base):
    models = policies(base)
    base_w, scaling, adapters = pack(models)
    stacked = fused.stacked_weights(base_w, adapters, scaling)
    prompts = prompts_for(base, 8)
    tokens = 16
    weights = [decoder_weights(m) for m in models]
    # on the same given draws
    u = [torch.rand(tokens, 8, generator=torch.Generator().manual_seed(50 + k)) for k in range(3)]
    packed = fused.fused_sample(stacked, prompts, tokens, EOS, 1.0, 1.1, None, static=False, uniforms=u)
    for k in range(3):
        alone = sample_dropping(weights[k], prompts[k], tokens, EOS, 1.0, 1.1, uniforms=u[k])
        assert torch.equal(packed[k].completions, alone.completions) and packed[k].lengths == alone.lengths
    # on each run's own generator: the pack draws from it as the separate run does, row by row
    packed = fused.fused_sample(stacked, prompts, tokens, EOS, 1.0, 1.1,
                                [torch.Generator().manual_seed(s) for s in SEEDS], static=False)
    lengths = []
    for k, seed in enumerate(SEEDS):
        alone = sample_dropping(weights[k], prompts[k], tokens, EOS, 1.0, 1.1, torch.Generator().manual_seed(seed))
        assert torch.equal(packed[k].completions, alone.completions), k
        assert torch.equal(packed[k].mask, alone.mask) and packed[k].lengths == alone.lengths
        lengths += alone.lengths
    # rows stopped at different tokens, so rows left the batches mid-way and the runs' batches differed
    assert min(lengths) < tokens // 2 and max(lengths) == tokens
    # the static layout (CUDA's) gives the static decode's tokens on the same draws
    from lorasweep.training.static_decode import sample_static

    packed = fused.fused_sample(stacked, prompts, tokens, EOS, 1.0, 1.1, None, static=True, uniforms=u)
    for k in range(3):
        alone = sample_static(weights[k], prompts[k], tokens, EOS, 1.0, 1.1, uniforms=u[k], graph=False)
        assert torch.equal(packed[k].completions, alone.completions)


def test_adapter_gradients_at_step_1_agree_to_1e_5(base):
    models = policies(base)
    base_w, scaling, adapters = pack(models)
    prompts = prompts_for(base, 8)
    samples = fused.fused_sample(fused.stacked_weights(base_w, adapters, scaling), prompts, 16, EOS, 1.0, 1.1,
                                 [torch.Generator().manual_seed(s) for s in SEEDS], static=False)
    length = max(s.completions.shape[1] for s in samples)
    completions = torch.stack([torch.nn.functional.pad(s.completions, (0, length - s.completions.shape[1]), value=EOS)
                               for s in samples])
    mask = torch.stack([torch.nn.functional.pad(s.mask, (0, length - s.mask.shape[1])) for s in samples])
    rewards = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = grpo.completion_logprobs(base_w, prompts.view(24, -1), completions.view(24, -1), mask.view(24, -1))
    ref = ref.view(3, 8, -1)

    logp = fused.fused_completion_logprobs(fused.stacked_weights(base_w, adapters, scaling), prompts, completions, mask)
    losses = []
    for k, s in enumerate(samples):
        n = s.completions.shape[1]
        adv = grpo.group_advantages(rewards[k], 4)
        losses.append(grpo.grpo_loss(logp[k, :, :n], ref[k, :, :n], adv, s.mask, 0.02)[0])
    torch.stack(losses).sum().backward()

    for k, (model, s) in enumerate(zip(models, samples)):
        trainable = [p for p in model.parameters() if p.requires_grad]
        w = decoder_weights(model)
        logp_k = grpo.completion_logprobs(w, prompts[k], s.completions, s.mask)
        torch.testing.assert_close(logp[k, :, : s.completions.shape[1]].detach(), logp_k.detach(), atol=1e-5, rtol=0)
        loss, _ = grpo.grpo_loss(logp_k, ref[k, :, : s.completions.shape[1]], grpo.group_advantages(rewards[k], 4),
                                 s.mask, 0.02)
        torch.testing.assert_close(losses[k].detach(), loss.detach(), atol=1e-6, rtol=0)
        loss.backward()
        assert max(p.grad.abs().max().item() for p in trainable) > 1e-3  # real gradients, on A and on B
        for mine, theirs in zip(adapters[k].params, trainable):
            torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-5, rtol=0)
    # each run's gradient is its own: run 0's differs from run 1's
    assert not torch.allclose(adapters[0].params[1].grad, adapters[1].params[1].grad)


# ---- whole runs ---------------------------------------------------------------------------------


def fused_spec(base: Path, out: Path, steps: int, mode: str = grid.FIXED_STEPS, device: str = "cpu", fault=None,
               **training) -> FusedSpec:
    """A pack of the runs SEEDS at LRS: the device check's one-worker spec, its runs' records in ``out``."""
    from lorasweep.bench.specs import worker_spec

    one = worker_spec(base, out / "unused.jsonl", device, batch_size=8, group=4, tokens=12, rank=RANK, steps=steps)
    spec = one.cell_spec.with_training(degeneracy={**one.cell_spec.training["degeneracy"], "samples": 4}, **training)
    runs = [FusedRun(s, lr, str(out / f"seed{s}.jsonl")) for s, lr in zip(SEEDS, LRS)]
    return FusedSpec(spec.replace(mode=mode), runs, threads=one.threads, fault=fault)


def separate_records(spec: FusedSpec, out: Path) -> dict:
    """Each run of the pack trained alone by a worker (its seed, its lr): {seed: records}."""
    records = {}
    for run in spec.runs:
        alone = spec.cell_spec.replace(cell=dataclasses.replace(spec.cell_spec.cell, lr=run.lr))
        one = WorkerSpec(alone, seed=run.seed, threads=spec.threads, steps_out=str(out / f"alone{run.seed}.jsonl"))
        worker.train(one.to_dict(), log=lambda m: None)
        records[run.seed] = [json.loads(line) for line in Path(one.steps_out).read_text().splitlines()]
    return records


def test_a_pack_records_step_1_as_the_separate_runs_do(base, tmp_path, torch_settings):
    spec = fused_spec(base, tmp_path, steps=3)
    paths = fused.train_fused(spec.to_dict(), log=lambda m: None)
    alone = separate_records(spec, tmp_path)
    for path, run in zip(paths, spec.runs):
        mine = [json.loads(line) for line in path.read_text().splitlines()]
        theirs = alone[run.seed]
        assert [r["step"] for r in mine] == [1, 2, 3]
        assert set(mine[0]) == set(theirs[0])  # the worker's record format, key for key
        first, other = mine[0], theirs[0]
        assert first["tokens"] == other["tokens"] and first["completion_len_mean"] == other["completion_len_mean"]
        assert first["reward_mean"] == other["reward_mean"] and first["lr"] == other["lr"] == run.lr
        for key in ("loss", "kl", "grad_norm"):
            assert first[key] == pytest.approx(other[key], abs=1e-5), key
        # the noise scale's two halves (2 groups a step, every 4th update from the first): the pack's per run
        assert first["groups_small"] == other["groups_small"] == 1 and first["groups_big"] == 2
        for key in ("grad_sq_small", "grad_sq_big"):
            assert first[key] == pytest.approx(other[key], rel=1e-4), key
        assert "grad_sq_small" not in mine[1]  # step 2 is not a noise-scale update
        assert mine[1]["lr"] == pytest.approx(run.lr * (1 - 1 / spec.cell_spec.training["schedule_steps"]))
        # one step time for the whole pack: every run records the same
    times = [[json.loads(line)["step_s"] for line in p.read_text().splitlines()] for p in paths]
    assert times[0] == times[1] == times[2]


def test_later_steps_on_the_cpu(base, tmp_path, torch_settings):
    """Step 2 samples after one update whose inputs differ in the last bits; say how far apart step 2 is.

    Not bit-identical: the stacked merge and forward use ``bmm``, the worker ``mm``/``addmm``, and the
    pack's policy log-probs come from one padded forward, the worker's from length-sorted chunks;
    their sums differ in order. The test pins that the difference stays at rounding size after one
    AdamW step (tokens equal, loss to 1e-4) — AdamW normalises each coordinate by sqrt(v), so a
    relative rounding difference in a gradient becomes one in the update, and later a drawn token
    near a boundary of the inverse CDF can flip and the runs part.
    """
    spec = fused_spec(base, tmp_path, steps=2)
    paths = fused.train_fused(spec.to_dict(), log=lambda m: None)
    alone = separate_records(spec, tmp_path)
    for path, run in zip(paths, spec.runs):
        mine = json.loads(path.read_text().splitlines()[1])
        theirs = alone[run.seed][1]
        assert mine["tokens"] == theirs["tokens"] and mine["reward_mean"] == theirs["reward_mean"]
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-4)


def scripted_stop_rule(reached_by: dict, made: list):
    """A StopRule whose runs "reach" their target at the steps of ``reached_by`` (seed -> step), else never;
    the rules made are appended to ``made`` in the order of the pack's runs."""

    class Rule(fused.StopRule):
        def __init__(self, target, window, min_steps=0):
            super().__init__(target, window, min_steps)
            self.seed = SEEDS[len(made)]
            made.append(self)

        def add(self, reward):
            super().add(reward)
            if self.reached_at is None and self.steps >= reached_by.get(self.seed, 10**9):
                self.reached_at = self.steps
            return self.reached and self.steps >= self.min_steps

    return Rule


def test_a_run_that_reaches_its_target_leaves_the_pack_and_the_others_go_on(base, tmp_path, torch_settings,
                                                                            monkeypatch):
    # run 0 "reaches" its target at step 2; the others never do
    monkeypatch.setattr(fused, "StopRule", scripted_stop_rule({SEEDS[0]: 2}, []))
    spec = fused_spec(base, tmp_path, steps=4, mode=grid.TO_TARGET, target=0.9, window=2, early_steps=1)
    paths = fused.train_fused(spec.to_dict(), log=lambda m: None)
    steps = [[json.loads(line)["step"] for line in p.read_text().splitlines()] for p in paths]
    assert steps == [[1, 2], [1, 2, 3, 4], [1, 2, 3, 4]]
    for seed, step, reached in [(SEEDS[0], 2, True), (SEEDS[1], 4, False)]:
        samples = json.loads((tmp_path / f"samples_seed{seed}.json").read_text())
        assert samples["step"] == step and samples["reached_target"] is reached and len(samples["samples"]) == 4


def test_a_run_that_reaches_its_target_early_stays_in_the_pack_until_its_early_steps(base, tmp_path, torch_settings,
                                                                                    monkeypatch):
    made = []
    monkeypatch.setattr(fused, "StopRule", scripted_stop_rule({SEEDS[0]: 1}, made))  # run 0 at step 1
    spec = fused_spec(base, tmp_path, steps=4, mode=grid.TO_TARGET, target=0.9, window=2, early_steps=3)
    paths = fused.train_fused(spec.to_dict(), log=lambda m: None)
    steps = [[json.loads(line)["step"] for line in p.read_text().splitlines()] for p in paths]
    # run 0 trains on to step 3 (the early-reward stretch), then leaves; the others run all 4 steps
    assert steps == [[1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4]] and made[0].reached_at == 1


def test_a_non_finite_loss_in_one_run_stops_the_pack_naming_its_seed(base, tmp_path, torch_settings):
    spec = fused_spec(base, tmp_path, steps=4, fault={"kind": "nan_loss", "step": 2, "seed": SEEDS[1]})
    with pytest.raises(run.NonFiniteError) as error:
        fused.train_fused(spec.to_dict(), log=lambda m: None)
    assert str(error.value).startswith(f"seed {SEEDS[1]}: step 2: loss is nan; stopping this run before the update")
    assert not any(tmp_path.glob("seed*.jsonl"))  # nothing under a final name
    assert len((tmp_path / f"seed{SEEDS[0]}.jsonl.partial").read_text().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_pack_runs_on_cuda_and_its_tokens_are_the_static_decodes(base, tmp_path, torch_settings):
    from lorasweep.training.static_decode import sample_static

    models = [m.to("cuda") for m in policies(base)]
    base_w, scaling, adapters = pack(models)
    stacked = fused.stacked_weights(base_w, adapters, scaling)
    prompts = prompts_for(base, 16).cuda()
    u = [torch.rand(16, 16, generator=torch.Generator(device="cuda").manual_seed(k), device="cuda") for k in range(3)]
    packed = fused.fused_sample(stacked, prompts, 16, EOS, 1.0, 1.1, None, uniforms=u)
    for k, model in enumerate(models):
        alone = sample_static(decoder_weights(model), prompts[k], 16, EOS, 1.0, 1.1, uniforms=u[k], graph=False)
        assert torch.equal(packed[k].completions, alone.completions)
    spec = fused_spec(base, tmp_path, steps=3, device="cuda")
    for path in fused.train_fused(spec.to_dict(), log=lambda m: None):
        assert len(path.read_text().splitlines()) == 3

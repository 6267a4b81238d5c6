"""Dropping finished rows from a sampling batch keeps every remaining row with its own cache."""

import pytest
import torch

from lorasweep.training import sampler
from lorasweep.training.decoder import KVCache, decoder_weights
from lorasweep.training.sampler import sample
from test_sampler import tiny_policy


def test_keep_keeps_the_named_rows_in_the_named_order():
    w = decoder_weights(tiny_policy())
    cache = KVCache(w, 4, 6)
    cache.kv = torch.arange(cache.kv.numel(), dtype=cache.kv.dtype).view(cache.kv.shape)
    before = cache.kv.clone()
    cache.keep(torch.tensor([3, 1]), filled=4)
    assert cache.kv.shape[1] == 2
    assert torch.equal(cache.kv[:, 0, :, :4], before[:, 3, :, :4])
    assert torch.equal(cache.kv[:, 1, :, :4], before[:, 1, :, :4])


def greedy(w, prompts, eos_id, drop_fraction, monkeypatch):
    # a temperature this low makes the draw an argmax, so the random stream (whose length
    # follows the batch size) does not matter and dropping rows must change nothing; the
    # strong repetition penalty (prompt included) keeps the random tiny model from
    # repeating one token, so rows differ and stop at different steps
    monkeypatch.setattr(sampler, "DROP_FRACTION", drop_fraction)
    return sample(w, prompts, 14, eos_id=eos_id, temperature=1e-6, repetition_penalty=50.0,
                  generator=torch.Generator().manual_seed(0))


def test_dropping_finished_rows_changes_no_completion(monkeypatch):
    torch.manual_seed(1)
    w = decoder_weights(tiny_policy())
    prompts = torch.randint(2, 50, (8, 5))
    # an end token that stops some rows early, at different steps, and leaves others running
    free = greedy(w, prompts, eos_id=1, drop_fraction=1e9, monkeypatch=monkeypatch).completions.tolist()

    def first(row, token):
        return row.index(token) if token in row else None
    candidates = []
    for token in range(50):
        stops = [first(row, token) for row in free]
        stopped = [s for s in stops if s is not None and s < 12]
        if len(set(stopped)) >= 2 and stops.count(None) >= 2:
            candidates.append(token)
    assert candidates, "no token stops rows at different steps: pick another seed"
    eos = candidates[0]

    never_drop = greedy(w, prompts, eos, drop_fraction=1e9, monkeypatch=monkeypatch)
    drop_each_time = greedy(w, prompts, eos, drop_fraction=1e-9, monkeypatch=monkeypatch)
    assert torch.equal(drop_each_time.completions, never_drop.completions)
    assert drop_each_time.lengths == never_drop.lengths
    assert len(set(never_drop.lengths)) >= 3  # rows really stopped at different steps


def test_the_repetition_penalty_covers_the_prompt(monkeypatch):
    torch.manual_seed(2)
    w = decoder_weights(tiny_policy())
    prompts = torch.randint(2, 50, (16, 8))

    def first_tokens(penalty):
        out = sample(w, prompts, 1, eos_id=1, temperature=1e-6, repetition_penalty=penalty,
                     generator=torch.Generator().manual_seed(0))
        return out.completions[:, 0].tolist()

    in_prompt = [token in row for token, row in zip(first_tokens(1.0), prompts.tolist())]
    assert sum(in_prompt) >= 2  # unpenalised, the argmax often repeats a prompt token
    # a penalty this strong leaves a prompt token only where no other token has a positive logit
    assert not any(token in row for token, row in zip(first_tokens(1e9), prompts.tolist()))

"""Sampling completions from the decoder: the CPU's shrinking-batch decode, and the dispatch by device.

``transformers.generate`` spends most of its time in per-token overhead when the
model is this small, so the worker samples with a plain loop over ``decoder``'s
forward instead. Per token, the decoder runs one position for the rows still
generating; rows that have stopped are dropped from the batch as they accumulate,
the repetition penalty touches only the tokens a row has seen (HF's
gather/scatter), and the next token is drawn by inverting the cumulative
distribution with one uniform number per row (``torch.multinomial`` draws one
exponential per vocabulary entry, which cost more than the whole decoder here).
That is the CPU's decode; on CUDA ``sample`` hands over to the fixed-shape,
graph-captured decode of ``static_decode``, which emits the same tokens for the
same uniform draws.
"""

import torch

from .decoder import DecoderWeights, KVCache, Samples, apply_repetition_penalty, draw, forward, samples_from_tokens
from .static_decode import sample_static


# Stopped rows are dropped once they are this share of the rows still in the batch:
# each drop copies the KV cache, so waiting for a few pays for the copy.
DROP_FRACTION = 0.125


def sample(
    w: DecoderWeights,
    prompts: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    generator=None,
) -> Samples:
    """Sample completions for equal-length prompts until eos or ``max_new_tokens``.

    The decode depends on the device. On the CPU, ``sample_dropping``: arithmetic
    is what costs there, so finished rows leave the batch and the loop stops as
    soon as every row has. On CUDA, ``static_decode.sample_static``: the arithmetic
    of this model is negligible on a GPU and the cost is kernel launches and host
    round trips, so the shapes stay fixed and each token is one replay of a
    captured CUDA graph. Both emit the same tokens for the same uniform draws; each
    draws its own uniforms from ``generator`` (see ``static_decode``).
    """
    if prompts.device.type == "cuda":
        return sample_static(w, prompts, max_new_tokens, eos_id, temperature, repetition_penalty, generator)
    return sample_dropping(w, prompts, max_new_tokens, eos_id, temperature, repetition_penalty, generator)


@torch.no_grad()
def sample_dropping(
    w: DecoderWeights,
    prompts: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    generator=None,
    uniforms: torch.Tensor = None,
) -> Samples:
    """The shrinking-batch decode (the CPU's): rows leave the batch once stopped, one host sync per token.

    ``uniforms`` (max_new_tokens, batch), if given, replace the draws from
    ``generator``: token t of row r uses ``uniforms[t, r]`` (for the tests that
    compare decodes on the same draws).
    """
    batch, prompt_len = prompts.shape
    device = prompts.device
    cache = KVCache(w, batch, prompt_len + max_new_tokens)
    # every row's tokens so far (prompt, then completion); eos-padded after the stop
    tokens = torch.full((batch, prompt_len + max_new_tokens), eos_id, dtype=torch.long, device=device)
    tokens[:, :prompt_len] = prompts
    rows = torch.arange(batch, device=device)  # the rows still in the batch (cache row i is tokens row rows[i])
    finished = torch.zeros(batch, dtype=torch.bool, device=device)  # of the rows still in the batch

    logits = forward(w, prompts, 0, cache)
    steps = 0
    for t in range(max_new_tokens):
        logits = apply_repetition_penalty(logits, tokens[rows, : prompt_len + t], repetition_penalty)
        if temperature != 1.0:
            logits = logits / temperature
        token = draw(logits, generator, None if uniforms is None else uniforms[t, rows])
        token = torch.where(finished, torch.full_like(token, eos_id), token)
        tokens[rows, prompt_len + t] = token
        finished |= token == eos_id
        steps = t + 1
        # one host sync per token; it lets the batch shrink and stop early
        stopped = int(finished.sum())
        if stopped == len(rows) or t + 1 == max_new_tokens:
            break
        if stopped >= max(1, DROP_FRACTION * len(rows)):
            keep = (~finished).nonzero().squeeze(1)
            rows, token, finished = rows[keep], token[keep], finished[keep]
            cache.keep(keep, prompt_len + t)
        logits = forward(w, token.unsqueeze(1), prompt_len + t, cache)
    return samples_from_tokens(tokens[:, prompt_len:], eos_id, steps)

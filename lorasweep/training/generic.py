"""The generic engine: any ``AutoModelForCausalLM`` sampled and trained through its own modules.

For a base whose layout the fast decoder does not implement (``lorasweep.study.engine``:
GPT-2, GPT-NeoX, anything else), a run samples with the model's own forward and KV
cache (``past_key_values``) and takes its log-probabilities from the model's own
logits, with the peft adapter on (the policy) or off (the reference). Slower than the
fast engine, and never computed differently from the model: the same repetition
penalty, temperature and inverse-CDF draw as the fast decodes (``decoder``), one
uniform per row per token from the run's generator, every row kept to the end with
EOS after its stop. The model stays in eval mode, so that dropout layers of the base
never make the trained policy differ from the one that sampled.
"""

import inspect
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .decoder import apply_repetition_penalty, draw, samples_from_tokens

# Rows per forward of the log-probabilities: bounds the (rows, tokens, vocabulary) logits
# (a GPT-2 vocabulary is 50257 entries) to about 200 MB at 128 new tokens.
ROWS_PER_CHUNK = 8


class GenericPolicy:
    """A peft model as the engine's weights: what ``sample`` and ``completion_logprobs`` are called on.

    ``adapter`` False is the reference: the same model with the adapter disabled.
    """

    def __init__(self, model, adapter: bool = True):
        self.model = model.eval()
        self.adapter = adapter

    def reference(self) -> "GenericPolicy":
        return GenericPolicy(self.model, adapter=False)

    def _context(self):
        if self.adapter or not hasattr(self.model, "disable_adapter"):  # a plain model is its own reference
            return nullcontext()
        return self.model.disable_adapter()

    def logits(self, input_ids, past=None, keep: int = None):
        """The model's logits for ``input_ids`` (and its cache), the last ``keep`` positions only when it can."""
        kwargs = {"input_ids": input_ids, "use_cache": past is not None or keep == 1}
        if past is not None:
            kwargs["past_key_values"] = past
        if keep is not None and _takes_logits_to_keep(self.model):
            kwargs["logits_to_keep"] = keep
        with self._context():
            out = self.model(**kwargs)
        logits = out.logits if keep is None else out.logits[:, -keep:]
        return logits, getattr(out, "past_key_values", None)


def _takes_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.no_grad()
def sample(policy: GenericPolicy, prompts: torch.Tensor, max_new_tokens: int, eos_id: int, temperature: float = 1.0,
           repetition_penalty: float = 1.0, generator=None, uniforms: torch.Tensor = None):
    """Completions for equal-length prompts, laid out as the fast decodes lay them out (``decoder.Samples``).

    ``uniforms`` (max_new_tokens, batch), if given, replace the draws (tests).
    """
    batch, prompt_len = prompts.shape
    tokens = torch.full((batch, prompt_len + max_new_tokens), eos_id, dtype=torch.long, device=prompts.device)
    tokens[:, :prompt_len] = prompts
    finished = torch.zeros(batch, dtype=torch.bool, device=prompts.device)
    logits, past = policy.logits(prompts, past=None, keep=1)
    steps = 0
    for t in range(max_new_tokens):
        scores = apply_repetition_penalty(logits[:, -1].float(), tokens[:, : prompt_len + t], repetition_penalty)
        if temperature != 1.0:
            scores = scores / temperature
        token = draw(scores, generator, None if uniforms is None else uniforms[t])
        token = torch.where(finished, torch.full_like(token, eos_id), token)
        tokens[:, prompt_len + t] = token
        finished |= token == eos_id
        steps = t + 1
        if t + 1 == max_new_tokens or bool(finished.all()):
            break
        logits, past = policy.logits(token.unsqueeze(1), past=past, keep=1)
    return samples_from_tokens(tokens[:, prompt_len:], eos_id, steps)


def completion_logprobs(policy: GenericPolicy, prompt_ids, completions, mask, temperature: float = 1.0):
    """Log-probabilities (batch, length) of ``completions`` after ``prompt_ids`` from the model's own logits.

    With the graph back to the adapter for the policy; call it under ``torch.no_grad()``
    for the reference. 0 where ``mask`` is False.
    """
    prompt_len, length = prompt_ids.shape[1], completions.shape[1]
    out = []
    for start in range(0, len(completions), ROWS_PER_CHUNK):
        rows = slice(start, start + ROWS_PER_CHUNK)
        ids = torch.cat([prompt_ids[rows], completions[rows]], dim=1)
        # the logits that predict each completion token: positions prompt_len - 1 .. prompt_len + length - 2
        logits, _ = policy.logits(ids, keep=length + 1)
        logits = logits[:, :length].float()
        if temperature != 1.0:
            logits = logits / temperature
        out.append(F.log_softmax(logits, dim=-1).gather(-1, completions[rows].unsqueeze(-1)).squeeze(-1))
    logp = torch.cat(out)
    return torch.where(mask, logp, torch.zeros_like(logp))

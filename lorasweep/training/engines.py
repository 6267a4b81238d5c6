"""The two engines a run can train on, behind one face: weights for a step, sampling, log-probabilities.

``FastEngine``: the hand-written decoder (``decoder``; the CPU's dropping decode or the
GPU's static one, ``sampler``), the LoRA update merged into its weights once per step,
the blockwise log-probabilities of ``grpo``. ``GenericEngine``: the model's own modules
(``generic``). Which one a base gets is planning's decision (``lorasweep.study.engine``),
passed in the run's spec as ``training.engine``; a worker and the held-out samples
of ``base_samples`` take it from here.
"""

from contextlib import nullcontext

import torch

from . import generic, grpo
from .decoder import decoder_weights
from .sampler import sample as fast_sample
from ..errors import LorasweepError

FAST, GENERIC = "fast", "generic"


class FastEngine:
    name = FAST

    def __init__(self, model, dtype=None):
        self.model, self.dtype = model, dtype
        adapter_off = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
        with torch.no_grad(), adapter_off:
            self.reference = decoder_weights(model, dtype)  # the KL's reference: the base weights, fixed for the run

    def weights(self):
        """This step's policy: the adapter merged into the decoder's weights, the graph back to the adapter."""
        return decoder_weights(self.model, self.dtype)

    @torch.no_grad()
    def frozen_weights(self):
        """The policy as it is now, without a graph (the held-out samples)."""
        return decoder_weights(self.model)

    @staticmethod
    def sample(weights, prompts, t: dict, eos_id: int, generator):
        return fast_sample(weights, prompts, t["max_new_tokens"], eos_id, t["temperature"], t["repetition_penalty"],
                           generator)

    @staticmethod
    def logprobs(weights, prompt_ids, completions, mask, temperature):
        return grpo.completion_logprobs(weights, prompt_ids, completions, mask, temperature)


class GenericEngine:
    name = GENERIC

    def __init__(self, model, dtype=None):
        if dtype not in (None, torch.float32):
            raise LorasweepError("the generic engine trains in fp32 (training.dtype: fp32)")
        self.policy = generic.GenericPolicy(model)
        self.reference = self.policy.reference()

    def weights(self):
        return self.policy

    def frozen_weights(self):
        return self.policy

    @staticmethod
    def sample(weights, prompts, t: dict, eos_id: int, generator):
        return generic.sample(weights, prompts, t["max_new_tokens"], eos_id, t["temperature"], t["repetition_penalty"],
                              generator)

    @staticmethod
    def logprobs(weights, prompt_ids, completions, mask, temperature):
        return generic.completion_logprobs(weights, prompt_ids, completions, mask, temperature)


ENGINES = {FAST: FastEngine, GENERIC: GenericEngine}


def engine_for(name: str, model, dtype=None, max_len: int = 0):
    """The engine ``name``: a spec's ``training.engine`` as planning resolved it. "auto" (a spec built
    outside a study: a benchmark, a test) decides here, by the same rule, from the model's own config;
    absent means fast, as specs were before there was a choice."""
    if name == "auto":
        from ..study.engine import choose

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        name, _ = choose("auto", base.config.to_dict(), max_len, type(base).__name__)
    try:
        return ENGINES[name or FAST](model, dtype)
    except KeyError:
        raise LorasweepError(f"training.engine {name!r} is not one of {', '.join(ENGINES)}") from None

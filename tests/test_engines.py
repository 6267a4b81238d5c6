"""Both engines against the HF models they stand for, on tiny random-init configs of every layout claimed.

The fast engine claims the Llama family (Llama with and without biases, Mistral, Qwen2
with its q/k/v biases): its logits, sampled tokens, log-probs and LoRA gradients must be
the HF model's with the adapter on and off. The generic engine runs any causal LM
through the model's own modules (GPT-2, GPT-NeoX here): its cached decode must give the
full forward's logits, its greedy tokens HF ``generate``'s, and on a Llama, where both
engines apply, the two must agree token for token and gradient for gradient.
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lorasweep.bench.tiny_base import model_of
from lorasweep.study import engine as engine_choice
from lorasweep.training import generic, grpo
from lorasweep.training.decoder import KVCache, decoder_weights, forward
from lorasweep.training.engines import FastEngine, GenericEngine, engine_for
from lorasweep.training.sampler import sample_dropping

SIZES = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 96,
         "vocab_size": 60, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
EOS = 1
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GENERIC_TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"], "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h",
                                                                        "dense_4h_to_h"]}


def tiny(architecture: str, biases: bool = False, seed: int = 0):
    """A peft model around a random-init ``architecture``, its adapter and (with ``biases``) its biases non-zero."""
    model = model_of(architecture, SIZES, EOS, seed)
    if biases and architecture == "llama":
        config = model.config
        config.attention_bias = config.mlp_bias = True
        torch.manual_seed(seed)
        model = type(model)(config)
    targets = GENERIC_TARGETS.get(architecture, LLAMA_TARGETS)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=targets, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or (name.endswith(".bias") and param.dim() == 1 and "norm" not in name):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


FAST_CASES = [("llama", False), ("llama", True), ("mistral", False), ("qwen2", False)]


@pytest.mark.parametrize("architecture, biases", FAST_CASES, ids=["llama", "llama-bias", "mistral", "qwen2"])
def test_the_fast_engine_is_the_hf_model_with_the_adapter_on_and_off(architecture, biases):
    model = tiny(architecture, biases)
    assert engine_choice.fast_engine_gaps(model.get_base_model().config.to_dict(), 64) == []
    ids = torch.randint(2, 60, (3, 10))
    for adapter in (True, False):
        context = model.disable_adapter() if not adapter else torch.no_grad()
        with torch.no_grad(), context:
            reference = model(input_ids=ids).logits
            w = decoder_weights(model)
        cache = KVCache(w, 3, 10)
        logits = forward(w, ids[:, :6], 0, cache)
        assert torch.allclose(logits, reference[:, 5], atol=1e-5), (architecture, adapter)
        for t in range(6, 10):  # the cached decode, one token at a time
            assert torch.allclose(forward(w, ids[:, t : t + 1], t, cache), reference[:, t], atol=1e-5)


@pytest.mark.parametrize("architecture, biases", FAST_CASES, ids=["llama", "llama-bias", "mistral", "qwen2"])
def test_the_fast_engines_log_probs_and_lora_gradients_are_pefts(architecture, biases):
    model = tiny(architecture, biases)
    prompts, completions = torch.randint(2, 60, (4, 5)), torch.randint(2, 60, (4, 6))
    mask = torch.ones_like(completions, dtype=torch.bool)
    mask[1, 4:] = mask[3, 2:] = False
    weights = torch.randn(4, 6)

    def lora_grads():
        return [p.grad.clone() for n, p in model.named_parameters() if "lora_" in n]

    logp = grpo.completion_logprobs(decoder_weights(model), prompts, completions, mask)
    (logp * weights).sum().backward()
    ours = lora_grads()
    model.zero_grad()
    logits = model(input_ids=torch.cat([prompts, completions], 1)).logits[:, 4:-1]
    theirs_logp = torch.log_softmax(logits, -1).gather(-1, completions.unsqueeze(-1)).squeeze(-1) * mask
    (theirs_logp * weights).sum().backward()
    assert torch.allclose(logp, theirs_logp, atol=1e-5)
    for a, b in zip(ours, lora_grads()):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("architecture", ["gpt2", "gpt_neox"])
def test_the_generic_engines_cached_decode_gives_the_full_forwards_logits(architecture):
    model = tiny(architecture)
    assert engine_choice.fast_engine_gaps(model.get_base_model().config.to_dict(), 64)  # not the fast layout
    policy = generic.GenericPolicy(model)
    ids = torch.randint(2, 60, (3, 9))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        logits, past = policy.logits(ids[:, :5], keep=1)
        assert torch.allclose(logits[:, -1], full[:, 4], atol=1e-5)
        for t in range(5, 9):
            logits, past = policy.logits(ids[:, t : t + 1], past=past, keep=1)
            assert torch.allclose(logits[:, -1], full[:, t], atol=1e-5)


@pytest.mark.parametrize("architecture", ["gpt2", "gpt_neox", "llama"])
def test_the_generic_engines_greedy_tokens_are_hf_generates(architecture):
    # at a vanishing temperature the inverse-CDF draw is the argmax: greedy, with HF's repetition penalty
    model = tiny(architecture)
    prompts = torch.randint(2, 60, (3, 4))
    ours = generic.sample(generic.GenericPolicy(model), prompts, 8, EOS, temperature=1e-6, repetition_penalty=1.1,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                                max_new_tokens=8, repetition_penalty=1.1, eos_token_id=EOS, pad_token_id=EOS,
                                min_new_tokens=0)[:, 4:]
    for row in range(3):
        n = ours.lengths[row]
        assert ours.completions[row, :n].tolist() == theirs[row, :n].tolist()


def test_on_a_llama_both_engines_sample_the_same_tokens_from_the_same_draws():
    model = tiny("llama")
    prompts = torch.randint(2, 60, (4, 5))
    uniforms = torch.rand(12, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fast = sample_dropping(decoder_weights(model), prompts, 12, EOS, 1.0, 1.1, uniforms=uniforms)
        slow = generic.sample(generic.GenericPolicy(model), prompts, 12, EOS, 1.0, 1.1, uniforms=uniforms)
    assert fast.lengths == slow.lengths
    for row, n in enumerate(fast.lengths):
        assert fast.completions[row, : n + 1].tolist() == slow.completions[row, : n + 1].tolist()


def test_on_a_llama_both_engines_give_the_same_log_probs_gradients_and_reference():
    model = tiny("llama")
    prompts, completions = torch.randint(2, 60, (3, 5)), torch.randint(2, 60, (3, 7))
    mask = torch.ones_like(completions, dtype=torch.bool)
    mask[0, 3:] = False
    results = []
    for make in (FastEngine, GenericEngine):
        model.zero_grad()
        engine = make(model)
        logp = engine.logprobs(engine.weights(), prompts, completions, mask, 1.0)
        logp.sum().backward()
        with torch.no_grad():
            ref = engine.logprobs(engine.reference, prompts, completions, mask, 1.0)
        grads = [p.grad.clone() for n, p in model.named_parameters() if "lora_" in n]
        results.append((logp.detach(), ref, grads))
    (a, ra, ga), (b, rb, gb) = results
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(ra, rb, atol=1e-5)
    assert not torch.allclose(a, ra, atol=1e-3)  # the reference is the base, not the adapted policy
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-5)


def test_auto_picks_the_fast_engine_for_the_llama_family_and_the_generic_one_for_the_rest():
    assert isinstance(engine_for("auto", tiny("qwen2")), FastEngine)
    assert isinstance(engine_for("auto", tiny("gpt2")), GenericEngine)
    assert isinstance(engine_for(None, tiny("llama")), FastEngine)  # a spec from before the choice


@pytest.mark.parametrize("config, gap", [
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not one the fast engine implements"),
    ({"model_type": "llama", "hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "llama3"}}, "rope type 'llama3'"),
    ({"model_type": "llama", "rope_parameters": {"rope_type": "yarn"}}, "rope type 'yarn'"),
    ({"model_type": "mistral", "sliding_window": 16}, "a sliding attention window of 16 tokens"),
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8}, "a sliding attention window of 8"),
    ({"model_type": "llama", "pretraining_tp": 2}, "pretraining_tp 2"),
    ({"model_type": "llama", "attention_dropout": 0.1}, "attention_dropout 0.1"),
])
def test_what_the_fast_engine_does_not_implement_is_named(config, gap):
    gaps = engine_choice.fast_engine_gaps(config, max_len=40)
    assert len(gaps) == 1 and gaps[0].startswith(gap)
    engine, reason = engine_choice.choose("auto", config, 40, "the base")
    assert engine == "generic" and reason == gaps[0]
    with pytest.raises(Exception, match=r"'training.engine': value 'fast' is not allowed for the base: "):
        engine_choice.choose("fast", config, 40, "the base")


def test_a_long_enough_sliding_window_never_slides_and_stays_fast():
    assert engine_choice.fast_engine_gaps({"model_type": "mistral", "sliding_window": 4096}, 40) == []
    assert engine_choice.choose("generic", {"model_type": "llama"}, 40, "x") == ("generic", "training.engine is generic")

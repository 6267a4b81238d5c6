import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from lorasweep.training.decoder import KVCache, apply_repetition_penalty, decoder_weights, draw, forward
from lorasweep.training.sampler import sample

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_policy(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, vocab_size=50, tie_word_embeddings=True, rms_norm_eps=1e-6,
                         max_position_embeddings=64, eos_token_id=1, pad_token_id=1, bos_token_id=None)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter, so that merging matters
            torch.nn.init.normal_(param, std=0.1)
    return model


def test_kv_cache_decode_matches_the_hf_forward_with_the_adapter_merged():
    model = tiny_policy()
    ids = torch.randint(2, 50, (3, 10))
    reference = model(input_ids=ids).logits
    w = decoder_weights(model)
    cache = KVCache(w, 3, 10)
    logits = forward(w, ids[:, :6], 0, cache)
    assert torch.allclose(logits, reference[:, 5], atol=1e-5)
    for t in range(6, 10):
        logits = forward(w, ids[:, t : t + 1], t, cache)
        assert torch.allclose(logits, reference[:, t], atol=1e-5)


def test_weights_with_the_adapter_disabled_are_the_base_weights():
    model = tiny_policy()
    ids = torch.randint(2, 50, (2, 7))
    with model.disable_adapter():
        reference = model(input_ids=ids).logits[:, -1]
        w = decoder_weights(model)
    assert torch.allclose(forward(w, ids, 0, KVCache(w, 2, 7)), reference, atol=1e-5)
    merged = decoder_weights(model)
    assert not torch.allclose(forward(merged, ids, 0, KVCache(merged, 2, 7)), reference, atol=1e-3)


def test_repetition_penalty_follows_hf_semantics():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[0, 1, 0]])  # token ids seen so far; a repeat is penalised once
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0]]))
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    hf = RepetitionPenaltyLogitsProcessor(2.0)(seen, logits.clone())
    assert torch.equal(hf, apply_repetition_penalty(logits, seen, 2.0))


def test_sampling_is_repeatable_and_stops_at_eos():
    model = tiny_policy()
    w = decoder_weights(model)
    prompts = torch.randint(2, 50, (6, 5))
    a = sample(w, prompts, 12, eos_id=1, temperature=1.0, repetition_penalty=1.1, generator=torch.Generator().manual_seed(3))
    b = sample(w, prompts, 12, eos_id=1, temperature=1.0, repetition_penalty=1.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.completions, b.completions)
    for row, mask, length in zip(a.completions.tolist(), a.mask.tolist(), a.lengths):
        assert 1 not in row[:length]  # no eos before the reported length
        if length < len(row):
            assert row[length] == 1 and all(t == 1 for t in row[length:])
            assert sum(mask) == length + 1  # the eos itself is a completion token
        else:
            assert sum(mask) == length


def test_draw_follows_the_softmax_distribution():
    logits = torch.tensor([2.0, 0.5, -1.0, float("-inf"), 1.0, 0.0])
    n = 40000
    tokens = draw(logits.expand(n, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=6).double()
    p = torch.softmax(logits.double(), -1)
    assert counts[3] == 0  # zero probability is never drawn
    sigma = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() <= 4 * sigma + 1e-9).all(), (counts / n, p)

"""The worker's loss is the one docs/design.md §2 defines, checked on a fixed batch.

Per completion token: -exp(logp - sg(logp)) * A + beta * KL, with
KL = exp(ref - logp) - (ref - logp) - 1 (k3), A = (r - group mean) / (group std + 1e-4),
aggregated as TRL's ``loss_type`` says: ``grpo`` (the default) averages each
completion's terms over its own tokens, then over completions; ``dapo`` and
``bnpo`` sum every completion token of the batch and divide by their count;
``dr_grpo`` divides that sum by completions x max_completion_length. The expected
values are computed here token by token with plain floats. The log-probs the loss
is fed are those of the policy (LoRA on) and of the reference (the same model with
the adapter disabled) on the completion tokens.
"""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from lorasweep.training import grpo
from lorasweep.training.decoder import decoder_weights

BETA = 0.02
# two prompts x G=3 completions of different lengths; mask marks real tokens (eos included)
REWARDS = [0.9, 0.1, 0.5, 0.2, 0.2, 0.8]
LOGP = [[-1.0, -2.0, -0.5, -1.5], [-0.7, -1.2, -3.0, -0.1], [-2.2, -0.3, -0.9, -1.1],
        [-0.4, -0.8, -1.6, -2.5], [-1.9, -0.6, -0.2, -0.7], [-0.5, -1.4, -2.1, -0.9]]
REF = [[-1.1, -1.8, -0.5, -1.0], [-0.9, -1.0, -2.0, -0.3], [-2.0, -0.5, -1.2, -1.0],
       [-0.4, -0.9, -1.2, -2.0], [-1.5, -0.7, -0.4, -0.2], [-0.6, -1.1, -2.6, -1.3]]
LENGTHS = [4, 2, 3, 1, 4, 2]
GROUP = 3
MAX_COMPLETION_LENGTH = 5  # the sampler's max_new_tokens: more than the longest completion here


def by_hand(loss_type="dapo"):
    """Advantages, the loss, the mean KL and the loss's gradient, with math on floats."""
    advantages = []
    for g in range(0, len(REWARDS), GROUP):
        group = REWARDS[g : g + GROUP]
        mean = sum(group) / GROUP
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (GROUP - 1))  # unbiased, as torch and TRL
        advantages += [(r - mean) / (std + 1e-4) for r in group]
    count = sum(LENGTHS)
    # what one token's term is divided by: its completion's length x completions (grpo),
    # the batch's token count (dapo, bnpo), completions x max_completion_length (dr_grpo)
    divisor = {
        "grpo": lambda n: n * len(REWARDS),
        "dapo": lambda n: count,
        "bnpo": lambda n: count,
        "dr_grpo": lambda n: len(REWARDS) * MAX_COMPLETION_LENGTH,
    }[loss_type]
    loss = kl_sum = 0.0
    grad = [[0.0] * 4 for _ in REWARDS]
    for i, (a, n) in enumerate(zip(advantages, LENGTHS)):
        for j in range(n):
            delta = REF[i][j] - LOGP[i][j]
            kl = math.exp(delta) - delta - 1
            loss += (-1.0 * a + BETA * kl) / divisor(n)  # the ratio exp(logp - sg(logp)) is 1 in value
            kl_sum += kl
            # d/dlogp: -A from the ratio; beta * (1 - exp(ref - logp)) from the k3 KL
            grad[i][j] = (-a + BETA * (1 - math.exp(delta))) / divisor(n)
    return advantages, loss, kl_sum / count, grad


def fixed_batch():
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(4)[None, :] < torch.tensor(LENGTHS)[:, None]
    return logp, torch.tensor(REF, dtype=torch.float64), mask


@pytest.mark.parametrize("loss_type", grpo.LOSS_TYPES)
def test_advantages_loss_kl_and_gradient_match_the_definition_token_by_token(loss_type):
    advantages, loss, kl, grad = by_hand(loss_type)
    adv = grpo.group_advantages(torch.tensor(REWARDS, dtype=torch.float64), GROUP)
    assert adv.tolist() == pytest.approx(advantages, rel=1e-12)

    logp, ref, mask = fixed_batch()
    got_loss, got_kl = grpo.grpo_loss(logp, ref, adv, mask, BETA, loss_type, MAX_COMPLETION_LENGTH)
    assert got_loss.item() == pytest.approx(loss, rel=1e-12)
    assert got_kl.item() == pytest.approx(kl, rel=1e-12)  # the token mean, whatever the loss type
    got_loss.backward()
    assert logp.grad.tolist() == [pytest.approx(row, abs=1e-15) for row in grad]


def test_the_default_aggregation_is_grpo_a_mean_of_per_sequence_means():
    logp, ref, mask = fixed_batch()
    adv = grpo.group_advantages(torch.tensor(REWARDS, dtype=torch.float64), GROUP)
    loss, _ = grpo.grpo_loss(logp, ref, adv, mask, BETA)
    per_token = -adv[:, None] + BETA * grpo.per_token_kl(logp.detach(), ref)
    per_sequence = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    assert loss.item() == pytest.approx(per_sequence.item(), rel=1e-12)
    dapo, _ = grpo.grpo_loss(logp, ref, adv, mask, BETA, "dapo")
    assert dapo.item() == pytest.approx(((per_token * mask).sum() / mask.sum()).item(), rel=1e-12)
    assert abs(loss.item() - dapo.item()) > 1e-3
    # masked tokens (after the stop) change nothing, whatever the aggregation
    noisy = logp.detach().clone()
    noisy[~mask] = 7.0
    for loss_type in grpo.LOSS_TYPES:
        clean = grpo.grpo_loss(logp, ref, adv, mask, BETA, loss_type, MAX_COMPLETION_LENGTH)[0]
        assert grpo.grpo_loss(noisy, ref, adv, mask, BETA, loss_type, MAX_COMPLETION_LENGTH)[0].item() == \
            pytest.approx(clean.item(), rel=1e-12)


def tiny_policy():
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=48, vocab_size=40, tie_word_embeddings=True, rms_norm_eps=1e-6,
                         max_position_embeddings=64, eos_token_id=1, pad_token_id=1, bos_token_id=None)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=4, target_modules=targets))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter, so that policy and reference differ
            torch.nn.init.normal_(param, std=0.1)
    return model


def naive_logprobs(model, prompts, completions, mask, temperature):
    """HF's forward (peft's LoRA layers) over the padded batch, log-softmax at every position."""
    ids = torch.cat([prompts, completions], dim=1)
    logits = model(input_ids=ids).logits[:, prompts.shape[1] - 1 : -1] / temperature
    return torch.log_softmax(logits, -1).gather(2, completions.unsqueeze(2)).squeeze(2) * mask


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_policy_and_reference_logprobs_are_those_of_the_model_with_and_without_the_adapter(temperature):
    model = tiny_policy()
    generator = torch.Generator().manual_seed(1)
    batch, prompt_len, length = 11, 5, 9  # more rows than one chunk, so that sorting and chunking show
    prompts = torch.randint(2, 40, (batch, prompt_len), generator=generator)
    completions = torch.randint(2, 40, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    completions[~mask] = 1  # eos padding after the stop

    logp = grpo.completion_logprobs(decoder_weights(model), prompts, completions, mask, temperature)
    expected = naive_logprobs(model, prompts, completions, mask, temperature)
    assert torch.allclose(logp, expected, atol=1e-5)
    assert (logp[~mask] == 0).all()

    with torch.no_grad(), model.disable_adapter():
        ref = grpo.completion_logprobs(decoder_weights(model), prompts, completions, mask, temperature)
        assert torch.allclose(ref, naive_logprobs(model, prompts, completions, mask, temperature), atol=1e-5)
    assert not torch.allclose(ref, logp, atol=1e-3)

    # the gradient that reaches the adapter through the merged weights is peft's
    adv = grpo.group_advantages(torch.rand(batch + 1, generator=generator), 3)[:batch]
    lora = [p for p in model.parameters() if p.requires_grad]
    loss, _ = grpo.grpo_loss(logp, ref, adv, mask, BETA)
    grads = torch.autograd.grad(loss, lora)
    naive_loss, _ = grpo.grpo_loss(naive_logprobs(model, prompts, completions, mask, temperature), ref, adv, mask, BETA)
    assert naive_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    for got, want in zip(grads, torch.autograd.grad(naive_loss, lora)):
        assert torch.allclose(got, want, atol=1e-6)


def test_chunked_and_padded_logprobs_are_the_models_at_distinct_lengths_and_a_hot_temperature():
    # lengths 1..10, all different: each chunk of the sorted rows is cut at its own longest
    # completion (10 for the first eight, 2 for the last two), which a cut at any other row's
    # length would truncate; temperature 2 divides the logits as any other temperature does
    model = tiny_policy()
    generator = torch.Generator().manual_seed(2)
    lengths = torch.tensor([3, 10, 1, 7, 5, 2, 9, 4, 8, 6])
    batch, length, temperature = len(lengths), 10, 2.0
    prompts = torch.randint(2, 40, (batch, 4), generator=generator)
    completions = torch.randint(2, 40, (batch, length), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    completions[~mask] = 1
    expected = naive_logprobs(model, prompts, completions, mask, temperature)
    weights = decoder_weights(model)
    with torch.no_grad():
        chunked = grpo.completion_logprobs(weights, prompts, completions, mask, temperature)
        padded = grpo.padded_completion_logprobs(weights, prompts, completions, mask, temperature)
    assert torch.allclose(chunked, expected, atol=1e-5)
    assert torch.allclose(padded, expected, atol=1e-5)  # the CUDA path, the same values
    assert (chunked[~mask] == 0).all() and (padded[~mask] == 0).all()
    assert (chunked[mask] < 0).all()  # every real token has a log-probability of its own
    with torch.no_grad():  # no temperature given: 1, the logits as they are
        plain = grpo.completion_logprobs(weights, prompts, completions, mask)
        assert torch.equal(grpo.padded_completion_logprobs(weights, prompts, completions, mask),
                           grpo.padded_completion_logprobs(weights, prompts, completions, mask, 1.0))
    assert torch.allclose(plain, naive_logprobs(model, prompts, completions, mask, 1.0), atol=1e-5)

import math

import torch

import pytest

from lorasweep.training.grpo import group_advantages, grpo_loss, per_token_kl, scheduled_lr


def test_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.4, 0.6, 0.8])
    adv = group_advantages(rewards, 4)
    g1 = torch.tensor([1.0, 0.0, 0.5, 0.5])
    expected = (g1 - g1.mean()) / (g1.std() + 1e-4)
    assert torch.allclose(adv[:4], expected)
    assert abs(adv[4:].sum().item()) < 1e-5
    # worked example: std of [0.2 0.4 0.6 0.8] (unbiased) is 0.2582
    assert adv[7].item() == pytest_approx(0.3 / (math.sqrt(0.2 / 3) + 1e-4))


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-5)


def test_equal_rewards_give_zero_advantage_not_nan():
    adv = group_advantages(torch.tensor([0.3, 0.3, 0.3, 0.3]), 4)
    assert torch.equal(adv, torch.zeros(4))


def test_kl_is_zero_at_equal_logprobs_and_matches_the_k3_formula():
    logp = torch.tensor([-1.0, -2.0])
    assert torch.allclose(per_token_kl(logp, logp), torch.zeros(2))
    ref = torch.tensor([-1.5, -1.0])
    d = ref - logp
    assert torch.allclose(per_token_kl(logp, ref), torch.exp(d) - d - 1)
    assert (per_token_kl(logp, ref) > 0).all()


def test_loss_value_and_gradient_follow_the_definition_on_a_fixed_batch():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -1.2, -3.0]], requires_grad=True)
    ref = torch.tensor([[-1.1, -1.8, -0.5], [-0.9, -1.0, -2.0]])
    adv = torch.tensor([0.5, -1.5])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    beta = 0.02
    loss, mean_kl = grpo_loss(logp, ref, adv, mask, beta, "dapo")

    # by hand: -A + beta*KL per token (the ratio is 1), summed over the 5 real tokens / 5
    kl = torch.exp(ref - logp.detach()) - (ref - logp.detach()) - 1
    per_token = -adv[:, None] + beta * kl
    expected = (per_token * mask).sum() / 5
    assert loss.item() == pytest_approx(expected.item())
    assert mean_kl.item() == pytest_approx(((kl * mask).sum() / 5).item())

    loss.backward()
    # d/dlogp of -exp(logp - sg(logp))*A is -A; of beta*KL it is beta*(1 - exp(ref - logp))
    grad = (-adv[:, None] + beta * (1 - torch.exp(ref - logp.detach()))) * mask / 5
    assert torch.allclose(logp.grad, grad, atol=1e-7)


# Two completions of 1 and 3 tokens, advantages +1 and -0.5, beta 0: every token's term is -A,
# so row 0 holds [-1] and row 1 holds [0.5, 0.5, 0.5] (its 4th position is padding).
SHORT_LONG = dict(logp=torch.zeros(2, 4), ref_logp=torch.zeros(2, 4), advantages=torch.tensor([1.0, -0.5]),
                  mask=torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool), beta=0.0)


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", (-1.0 + 0.5) / 2),  # per completion: -1 / 1 token and 1.5 / 3 tokens, then their mean: -0.25
    ("dapo", (-1.0 + 1.5) / 4),  # every token of the batch: 0.5 over 4 tokens = 0.125
    ("bnpo", (-1.0 + 1.5) / 4),  # the same with one process
    ("dr_grpo", (-1.0 + 1.5) / (2 * 8)),  # over 2 completions x max_completion_length 8 = 0.03125
])
def test_the_four_loss_types_on_completions_of_different_lengths(loss_type, expected):
    loss, mean_kl = grpo_loss(**SHORT_LONG, loss_type=loss_type, max_completion_length=8)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert mean_kl.item() == 0.0


def test_dr_grpo_needs_the_completion_budget_and_unknown_loss_types_fail():
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(**SHORT_LONG, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="'sum' is not one of grpo, dapo, bnpo, dr_grpo"):
        grpo_loss(**SHORT_LONG, loss_type="sum")


def test_linear_schedule_starts_at_full_lr_and_reaches_zero_at_the_horizon():
    # update k (0 updates done before the first) uses lr x (1 - k / horizon)
    assert [scheduled_lr(1e-3, k, "linear", 4) for k in range(6)] == \
        pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0, 0.0], abs=1e-18)
    # the study's horizon: step 1001 of 2000 runs at half the lr
    assert scheduled_lr(4e-4, 1000, "linear", 2000) == pytest.approx(2e-4, rel=1e-12)
    assert [scheduled_lr(1e-3, k, "constant", 4) for k in (0, 3, 10)] == [1e-3, 1e-3, 1e-3]
    with pytest.raises(ValueError, match="'cosine' is not one of linear, constant"):
        scheduled_lr(1e-3, 0, "cosine", 4)


def test_a_batch_with_one_completion_token_divides_by_one():
    # one real token, advantage 0.5, logp = ref (KL 0): its term is -0.5, and so is every aggregate
    logp = torch.tensor([[-1.0, -2.0]])
    mask = torch.tensor([[True, False]])
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        loss, kl = grpo_loss(logp, logp.clone(), torch.tensor([0.5]), mask, 0.1, loss_type, 1)
        assert (loss.item(), kl.item()) == (-0.5, 0.0)


# ---- token_logprobs: the lm head, log-softmax and gather in blocks of rows ----------------------


def reference_token_logprobs(states, lm_head, targets, temperature):
    logits = torch.nn.functional.linear(states, lm_head).float() / temperature
    return torch.log_softmax(logits, -1).gather(1, targets.unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_token_logprobs_and_their_gradients_are_log_softmax_gathers_across_blocks(monkeypatch, temperature):
    from lorasweep.training import grpo

    monkeypatch.setattr(grpo, "LOGIT_BLOCK_ROWS", 4)  # 11 rows: blocks of 4, 4 and 3
    generator = torch.Generator().manual_seed(0)
    # logits up to ~100: an exp without the row maximum taken off first overflows
    states = (torch.randn(11, 6, generator=generator) * 10).requires_grad_(True)
    lm_head = (torch.randn(9, 6, generator=generator) * 3).requires_grad_(True)
    targets = torch.randint(0, 9, (11,), generator=generator)
    weights = torch.randn(11, generator=generator)

    got = grpo.token_logprobs(states, lm_head, targets, temperature)
    want = reference_token_logprobs(states, lm_head, targets, temperature)
    assert torch.isfinite(got).all() and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-4)
    got_grads = torch.autograd.grad((got * weights).sum(), (states, lm_head))
    want_grads = torch.autograd.grad((want * weights).sum(), (states, lm_head))
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # the reference's path keeps no softmax and gives the same values
        assert torch.equal(grpo.token_logprobs(states, lm_head, targets, temperature), got.detach())
        # no temperature given: 1, the logits as they are
        assert torch.equal(grpo.token_logprobs(states, lm_head, targets),
                           grpo.token_logprobs(states, lm_head, targets, 1.0))
    # a gradient for the lm head alone (frozen states) keeps the softmax too
    head_only = grpo.token_logprobs(states.detach(), lm_head, targets, temperature)
    (head_grad,) = torch.autograd.grad((head_only * weights).sum(), lm_head)
    assert torch.allclose(head_grad, want_grads[1], atol=1e-4, rtol=1e-4)


def test_token_logprobs_refuse_a_second_backward_through_the_same_graph():
    from lorasweep.training import grpo

    states = torch.randn(3, 4, requires_grad=True)
    logp = grpo.token_logprobs(states, torch.randn(5, 4), torch.tensor([0, 1, 2]))
    logp.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        logp.sum().backward()

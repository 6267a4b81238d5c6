import math

import torch

from lorasweep.grpo import group_advantages, grpo_loss, per_token_kl


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
    loss, mean_kl = grpo_loss(logp, ref, adv, mask, beta)

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

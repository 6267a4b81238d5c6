"""The GRPO objective: group-relative advantages, the KL term and the loss.

Everything here works on tensors the worker hands in, so the definitions can be
checked on a fixed batch without a model (DESIGN §2).
"""

import torch
import torch.nn.functional as F

ADVANTAGE_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - group mean) / (group std + 1e-4) for consecutive groups of ``group_size``.

    The std is the unbiased one (torch's default), as in TRL's GRPOTrainer.
    """
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + ADVANTAGE_EPS)).view(-1)


def per_token_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def grpo_loss(logp, ref_logp, advantages, mask, beta: float):
    """Loss summed over every completion token of the batch, divided by their count.

    ``exp(logp - logp.detach())`` is 1 in value but carries the policy gradient
    ``A * grad logp``; this is the single-iteration form of the clipped objective,
    where the ratio to the sampling policy is exactly 1. Returns (loss, mean KL).
    """
    mask = mask.to(logp.dtype)
    kl = per_token_kl(logp, ref_logp)
    per_token = -torch.exp(logp - logp.detach()) * advantages.unsqueeze(1) + beta * kl
    count = mask.sum().clamp(min=1.0)
    loss = (per_token * mask).sum() / count
    mean_kl = (kl.detach() * mask).sum() / count
    return loss, mean_kl


def completion_logprobs(model, input_ids: torch.Tensor, prompt_len: int, temperature: float = 1.0):
    """Log-probabilities of the completion tokens ``input_ids[:, prompt_len:]``.

    Only the positions that predict completion tokens go through the softmax,
    which keeps the (batch, length, vocab) tensor as small as it can be.
    """
    completion_len = input_ids.shape[1] - prompt_len
    logits = model(input_ids=input_ids, logits_to_keep=completion_len + 1).logits[:, :-1]
    logits = logits.float() / temperature
    targets = input_ids[:, prompt_len:]
    return torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(2)).squeeze(2)

"""The GRPO objective: group-relative advantages, the KL term and the loss; and the
log-probabilities of the completions it takes.

The advantages, KL and loss work on tensors the worker hands in, so the
definitions can be checked on a fixed batch without a model (docs/design.md §2); the
log-probs they take come from the sampler's decoder, the one that sampled
(``completion_logprobs``, through ``token_logprobs`` for the lm head and softmax).
"""

import torch
import torch.nn.functional as F

from .decoder import hidden_states

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


LOSS_TYPES = ("grpo", "dapo", "bnpo", "dr_grpo")


def grpo_loss(logp, ref_logp, advantages, mask, beta: float, loss_type: str = "grpo",
              max_completion_length: int = None):
    """The GRPO loss of a batch, its per-token terms aggregated the ``loss_type`` way.

    Per completion token: ``-exp(logp - logp.detach()) * A + beta * KL``. The
    exponential is 1 in value but carries the policy gradient ``A * grad logp``;
    this is the single-iteration form of the clipped objective, where the ratio
    to the sampling policy is exactly 1. The terms are aggregated as TRL's
    ``loss_type`` names them:

    - ``grpo``: averaged over each completion's own tokens, then over completions
      (a token of a short completion weighs more than one of a long completion);
    - ``dapo`` and ``bnpo``: summed over every token of the batch, divided by
      their count (the two differ only across processes, which one worker has not);
    - ``dr_grpo``: summed, divided by completions x ``max_completion_length``.

    Returns (loss, mean KL); the KL is the mean over every completion token of
    the batch, whatever the loss type.
    """
    mask = mask.to(logp.dtype)
    kl = per_token_kl(logp, ref_logp)
    per_token = (-torch.exp(logp - logp.detach()) * advantages.unsqueeze(1) + beta * kl) * mask
    count = mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        loss = (per_token.sum(1) / mask.sum(1).clamp(min=1.0)).mean()
    elif loss_type in ("dapo", "bnpo"):
        loss = per_token.sum() / count
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type dr_grpo needs max_completion_length")
        loss = per_token.sum() / (logp.shape[0] * max_completion_length)
    else:
        raise ValueError(f"loss_type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    mean_kl = (kl.detach() * mask).sum() / count
    return loss, mean_kl


LR_SCHEDULES = ("linear", "constant")


def scheduled_lr(lr: float, updates_done: int, schedule: str, horizon: int) -> float:
    """The learning rate of the next optimizer update, after ``updates_done`` updates.

    ``linear`` decays from ``lr`` to 0 over ``horizon`` updates without warm-up,
    as the Trainer's default schedule: ``lr * (1 - updates_done / horizon)``, so
    the first update uses the full lr, and 0 from the horizon on. The horizon is
    the study's own step budget, not lorasweep's cap on steps, so a run decays
    as the study's did over the steps it takes. ``constant`` keeps ``lr``.
    """
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * max(0.0, 1.0 - updates_done / horizon)
    raise ValueError(f"lr schedule {schedule!r} is not one of {', '.join(LR_SCHEDULES)}")


# Rows per block of ``token_logprobs``: a block's logits (rows x vocab, 4 MB at a
# 4096-token vocabulary) stay in the cache between the lm head, the log-sum-exp and
# the softmax that the backward reuses.
LOGIT_BLOCK_ROWS = 256


class _TokenLogprobs(torch.autograd.Function):
    """log softmax(states @ lm_head.T / temperature)[target], one value per row, in blocks of rows.

    ``F.log_softmax`` followed by ``gather`` writes the whole (rows, vocab) log-softmax,
    and its backward first scatters the gradient into a zeroed tensor of that size:
    at bs 128 three passes over a quarter of a gigabyte that do no arithmetic. Here
    each block of rows goes through the lm head, its log-sum-exp and, when a
    gradient is wanted, its softmax while it is in the cache; the backward turns
    the kept softmax into the gradient of the logits in place
    (``grad * (onehot(target) - softmax) / temperature``) and multiplies once.
    """

    @staticmethod
    def forward(ctx, states, lm_head, targets, temperature):
        keep = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        # a GPU gains nothing from blocks and pays a launch per op per block
        block = max(states.shape[0], 1) if states.is_cuda else LOGIT_BLOCK_ROWS
        ctx.block = block
        logp = torch.empty(states.shape[0], dtype=torch.float32, device=states.device)
        probs = torch.empty(states.shape[0], lm_head.shape[0], dtype=torch.float32, device=states.device) if keep else None
        for start in range(0, max(states.shape[0], 1), block):
            rows = slice(start, start + block)
            logits = F.linear(states[rows], lm_head).float()
            if temperature != 1.0:
                logits.div_(temperature)
            picked = logits.gather(1, targets[rows].unsqueeze(1))
            top = logits.amax(1, keepdim=True)  # subtracted before exp, as a stable log-sum-exp does
            logits.sub_(top)
            exp = torch.exp(logits, out=probs[rows]) if keep else logits.exp_()
            total = exp.sum(1, keepdim=True)
            logp[rows] = (picked - top - total.log()).squeeze(1)
            if keep:
                exp.div_(total)
        ctx.temperature, ctx.used = temperature, False
        ctx.save_for_backward(states, lm_head, targets, probs)
        return logp

    @staticmethod
    def backward(ctx, grad):
        if ctx.used:
            raise RuntimeError("token_logprobs: a second backward through the same graph (retain_graph) is not "
                               "supported: the first one uses up the kept softmax")
        ctx.used = True
        states, lm_head, targets, probs = ctx.saved_tensors
        grad_states = torch.empty_like(states) if ctx.needs_input_grad[0] else None
        grad_head = torch.zeros_like(lm_head, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for start in range(0, max(states.shape[0], 1), ctx.block):
            rows = slice(start, start + ctx.block)
            # d logp / d logits = (onehot(target) - softmax) / temperature, in place of the kept softmax
            g = grad[rows].unsqueeze(1)
            grad_logits = probs[rows].mul_(-g).scatter_add_(1, targets[rows].unsqueeze(1), g)
            if ctx.temperature != 1.0:
                grad_logits.div_(ctx.temperature)
            if grad_states is not None:
                torch.mm(grad_logits.to(states.dtype), lm_head, out=grad_states[rows])
            if grad_head is not None:
                grad_head.addmm_(grad_logits.t(), states[rows].float())
        return grad_states, None if grad_head is None else grad_head.to(lm_head.dtype), None, None


def token_logprobs(states, lm_head, targets, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability (fp32) of ``targets[i]`` after the final hidden state ``states[i]``, for each row i."""
    return _TokenLogprobs.apply(states, lm_head, targets, float(temperature))


# Rows per forward pass of completion_logprobs: small enough that each chunk is cut
# close to its own longest completion, large enough to keep the matrices wide.
ROWS_PER_CHUNK = 8


def completion_logprobs(weights, prompt_ids, completions, mask, temperature: float = 1.0):
    """Log-probabilities (batch, length) of ``completions`` after ``prompt_ids``; 0 where ``mask`` is False.

    ``weights`` are the decoder's (``decoder.decoder_weights``): the policy's, with
    the adapter merged and the graph back to it, or the reference's. Completions
    stop at different lengths and the tokens after a stop are not trained on, so
    the rows go through the decoder sorted by length, ``ROWS_PER_CHUNK`` at a
    time, each chunk cut at its longest completion (causal attention makes a
    row's states independent of what follows, so this is the computation of one
    padded batch), and only the states that predict a real completion token go
    through the lm head and the softmax.

    On CUDA the chunking's host round trips (a length and a ``nonzero`` per chunk)
    cost more than the padding saves, so there the rows go through as one padded
    batch (``padded_completion_logprobs``); the values are the same.
    """
    if completions.is_cuda:
        return padded_completion_logprobs(weights, prompt_ids, completions, mask, temperature)
    batch, length = completions.shape
    prompt_len = prompt_ids.shape[1]
    lengths = mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    states, where = [], []
    for rows in order.split(ROWS_PER_CHUNK):
        n = int(lengths[rows[0]])
        hidden = hidden_states(weights, torch.cat([prompt_ids[rows], completions[rows, :n]], dim=1))
        keep = mask[rows, :n]
        states.append(hidden[:, prompt_len - 1 : prompt_len - 1 + n][keep])  # the state before each real token
        chunk_rows, cols = keep.nonzero(as_tuple=True)
        where.append((rows[chunk_rows], cols))
    rows, cols = (torch.cat(index) for index in zip(*where))
    logp = token_logprobs(torch.cat(states), weights.lm_head, completions[rows, cols], temperature)
    return logp.new_zeros(batch, length).index_put((rows, cols), logp)


def padded_completion_logprobs(weights, prompt_ids, completions, mask, temperature: float = 1.0):
    """``completion_logprobs`` as one padded batch: fixed shapes, nothing read back to the host."""
    prompt_len, length = prompt_ids.shape[1], completions.shape[1]
    hidden = hidden_states(weights, torch.cat([prompt_ids, completions], dim=1))
    states = hidden[:, prompt_len - 1 : prompt_len - 1 + length].reshape(-1, hidden.shape[-1])
    logp = token_logprobs(states, weights.lm_head, completions.reshape(-1), temperature).view(completions.shape)
    return torch.where(mask, logp, torch.zeros_like(logp))


# ---- the update in two halves of groups: the gradient noise scale's two batch sizes ----
#
# McCandlish et al. (2018), "An Empirical Model of Large-Batch Training", Appendix A:
# the squared norms of a small batch's and of the full batch's gradient give unbiased
# estimates of |G|^2 and tr(Sigma). A GRPO advantage is relative within its group of G
# completions, so the independent example is a group (docs/numbers.md, definition 8):
# the small batch is the first half of the step's groups. Its loss and the other
# half's, weighted as the full batch's loss weighs them, sum to that loss exactly, so
# the two backwards give the full gradient (in another summation order) and, on the
# way, the small batch's.


def noise_scale_step(training: dict, step: int) -> bool:
    """Whether update ``step`` (1-based) records the noise scale: every ``training.noise_scale``-th from the first."""
    every = training.get("noise_scale") or 0
    return bool(every) and (step - 1) % int(every) == 0


def group_halves(batch: int, group: int) -> tuple:
    """Row indices of the first half of the step's groups and of the rest; None with fewer than two groups."""
    groups = batch // group
    if groups < 2:
        return None
    cut = (groups // 2) * group
    rows = torch.arange(batch)
    return rows[:cut], rows[cut:]


def half_weights(loss_type: str, mask_a, mask_b) -> tuple:
    """(w_a, w_b) with loss = w_a * loss(half a) + w_b * loss(half b) for the ``loss_type`` aggregation."""
    if loss_type in ("grpo", "dr_grpo"):  # a mean over completions: each half by its completions
        a, b = float(mask_a.shape[0]), float(mask_b.shape[0])
    else:  # dapo, bnpo: a mean over tokens: each half by its tokens
        a, b = float(mask_a.sum().clamp(min=1.0)), float(mask_b.sum().clamp(min=1.0))
    return a / (a + b), b / (a + b)


def backward_in_two_halves(losses_a, losses_b, weights_a, weights_b, params) -> list:
    """Backward of each run's ``w_a loss_a + w_b loss_b`` in two passes; per run (|g_small|^2, |g_big|^2).

    One entry per run in every list (a lone worker: one run; a fused pack: K runs with
    disjoint parameters, so one pass serves them all). g_small is the gradient of a
    run's ``loss_a`` (the small batch's own mean loss), g_big that of its full loss;
    the parameters' ``.grad`` hold g_big after.
    """
    sum(w * loss for w, loss in zip(weights_a, losses_a)).backward(retain_graph=True)
    small = [_squared_norm(run) / w ** 2 for run, w in zip(params, weights_a)]
    sum(w * loss for w, loss in zip(weights_b, losses_b)).backward()
    return [(s, _squared_norm(run)) for s, run in zip(small, params)]


def _squared_norm(params) -> float:
    return float(sum(p.grad.detach().double().pow(2).sum() for p in params if p.grad is not None))

"""A batched KV-cache sampler for Llama-style decoders.

``transformers.generate`` spends most of its time in per-token Python overhead
when the model is this small, so the worker samples with a plain loop instead:
the LoRA update is merged into a private copy of the weights once per step, the
KV cache is preallocated, and the repetition penalty is one masked ``where``.
The forward pass here must agree with ``LlamaForCausalLM`` (a unit test checks
the logits), so that the policy that samples is the policy that is trained.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DecoderWeights:
    """Detached, LoRA-merged weights and the shapes the decode loop needs."""

    embed: torch.Tensor
    layers: list  # one dict per layer: q k v o gate up down ln_attn ln_mlp
    norm: torch.Tensor
    lm_head: torch.Tensor
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    inv_freq: torch.Tensor


def _effective_weight(linear) -> torch.Tensor:
    """W plus the active LoRA deltas (peft ``lora.Linear``), or W of a plain Linear."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight.detach()
    weight = base.weight.detach()
    if getattr(linear, "merged", False) or getattr(linear, "disable_adapters", False):
        return weight
    for name in linear.active_adapters:
        if name in linear.lora_A:
            weight = weight + linear.get_delta_weight(name).detach()
    return weight


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise ValueError(f"the sampler supports plain RoPE only, not {params['rope_type']!r}")
    return float(params.get("rope_theta", getattr(config, "rope_theta", None) or 10000.0))


@torch.no_grad()
def decoder_weights(model) -> DecoderWeights:
    """Collect the weights of a ``LlamaForCausalLM``, or of a peft model around one."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal_lm.config
    layers = []
    for layer in causal_lm.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append(
            {
                "q": _effective_weight(attn.q_proj),
                "k": _effective_weight(attn.k_proj),
                "v": _effective_weight(attn.v_proj),
                "o": _effective_weight(attn.o_proj),
                "gate": _effective_weight(mlp.gate_proj),
                "up": _effective_weight(mlp.up_proj),
                "down": _effective_weight(mlp.down_proj),
                "ln_attn": layer.input_layernorm.weight.detach(),
                "ln_mlp": layer.post_attention_layernorm.weight.detach(),
            }
        )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    theta = _rope_theta(config)
    device = causal_lm.model.embed_tokens.weight.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    return DecoderWeights(
        embed=causal_lm.model.embed_tokens.weight.detach(),
        layers=layers,
        norm=causal_lm.model.norm.weight.detach(),
        lm_head=_effective_weight(causal_lm.lm_head),
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        rms_eps=config.rms_norm_eps,
        inv_freq=inv_freq,
    )


def _rms_norm(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCache:
    """Keys and values for every layer, allocated once for the whole completion."""

    def __init__(self, w: DecoderWeights, batch: int, max_len: int):
        shape = (len(w.layers), batch, w.num_kv_heads, max_len, w.head_dim)
        self.keys = torch.empty(shape, dtype=w.embed.dtype, device=w.embed.device)
        self.values = torch.empty_like(self.keys)


def forward(w: DecoderWeights, tokens: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
    """Logits of the last position for ``tokens`` placed at positions start.. ."""
    batch, length = tokens.shape
    positions = torch.arange(start, start + length, device=tokens.device).float()
    freqs = positions[:, None] * w.inv_freq[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    cos, sin = angles.cos(), angles.sin()
    end = start + length
    x = F.embedding(tokens, w.embed)
    for i, layer in enumerate(w.layers):
        h = _rms_norm(x, layer["ln_attn"], w.rms_eps)
        q = F.linear(h, layer["q"]).view(batch, length, w.num_heads, w.head_dim).transpose(1, 2)
        k = F.linear(h, layer["k"]).view(batch, length, w.num_kv_heads, w.head_dim).transpose(1, 2)
        v = F.linear(h, layer["v"]).view(batch, length, w.num_kv_heads, w.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        cache.keys[i, :, :, start:end] = k
        cache.values[i, :, :, start:end] = v
        attn = F.scaled_dot_product_attention(
            q,
            cache.keys[i, :, :, :end],
            cache.values[i, :, :, :end],
            is_causal=length > 1,  # a prefill starts at 0; a single new token sees everything
            enable_gqa=w.num_heads != w.num_kv_heads,
        )
        x = x + F.linear(attn.transpose(1, 2).reshape(batch, length, -1), layer["o"])
        h = _rms_norm(x, layer["ln_mlp"], w.rms_eps)
        x = x + F.linear(F.silu(F.linear(h, layer["gate"])) * F.linear(h, layer["up"]), layer["down"])
    x = _rms_norm(x[:, -1], w.norm, w.rms_eps)
    return F.linear(x, w.lm_head)


def apply_repetition_penalty(logits, seen, penalty: float):
    """HF semantics: a seen token's logit is divided by the penalty if positive, else multiplied."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


@dataclass
class Samples:
    completions: torch.Tensor  # (batch, length) token ids, padded with eos after the stop
    mask: torch.Tensor  # (batch, length) bool: real completion tokens, the eos included
    lengths: list  # completion tokens per row, eos excluded (what a reward sees)


@torch.no_grad()
def sample(
    w: DecoderWeights,
    prompts: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    generator=None,
) -> Samples:
    """Sample completions for equal-length prompts until eos or ``max_new_tokens``."""
    batch, prompt_len = prompts.shape
    device = prompts.device
    cache = KVCache(w, batch, prompt_len + max_new_tokens)
    seen = torch.zeros(batch, w.embed.shape[0], dtype=torch.bool, device=device)
    seen.scatter_(1, prompts, True)
    out = torch.full((batch, max_new_tokens), eos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    logits = forward(w, prompts, 0, cache)
    steps = 0
    for t in range(max_new_tokens):
        logits = apply_repetition_penalty(logits, seen, repetition_penalty) / temperature
        probs = torch.softmax(logits.float(), dim=-1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        token = torch.where(finished, torch.full_like(token, eos_id), token)
        out[:, t] = token
        seen.scatter_(1, token.unsqueeze(1), True)
        finished |= token == eos_id
        steps = t + 1
        # one host sync per token; it lets a batch that has stopped stop early
        if bool(finished.all()) or t + 1 == max_new_tokens:
            break
        logits = forward(w, token.unsqueeze(1), prompt_len + t, cache)

    out = out[:, :steps]
    is_eos = out == eos_id
    # position of the first eos, or the full length where there is none
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], steps, dtype=torch.long))
    positions = torch.arange(steps, device=device)
    mask = positions[None, :] <= first_eos[:, None]
    mask &= positions[None, :] < steps
    return Samples(completions=out, mask=mask, lengths=first_eos.tolist())

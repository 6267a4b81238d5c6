"""One Llama-style decoder, written out: the weights, the KV cache and the forward that samples and is trained.

``transformers`` runs this model through general modules whose per-call overhead is
most of the time at this size, so the worker keeps its own forward: per step the
LoRA update is merged into the weights once (q/k/v and gate/up fused into one matrix
each); sampling (``sampler``, ``static_decode``) runs them without a graph against a
KV cache allocated once, and the update differentiates through the same merge into
the adapter. The forward must agree with ``LlamaForCausalLM`` (a unit test checks the
logits, with the adapter on and off). Both decodes take their types from here, so
neither imports the other's.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DecoderWeights:
    """LoRA-merged weights (carrying the graph to the adapter when built with grad) and the shapes."""

    embed: torch.Tensor
    layers: list  # one dict per layer: qkv (q, k, v stacked) o gate_up (gate, up stacked) down ln_attn ln_mlp
    norm: torch.Tensor
    lm_head: torch.Tensor
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    inv_freq: torch.Tensor


def _effective_weight(linear) -> torch.Tensor:
    """W plus the active LoRA deltas (peft ``lora.Linear``), or W of a plain Linear.

    The sum is differentiable: the gradient of a loss on the merged weight reaches
    the adapter as it would through peft's unmerged forward (the two agree only
    without LoRA dropout, and for plain LoRA).
    """
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight
    weight = base.weight
    if getattr(linear, "merged", False) or getattr(linear, "disable_adapters", False):
        return weight
    for name in linear.active_adapters:
        if name in linear.lora_A:
            if not isinstance(linear.lora_dropout[name], torch.nn.Identity) or linear.use_dora.get(name):
                raise ValueError("the merged-weight decoder needs plain LoRA with lora_dropout=0")
            weight = weight + linear.get_delta_weight(name)
    return weight


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise ValueError(f"the sampler supports plain RoPE only, not {params['rope_type']!r}")
    return float(params.get("rope_theta", getattr(config, "rope_theta", None) or 10000.0))


def _bias(linear):
    """The bias of a Linear or of the base layer of a peft ``lora.Linear``; None without one."""
    return getattr(getattr(linear, "base_layer", linear), "bias", None)


def _stacked_bias(linears) -> torch.Tensor:
    """The biases of projections fused into one matrix, stacked alike; None when none has one.

    Qwen2 carries biases on q, k and v only; a Llama with ``attention_bias`` on all four
    attention projections. LoRA (bias "none") never trains them: they are the base's.
    """
    biases = [_bias(linear) for linear in linears]
    if all(b is None for b in biases):
        return None
    return torch.cat([b if b is not None else torch.zeros(linear.out_features, device=linear.weight.device)
                      for b, linear in zip(biases, (getattr(x, "base_layer", x) for x in linears))])


def add_bias(x: torch.Tensor, bias) -> torch.Tensor:
    """``x + bias``, or ``x`` itself when the projection has no bias (the study's model: bit for bit as before)."""
    return x if bias is None else x + bias


# the optional biases a layer may carry, next to the matrices of the same name
BIAS_KEYS = ("qkv_bias", "o_bias", "gate_up_bias", "down_bias")


def decoder_weights(model, dtype: torch.dtype = None) -> DecoderWeights:
    """The weights of a Llama-family causal LM (Llama, Mistral, Qwen2: ``lorasweep.study.engine``), or of a
    peft model around one, with its active adapter merged.

    Built with grad enabled, they carry the graph back to the adapter; built under
    ``torch.no_grad()`` (or inside ``model.disable_adapter()``: the reference) they are plain tensors.
    With ``dtype`` (bf16 training) the merged weights are cast to it, differentiably,
    so the adapter itself stays in its own (fp32) precision.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal_lm.config
    layers = []
    for layer in causal_lm.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append(
            {
                "qkv": torch.cat([_effective_weight(p) for p in (attn.q_proj, attn.k_proj, attn.v_proj)]),
                "o": _effective_weight(attn.o_proj),
                "gate_up": torch.cat([_effective_weight(mlp.gate_proj), _effective_weight(mlp.up_proj)]),
                "down": _effective_weight(mlp.down_proj),
                "ln_attn": layer.input_layernorm.weight,
                "ln_mlp": layer.post_attention_layernorm.weight,
                "qkv_bias": _stacked_bias((attn.q_proj, attn.k_proj, attn.v_proj)),
                "o_bias": _bias(attn.o_proj),
                "gate_up_bias": _stacked_bias((mlp.gate_proj, mlp.up_proj)),
                "down_bias": _bias(mlp.down_proj),
            }
        )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    theta = _rope_theta(config)
    device = causal_lm.model.embed_tokens.weight.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    embed, norm = causal_lm.model.embed_tokens.weight, causal_lm.model.norm.weight
    lm_head = _effective_weight(causal_lm.lm_head)
    if dtype is not None:
        layers = [{key: None if value is None else value.to(dtype) for key, value in layer.items()} for layer in layers]
        embed, norm, lm_head = embed.to(dtype), norm.to(dtype), lm_head.to(dtype)
    return DecoderWeights(
        embed=embed,
        layers=layers,
        norm=norm,
        lm_head=lm_head,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        rms_eps=config.rms_norm_eps,
        inv_freq=inv_freq,
    )


def rope_tables(w: DecoderWeights, length: int):
    """cos and sin (position, head, head_dim) that rotate a whole fused q/k/v row at once.

    The value heads get cos 1 and sin 0, which leaves them unchanged, and ``sin``
    carries the sign of ``rotate_half``: the rotation is
    ``x * cos + roll(x, head_dim / 2) * sin``.
    """
    device, dim, rotated, kv_heads = w.embed.device, w.head_dim, w.num_heads + w.num_kv_heads, w.num_kv_heads
    freqs = torch.arange(length, device=device).float()[:, None] * w.inv_freq[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (position, 1, head_dim)
    sign = torch.cat((-torch.ones(dim // 2, device=device), torch.ones(dim // 2, device=device)))
    cos = torch.cat((angles.cos().expand(-1, rotated, -1), torch.ones(length, kv_heads, dim, device=device)), 1)
    sin = torch.cat(((angles.sin() * sign).expand(-1, rotated, -1), torch.zeros(length, kv_heads, dim, device=device)), 1)
    return cos.to(w.embed.dtype), sin.to(w.embed.dtype)


class KVCache:
    """Keys and values of every layer for ``max_len`` positions, and the RoPE tables.

    ``kv[i]`` holds layer i's keys (heads ``:num_kv_heads``) and values (the rest),
    so one copy stores both.
    """

    def __init__(self, w: DecoderWeights, batch: int, max_len: int):
        shape = (len(w.layers), batch, 2 * w.num_kv_heads, max_len, w.head_dim)
        self.kv = torch.empty(shape, dtype=w.embed.dtype, device=w.embed.device)
        self.cos, self.sin = rope_tables(w, max_len)

    def keep(self, rows: torch.Tensor, filled: int):
        """Keep only the batch rows ``rows`` (in that order); positions past ``filled`` are not copied."""
        kv = torch.empty_like(self.kv[:, : len(rows)])
        kv[..., :filled, :] = self.kv[:, rows, :, :filled]
        self.kv = kv


def rope_for(w: DecoderWeights, start: int, length: int, cache: KVCache = None):
    """cos and sin for positions start .. start + length: the cache's tables, or (no cache) new ones from 0."""
    if cache is None:
        assert start == 0, "without a cache the tokens must start at position 0"
        return rope_tables(w, length)
    return cache.cos[start : start + length], cache.sin[start : start + length]


def attend(w: DecoderWeights, qkv: torch.Tensor, layer: int, start: int, cos, sin, cache: KVCache = None):
    """One layer's attention: ``qkv`` (rows, position, q/k/v heads, dim) as the fused projection gives it,
    rotated here; returns (rows, head, position, dim).

    With a cache, the new keys and values go into it at ``start`` and the queries
    attend over everything cached; without one, over their own sequence (causal).
    """
    heads, kv_heads, dim = w.num_heads, w.num_kv_heads, w.head_dim
    length = qkv.shape[1]
    qkv = (qkv * cos + qkv.roll(dim // 2, -1) * sin).transpose(1, 2)  # (rows, head, position, dim)
    if cache is None:
        # one split, not three slices: the backward of a slice zero-fills the whole qkv
        queries, keys, values = qkv.split((heads, kv_heads, kv_heads), dim=1)
    else:
        cache.kv[layer, :, :, start : start + length] = qkv[:, heads:]
        kv = cache.kv[layer, :, :, : start + length]
        queries, keys, values = qkv[:, :heads], kv[:, :kv_heads], kv[:, kv_heads:]
    # On CUDA, SDPA with enable_gqa runs fp32 in the math kernel; with the key/value
    # heads repeated to the query heads it takes a fused one
    expand = qkv.is_cuda and heads != kv_heads
    if expand:
        keys = keys.repeat_interleave(heads // kv_heads, dim=1)
        values = values.repeat_interleave(heads // kv_heads, dim=1)
    return F.scaled_dot_product_attention(
        queries,
        keys,
        values,
        is_causal=length > 1,  # whole sequences, or a prefill; a single new token sees everything
        enable_gqa=heads != kv_heads and not expand,
    )


def hidden_states(w: DecoderWeights, tokens: torch.Tensor, start: int = 0, cache: KVCache = None) -> torch.Tensor:
    """Final (normed) hidden states (batch, length, hidden) of ``tokens`` placed at positions start.. .

    Without a cache, the tokens are whole sequences from position 0 (training). With
    one, a call with several tokens is a prefill and must start at 0; later calls
    add one token per row and attend over everything cached.
    """
    batch, length = tokens.shape
    heads, kv_heads, dim = w.num_heads, w.num_kv_heads, w.head_dim
    cos, sin = rope_for(w, start, length, cache)
    x = F.embedding(tokens, w.embed).view(batch * length, -1)  # rows are (batch, position)
    for i, layer in enumerate(w.layers):
        h = F.rms_norm(x, x.shape[-1:], layer["ln_attn"], w.rms_eps)
        qkv = F.linear(h, layer["qkv"], layer.get("qkv_bias")).view(batch, length, heads + 2 * kv_heads, dim)
        attn = attend(w, qkv, i, start, cos, sin, cache)
        x = add_bias(torch.addmm(x, attn.transpose(1, 2).reshape(batch * length, heads * dim), layer["o"].t()),
                     layer.get("o_bias"))
        h = F.rms_norm(x, x.shape[-1:], layer["ln_mlp"], w.rms_eps)
        gate, up = F.linear(h, layer["gate_up"], layer.get("gate_up_bias")).chunk(2, dim=-1)
        x = add_bias(torch.addmm(x, F.silu(gate) * up, layer["down"].t()), layer.get("down_bias"))
    return F.rms_norm(x, x.shape[-1:], w.norm, w.rms_eps).view(batch, length, -1)


def forward(w: DecoderWeights, tokens: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
    """Logits of the last position for ``tokens`` placed at positions start.. (see ``hidden_states``)."""
    return F.linear(hidden_states(w, tokens, start, cache)[:, -1], w.lm_head)


def apply_repetition_penalty(logits, previous, penalty: float):
    """HF semantics: the logit of every token in ``previous`` (ids, one row per
    batch row) is divided by the penalty if positive, else multiplied."""
    if penalty == 1.0:
        return logits
    score = logits.gather(1, previous)
    return logits.scatter(1, previous, torch.where(score < 0, score * penalty, score / penalty))


def draw(logits, generator=None, uniforms=None) -> torch.Tensor:
    """One token per row from softmax(logits), by inverse CDF with one uniform per row.

    The uniforms (batch,) come from ``generator`` unless given."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum_(dim=-1)
    if uniforms is None:
        uniforms = torch.rand(cdf.shape[0], generator=generator, device=cdf.device)
    u = uniforms.unsqueeze(1) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1).squeeze(1)


@dataclass
class Samples:
    completions: torch.Tensor  # (batch, length) token ids, padded with eos after the stop
    mask: torch.Tensor  # (batch, length) bool: real completion tokens, the eos included
    lengths: list  # completion tokens per row, eos excluded (what a reward sees)


def samples_from_tokens(generated: torch.Tensor, eos_id: int, steps: int) -> Samples:
    """Samples from the generated tokens (batch, >= steps), eos after each stop, of which ``steps`` were decoded.

    The completions are cut after the last row's eos (or at ``steps`` if a row never stopped).
    """
    out = generated[:, :steps]
    is_eos = out == eos_id
    stopped = is_eos.any(1)
    # position of the first eos, or the full length where there is none
    first_eos = torch.where(stopped, is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], steps, dtype=torch.long))
    if bool(stopped.all()):
        steps = int(first_eos.max()) + 1
        out = out[:, :steps]
    positions = torch.arange(steps, device=out.device)
    mask = positions[None, :] <= first_eos[:, None]
    return Samples(completions=out.clone(), mask=mask, lengths=first_eos.tolist())

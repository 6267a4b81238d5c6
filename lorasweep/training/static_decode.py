"""Static-shape decoding: the GPU's sampler.

``sampler.sample`` on the CPU drops finished rows and asks the host every token
whether all rows are done: on two cores the saved arithmetic is worth more than
anything else. On a GPU the arithmetic of this model is a few microseconds per
token and the cost is in launching kernels and waiting for the host, so there
the shapes stay fixed for the whole generation (docs/gpu.md, "Running on a
GPU"):

- the batch never shrinks: a finished row keeps decoding and its tokens are
  overwritten with eos;
- the KV cache holds the full length from the start (zeroed, so that unwritten
  positions are finite) and attention is masked to the positions filled so far;
- the repetition penalty is a (batch, vocab) presence mask updated in place
  (HF semantics: every token of the prompt and of the completion so far);
- the position is a device tensor that the step advances itself, and the
  uniform numbers for all tokens are drawn up front, one (tokens, batch) call;
- nothing in the token loop reads a value back to the host, except an optional
  "all finished?" every ``check_every`` tokens.

``decode_step`` is one function of tensors, mutating a ``DecodeState`` in place,
so that it can be captured once as a CUDA graph and replayed per token
(``GraphDecoder``) and traced by ``torch.compile(fullgraph=True)``.

Given the same uniforms (``uniforms``, one row per token, one column per batch
row), the static decode emits exactly the tokens of the dropping decode. Without
them each path draws its own: the dropping one a uniform per remaining row per
token, the static one ``torch.rand(max_new_tokens, batch)`` at once, so the
streams of a seed differ between the CPU and the GPU path.
"""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decoder import DecoderWeights, KVCache, Samples, add_bias, forward, samples_from_tokens

# Every this many tokens the static decode asks whether every row has stopped and
# ends early if so: one host sync per 16 tokens costs little next to 16 graph replays.
CHECK_EVERY = 16
# LORASWEEP_CUDA_GRAPH=0 runs the static decode step eagerly on CUDA (for measuring
# what the graph saves); the tokens are the same either way.
GRAPH_ENV = "LORASWEEP_CUDA_GRAPH"


@dataclass
class DecodeState:
    """Every buffer the decode step reads or writes; fixed shapes and addresses for the whole generation."""

    kv: torch.Tensor  # (layers, batch, 2 * kv_heads, max_len, head_dim), keys then values per layer
    cos: torch.Tensor  # (max_len, heads + 2 * kv_heads, head_dim)
    sin: torch.Tensor
    positions: torch.Tensor  # (max_len,) 0 .. max_len - 1, for the attention mask
    tokens: torch.Tensor  # (batch, max_len) prompt then completion, eos after a stop
    presence: torch.Tensor  # (batch, vocab) bool: token seen in the prompt or completion so far
    finished: torch.Tensor  # (batch,) bool
    logits: torch.Tensor  # (batch, vocab) logits for the next token
    pos: torch.Tensor  # (1,) long: where the next token goes
    uniforms: torch.Tensor  # (max_new_tokens, batch) one uniform per row per token
    prompt_len: int
    eos_id: int
    temperature: float
    penalty: float


def new_state(w: DecoderWeights, batch: int, prompt_len: int, max_new_tokens: int, eos_id: int,
              temperature: float, penalty: float) -> DecodeState:
    max_len = prompt_len + max_new_tokens
    device, dtype = w.embed.device, w.embed.dtype
    vocab = w.lm_head.shape[0]
    cache = KVCache(w, batch, max_len)
    cache.kv.zero_()  # masked positions must be finite: 0 * NaN would leak into the attention output
    return DecodeState(
        kv=cache.kv, cos=cache.cos, sin=cache.sin,
        positions=torch.arange(max_len, device=device),
        tokens=torch.full((batch, max_len), eos_id, dtype=torch.long, device=device),
        presence=torch.zeros(batch, vocab, dtype=torch.bool, device=device),
        finished=torch.zeros(batch, dtype=torch.bool, device=device),
        logits=torch.zeros(batch, vocab, dtype=dtype, device=device),
        pos=torch.zeros(1, dtype=torch.long, device=device),
        uniforms=torch.zeros(max_new_tokens, batch, dtype=torch.float32, device=device),
        prompt_len=prompt_len, eos_id=eos_id, temperature=float(temperature), penalty=float(penalty),
    )


def prefill(w: DecoderWeights, s: DecodeState, prompts: torch.Tensor, uniforms: torch.Tensor):
    """Reset ``s`` in place for new prompts: cache, logits of the last prompt token, presence, position."""
    prompt_len = s.prompt_len
    cache = KVCache.__new__(KVCache)
    cache.kv, cache.cos, cache.sin = s.kv, s.cos, s.sin
    s.logits.copy_(forward(w, prompts, 0, cache))  # writes the prompt's keys and values into s.kv
    s.tokens.fill_(s.eos_id)
    s.tokens[:, :prompt_len] = prompts
    s.presence.zero_()
    s.presence.scatter_(1, prompts, True)
    s.finished.zero_()
    s.pos.fill_(prompt_len)
    s.uniforms.copy_(uniforms)


def draw_with(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``decoder.draw`` with the uniforms given, (batch,): inverse CDF of softmax(logits)."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum_(dim=-1)
    return torch.searchsorted(cdf, u.unsqueeze(1) * cdf[:, -1:], right=True).clamp_(max=cdf.shape[1] - 1).squeeze(1)


def step_logits(w: DecoderWeights, s: DecodeState, token: torch.Tensor) -> torch.Tensor:
    """Logits after ``token`` (batch,) placed at position ``s.pos``; writes its keys and values into the cache.

    The query heads are laid out as (batch, kv_head, group, head_dim), so the group
    of query heads that share a key/value head forms the "query length" of one
    plain attention over that head: no repeat of the cache, no ``enable_gqa``
    (which sends fp32 to the math kernel on CUDA), and the boolean mask of filled
    positions lets SDPA pick a fused kernel.
    """
    batch = token.shape[0]
    heads, kv_heads, dim = w.num_heads, w.num_kv_heads, w.head_dim
    cos, sin = s.cos.index_select(0, s.pos), s.sin.index_select(0, s.pos)  # (1, heads + 2 kv, dim)
    filled = (s.positions <= s.pos).view(1, 1, 1, -1)
    x = F.embedding(token, w.embed)
    for i, layer in enumerate(w.layers):
        h = F.rms_norm(x, x.shape[-1:], layer["ln_attn"], w.rms_eps)
        qkv = F.linear(h, layer["qkv"], layer.get("qkv_bias")).view(batch, heads + 2 * kv_heads, dim)
        qkv = qkv * cos + qkv.roll(dim // 2, -1) * sin
        cache = s.kv[i]  # (batch, 2 kv, max_len, dim), a view: index_copy_ writes the cache
        cache.index_copy_(2, s.pos, qkv[:, heads:].unsqueeze(2))
        q = qkv[:, :heads].reshape(batch, kv_heads, heads // kv_heads, dim)
        attn = F.scaled_dot_product_attention(q, cache[:, :kv_heads], cache[:, kv_heads:], attn_mask=filled)
        x = add_bias(torch.addmm(x, attn.reshape(batch, heads * dim), layer["o"].t()), layer.get("o_bias"))
        h = F.rms_norm(x, x.shape[-1:], layer["ln_mlp"], w.rms_eps)
        gate, up = F.linear(h, layer["gate_up"], layer.get("gate_up_bias")).chunk(2, dim=-1)
        x = add_bias(torch.addmm(x, F.silu(gate) * up, layer["down"].t()), layer.get("down_bias"))
    return F.linear(F.rms_norm(x, x.shape[-1:], w.norm, w.rms_eps), w.lm_head)


def decode_step(w: DecoderWeights, s: DecodeState) -> None:
    """One token for every row, in place: penalty, temperature, draw, bookkeeping, then the next logits.

    The same operations, in the same order, as one token of ``sampler.sample``; the
    penalty as a presence mask gives what HF's gather/scatter over the history gives,
    since a token seen twice is penalised once either way.
    """
    logits = s.logits
    if s.penalty != 1.0:
        logits = torch.where(s.presence, torch.where(logits < 0, logits * s.penalty, logits / s.penalty), logits)
    if s.temperature != 1.0:
        logits = logits / s.temperature
    u = s.uniforms.index_select(0, s.pos - s.prompt_len).squeeze(0)
    token = draw_with(logits, u)
    token = torch.where(s.finished, torch.full_like(token, s.eos_id), token)
    s.tokens.index_copy_(1, s.pos, token.unsqueeze(1))
    s.finished.logical_or_(token == s.eos_id)
    s.presence.scatter_(1, token.unsqueeze(1), True)
    s.logits.copy_(step_logits(w, s, token))
    s.pos.add_(1)


def static_weights(w: DecoderWeights) -> DecoderWeights:
    """Fresh buffers of ``w``'s shapes: the fixed addresses a captured graph reads its weights from."""
    return DecoderWeights(
        embed=w.embed.detach().clone(),
        layers=[{k: None if v is None else v.detach().clone() for k, v in layer.items()} for layer in w.layers],
        norm=w.norm.detach().clone(), lm_head=w.lm_head.detach().clone(),
        num_heads=w.num_heads, num_kv_heads=w.num_kv_heads, head_dim=w.head_dim, rms_eps=w.rms_eps,
        inv_freq=w.inv_freq.detach().clone(),
    )


def copy_weights(dst: DecoderWeights, src: DecoderWeights):
    dst.embed.copy_(src.embed)
    dst.norm.copy_(src.norm)
    dst.lm_head.copy_(src.lm_head)
    for a, b in zip(dst.layers, src.layers):
        for key in a:
            if a[key] is not None:  # a projection without a bias has none to copy
                a[key].copy_(b[key])


class GraphDecoder:
    """The decode step captured once as a CUDA graph, replayed once per token.

    The weights (merged anew each training step) are copied into static buffers
    before a generation; the state is reset in place by ``prefill``. Warm-up runs
    on a side stream before the capture, as CUDA graphs require.
    """

    def __init__(self, w: DecoderWeights, state: DecodeState):
        self.w = static_weights(w)
        self.state = state
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # the warm-up's tokens are garbage; prefill resets everything it touched
                self.state.pos.fill_(state.prompt_len)
                decode_step(self.w, self.state)
        torch.cuda.current_stream().wait_stream(stream)
        self.state.pos.fill_(state.prompt_len)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            decode_step(self.w, self.state)

    def load(self, w: DecoderWeights):
        copy_weights(self.w, w)

    def step(self):
        self.graph.replay()


_RUNNERS = {}  # one per shape (a worker has one), kept so that a graph is captured once per process


def _runner(w: DecoderWeights, batch, prompt_len, max_new_tokens, eos_id, temperature, penalty, graph: bool):
    key = (batch, prompt_len, max_new_tokens, eos_id, float(temperature), float(penalty), graph,
           w.embed.device, w.embed.dtype, w.embed.shape, len(w.layers), w.num_heads, w.num_kv_heads)
    if key not in _RUNNERS:
        state = new_state(w, batch, prompt_len, max_new_tokens, eos_id, temperature, penalty)
        _RUNNERS[key] = GraphDecoder(w, state) if graph else state
    return _RUNNERS[key]


def use_graph(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get(GRAPH_ENV, "1") != "0"


@torch.no_grad()
def sample_static(w: DecoderWeights, prompts: torch.Tensor, max_new_tokens: int, eos_id: int,
                  temperature: float = 1.0, repetition_penalty: float = 1.0, generator=None,
                  uniforms: torch.Tensor = None, graph: bool = None, check_every: int = CHECK_EVERY) -> Samples:
    """Sample completions with fixed shapes; the result is laid out as ``sampler.sample``'s.

    ``graph`` (default: on CUDA unless LORASWEEP_CUDA_GRAPH=0) replays a captured
    CUDA graph per token; otherwise the step runs eagerly. ``check_every`` tokens
    (0: never) the host asks whether all rows have stopped.
    """
    batch, prompt_len = prompts.shape
    graph = use_graph(prompts.device) if graph is None else graph
    if uniforms is None:
        uniforms = torch.rand(max_new_tokens, batch, generator=generator, device=prompts.device)
    runner = _runner(w, batch, prompt_len, max_new_tokens, eos_id, temperature, repetition_penalty, graph)
    if graph:
        runner.load(w)
        weights, state = runner.w, runner.state
    else:
        weights, state = w, runner
    prefill(weights, state, prompts, uniforms)
    for t in range(max_new_tokens):
        if graph:
            runner.step()
        else:
            decode_step(weights, state)
        if check_every and (t + 1) % check_every == 0 and t + 1 < max_new_tokens and bool(state.finished.all()):
            break
    return samples_from_tokens(state.tokens[:, prompt_len:], eos_id, t + 1)

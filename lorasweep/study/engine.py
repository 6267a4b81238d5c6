"""Which engine trains a base: the fast hand-written decoder, or the generic path through the HF modules.

The fast engine (``lorasweep/training/decoder.py`` and the decodes and packs built on
it) implements one layout exactly: the Llama family — pre-norm RMSNorm blocks, rotary
positions on the whole head, grouped-query attention, a SiLU-gated MLP — with the
biases Qwen2 (q, k, v) or a Llama with ``attention_bias`` / ``mlp_bias`` carries. Every
other ``AutoModelForCausalLM`` runs on the generic engine (``lorasweep/training/generic.py``):
the model's own modules with peft and a KV cache, slower, never computed differently.
The choice is made here, at planning time, from the model's own ``config.json``, so a
dry run shows it; anything the fast engine does not implement sends the base to the
generic engine with the reason in words, or, with ``training.engine: fast``, stops the
plan in one line naming it. Pure Python: planning imports no torch.
"""

from ..errors import LorasweepError

FAST = "fast"
GENERIC = "generic"
SETTINGS = ("auto", FAST, GENERIC)
# model_type values whose layout the fast engine implements (checked feature by feature below)
FAST_FAMILY = ("llama", "mistral", "qwen2")


def _rope_type(config: dict) -> str:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return params.get("rope_type", params.get("type", "default")) if isinstance(params, dict) else "default"


def fast_engine_gaps(config: dict, max_len: int) -> list:
    """What in ``config`` (a model's config.json as a dict) the fast engine does not implement; [] if nothing.

    ``max_len`` is the longest sequence a run forms (prompt plus new tokens): a
    sliding window at least that long never slides.
    """
    model_type = config.get("model_type")
    if model_type not in FAST_FAMILY:
        return [f"model_type {model_type!r} is not one the fast engine implements ({', '.join(FAST_FAMILY)})"]
    gaps = []
    if config.get("hidden_act", "silu") != "silu":
        gaps.append(f"hidden_act {config['hidden_act']!r} (the fast engine's MLP is SiLU-gated)")
    if _rope_type(config) != "default":
        gaps.append(f"rope type {_rope_type(config)!r} (the fast engine rotates with plain RoPE)")
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        gaps.append(f"partial_rotary_factor {config['partial_rotary_factor']} (the fast engine rotates whole heads)")
    if config.get("pretraining_tp", 1) != 1:
        gaps.append(f"pretraining_tp {config['pretraining_tp']}")
    if config.get("attention_dropout", 0.0):
        gaps.append(f"attention_dropout {config['attention_dropout']}")
    window = config.get("sliding_window")
    sliding = config.get("use_sliding_window", model_type == "mistral")
    if sliding and window is not None and window < max_len:
        gaps.append(f"a sliding attention window of {window} tokens, shorter than the {max_len} a run forms")
    return gaps


def choose(setting: str, config: dict, max_len: int, model_label: str) -> tuple:
    """(engine, reason) for ``training.engine`` = ``setting`` and the base's config; raises on ``fast`` with a gap."""
    if setting not in SETTINGS:
        raise LorasweepError(f"config key 'training.engine': value {setting!r} is not allowed; expected one of "
                             + ", ".join(map(repr, SETTINGS)))
    gaps = fast_engine_gaps(config, max_len)
    if setting == GENERIC:
        return GENERIC, "training.engine is generic"
    if not gaps:
        return FAST, f"{config.get('model_type')}: the fast engine implements this layout"
    if setting == FAST:
        raise LorasweepError(f"config key 'training.engine': value 'fast' is not allowed for {model_label}: "
                             f"{gaps[0]}; use auto or generic")
    return GENERIC, "; ".join(gaps)


# the projections the fast decoder merges an adapter into (``decoder.decoder_weights``)
FAST_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def check_engine_settings(study: dict, engine: str, reason: str) -> None:
    """What only one engine can do, refused in one line when the base runs on the other."""
    targets = study["training"]["lora_targets"]
    if engine == FAST:
        other = [] if targets == "all-linear" else [t for t in targets if t not in FAST_TARGETS]
        if other:
            raise LorasweepError(f"config key 'training.lora_targets': value {targets!r} is not allowed with the fast "
                                 f"engine, which merges adapters into {', '.join(FAST_TARGETS)} only ({other[0]!r} is "
                                 "not one); set training.engine: generic to adapt other modules")
        return
    why = f"the base runs on the generic engine ({reason})"
    if study["lr_scaling"]["enabled"] and study["lr_scaling"].get("packing") == "fused":
        raise LorasweepError(f"config key 'lr_scaling.packing': value 'fused' is not allowed: fused packs need the "
                             f"fast engine, and {why}; use processes")
    if study["concurrency"]["enabled"] and "fused" in study["concurrency"].get("packing", []):
        raise LorasweepError(f"config key 'concurrency.packing': value {study['concurrency']['packing']!r} is not "
                             f"allowed: fused packs need the fast engine, and {why}; use [processes]")
    if study["training"].get("dtype", "fp32") != "fp32":
        raise LorasweepError(f"config key 'training.dtype': value {study['training']['dtype']!r} is not allowed: "
                             f"{why}, which trains in fp32")


def embedded_config(model: dict) -> dict:
    """The config.json the embedded stand-in gets (``base.base_model``): a Llama of config.yaml's ``model:``."""
    return {"model_type": "llama", "hidden_act": "silu", "rope_theta": model["rope_theta"],
            "max_position_embeddings": model["max_position_embeddings"]}

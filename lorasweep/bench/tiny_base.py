"""Random-init bases of the study's architecture (or a tiny one), with a tokenizer and prompts, built offline.

Under random weights EOS is rare, so nearly every row decodes all its tokens: the
worst case, which is what a benchmark wants. The device check, the benchmarks and
the tests build their bases here.
"""

from pathlib import Path

# SimpleStories-1.25M's shape (docs/design.md §2), and a tiny one for tests and the CPU check
STUDY_MODEL = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 341,
               "vocab_size": 4096, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
TINY_MODEL = {**STUDY_MODEL, "hidden_size": 32, "num_layers": 2, "intermediate_size": 64, "vocab_size": 512,
              "max_position_embeddings": 128}


# causal LM layouts a tiny random-init model can be built in: the fast engine's family and
# two the generic engine runs (lorasweep.study.engine decides which engine a base gets)
ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2", "gpt_neox")


def model_of(architecture: str, model_cfg: dict, eos_id: int, seed: int = 0):
    """A random-init causal LM of ``architecture`` with the sizes of ``model_cfg`` (TINY_MODEL's keys)."""
    import torch
    import transformers

    from ..base.base_model import llama_config

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    c = {key: int(value) if key not in ("rms_norm_eps", "rope_theta") else float(value) for key, value in model_cfg.items()}
    ids = {"eos_token_id": eos_id, "bos_token_id": eos_id, "pad_token_id": eos_id}
    if architecture == "llama":
        config = llama_config(model_cfg, c["vocab_size"])
        config.eos_token_id = eos_id
        return transformers.LlamaForCausalLM(config)
    if architecture in ("qwen2", "mistral"):
        kinds = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {"use_sliding_window": False}),
                 "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": None})}
        config_class, model_class, extra = kinds[architecture]
        config = config_class(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
            num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
            num_key_value_heads=c["num_kv_heads"], max_position_embeddings=c["max_position_embeddings"],
            rms_norm_eps=c["rms_norm_eps"], tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": c["rope_theta"]}, **extra, **ids)
        return model_class(config)
    if architecture == "gpt2":
        config = transformers.GPT2Config(vocab_size=c["vocab_size"], n_positions=c["max_position_embeddings"],
                                         n_embd=c["hidden_size"], n_layer=c["num_layers"], n_head=c["num_heads"],
                                         n_inner=c["intermediate_size"], **ids)
        return transformers.GPT2LMHeadModel(config)
    config = transformers.GPTNeoXConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                                        num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                                        intermediate_size=c["intermediate_size"],
                                        max_position_embeddings=c["max_position_embeddings"],
                                        rotary_pct=0.25, use_parallel_residual=True, **ids)
    return transformers.GPTNeoXForCausalLM(config)


def make_tiny_base(folder, model_cfg: dict = None, stories: int = 300, seed: int = 0,
                   architecture: str = "llama") -> Path:
    """A random-init base (model, tokenizer) and its prompts in ``folder``; returns the folder.

    The model folder is ``folder/model`` (as ``save_pretrained`` writes it, tokenizer
    included), the prompts ``folder/prompts.jsonl``, and the same prompts as text,
    one a line, ``folder/prompts.txt``.
    """
    from ..base.base_model import save_base
    from ..base.corpus import generate_stories
    from ..base.prompts import build_prompts, write_prompts
    from ..base.tokenizer import train_wordpiece

    model_cfg = model_cfg or TINY_MODEL
    folder = Path(folder)
    texts = generate_stories(stories, seed)
    tokenizer = train_wordpiece(texts, vocab_size=int(model_cfg["vocab_size"]))
    model = model_of(architecture, {**model_cfg, "vocab_size": max(len(tokenizer), int(model_cfg["vocab_size"]))},
                     tokenizer.eos_token_id, seed)
    save_base(folder / "model", model, tokenizer, "random_init.json",
              {"seed": seed, "note": "random init", "architecture": architecture})
    prompts = build_prompts(texts, tokenizer, 8, 1000)
    write_prompts(folder / "prompts.jsonl", prompts, {"source": "generated"})
    (folder / "prompts.txt").write_text("\n".join(tokenizer.decode(p) for p in prompts) + "\n", encoding="utf-8")
    return folder

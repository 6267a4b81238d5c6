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


def make_tiny_base(folder, model_cfg: dict = None, stories: int = 300, seed: int = 0) -> Path:
    """A random-init base (model, tokenizer) and its prompts in ``folder``; returns the folder.

    The model folder is ``folder/model``, the prompts ``folder/prompts.jsonl``.
    """
    import torch
    from transformers import LlamaForCausalLM

    from ..base.base_model import llama_config, save_base
    from ..base.corpus import generate_stories
    from ..base.prompts import build_prompts, write_prompts
    from ..base.tokenizer import train_wordpiece

    model_cfg = model_cfg or TINY_MODEL
    folder = Path(folder)
    texts = generate_stories(stories, seed)
    tokenizer = train_wordpiece(texts, vocab_size=int(model_cfg["vocab_size"]))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(model_cfg, len(tokenizer)))
    save_base(folder / "model", model, tokenizer, "random_init.json", {"seed": seed, "note": "random init"})
    write_prompts(folder / "prompts.jsonl", build_prompts(texts, tokenizer, 8, 1000), {"source": "generated"})
    return folder

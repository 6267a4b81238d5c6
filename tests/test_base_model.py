import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from lorasweep.base.base_model import llama_config, pretrain
from lorasweep.base.corpus import generate_stories, write_corpus
from lorasweep.errors import LorasweepError
from lorasweep.base.tokenizer import train_wordpiece

SIMPLESTORIES_1_25M = dict(
    hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=341,
    vocab_size=4096, max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
)


def test_config_matches_simplestories_1_25m():
    config = llama_config(SIMPLESTORIES_1_25M, vocab_size=600)
    assert config.vocab_size == 4096  # kept although the tokenizer is smaller
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (128, 4, 341)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.max_position_embeddings == 512 and config.rms_norm_eps == 1e-6
    assert config.rope_parameters["rope_theta"] == 10000.0
    assert config.tie_word_embeddings
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (None, 1, 1)


def test_built_model_has_1_25m_parameters_and_tied_embeddings():
    model = LlamaForCausalLM(llama_config(SIMPLESTORIES_1_25M, vocab_size=4096))
    # 4096*128 embedding (shared with the head) + 4 * 180,352 per layer + 128 final norm.
    assert model.num_parameters() == 1_245_824
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_config_errors_name_the_key():
    with pytest.raises(LorasweepError, match="num_kv_heads"):
        llama_config({k: v for k, v in SIMPLESTORIES_1_25M.items() if k != "num_kv_heads"}, 100)
    # YAML reads 1e-6 without a dot as a string; it still counts as a number.
    assert llama_config({**SIMPLESTORIES_1_25M, "rms_norm_eps": "1e-6"}, 100).rms_norm_eps == 1e-6
    with pytest.raises(LorasweepError, match="vocab_size=4096"):
        llama_config(SIMPLESTORIES_1_25M, vocab_size=5000)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    stories = generate_stories(400, seed=5)
    write_corpus(folder / "corpus.txt", stories)
    train_wordpiece(stories).save_pretrained(folder / "tokenizer")
    return folder


def _pretrain(inputs, out, steps=30, log=lambda message: None):
    # One thread: the test stays quick even when other jobs share the cores.
    return pretrain(out, inputs / "corpus.txt", inputs / "tokenizer", SIMPLESTORIES_1_25M,
                    steps=steps, batch_size=8, seq_len=32, lr=3e-3, seed=0, threads=1, log=log)


def test_tiny_pretrain_writes_a_loadable_model_that_learned(inputs, tmp_path):
    out = tmp_path / "base"
    messages = []
    record = _pretrain(inputs, out, log=messages.append)

    assert record["val_loss"] < record["val_loss_initial"] - 1.0
    assert record["train_loss"] < record["train_loss_first"]
    assert record["tokens_seen"] == 30 * 8 * 32
    assert any("val loss" in m for m in messages) and any("tokens/s" in m for m in messages)
    assert {"config.json", "model.safetensors", "tokenizer.json", "pretrain.json"} <= {
        p.name for p in out.iterdir()
    }
    assert [p.name for p in tmp_path.iterdir()] == ["base"]  # no temp folder left over

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == 4096 and model.config.eos_token_id == 1
    ids = torch.tensor([tokenizer("Mia had a cat.")["input_ids"]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


def test_same_seed_same_model(inputs, tmp_path):
    first = _pretrain(inputs, tmp_path / "a", steps=4)
    second = _pretrain(inputs, tmp_path / "b", steps=4)
    assert first["val_loss"] == second["val_loss"]


def test_failed_pretrain_leaves_no_folder(inputs, tmp_path):
    def crash_during_training(message):
        if message.startswith("step"):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        _pretrain(inputs, tmp_path / "base", log=crash_during_training)
    assert list(tmp_path.iterdir()) == []

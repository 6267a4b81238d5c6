"""The base model: its architecture, a short pretraining, and the folder it lives in.

The architecture is SimpleStories-1.25M, a 4-layer Llama. Offline, ``pretrain``
builds a stand-in of the same shape by next-token prediction on the generated
story corpus. A base folder holds the model, its tokenizer and a json record of
how it was made, and only appears once all of it is written.
"""

import math
import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ..atomic import write_json
from .corpus import read_corpus
from ..errors import LorasweepError

ARCHITECTURE_KEYS = (
    "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
    "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
)
EOS_ID = 1
VALIDATION_FRACTION = 0.02


def llama_config(model_cfg: dict, vocab_size: int) -> LlamaConfig:
    """The Llama config for ``model_cfg``; ``vocab_size`` is the tokenizer's.

    The embedding table keeps the configured size even when the tokenizer is
    smaller (as SimpleStories-1.25M does), so unused rows simply stay untrained.
    """
    missing = [key for key in ARCHITECTURE_KEYS if key not in model_cfg]
    if missing:
        raise LorasweepError(f"model config lacks key(s) {', '.join(missing)}")
    if vocab_size > int(model_cfg["vocab_size"]):
        raise LorasweepError(
            f"tokenizer has {vocab_size} tokens, more than model config "
            f"vocab_size={model_cfg['vocab_size']}"
        )
    # int()/float() because YAML reads "1e-6" as a string.
    return LlamaConfig(
        vocab_size=int(model_cfg["vocab_size"]),
        hidden_size=int(model_cfg["hidden_size"]),
        intermediate_size=int(model_cfg["intermediate_size"]),
        num_hidden_layers=int(model_cfg["num_layers"]),
        num_attention_heads=int(model_cfg["num_heads"]),
        num_key_value_heads=int(model_cfg["num_kv_heads"]),
        max_position_embeddings=int(model_cfg["max_position_embeddings"]),
        rms_norm_eps=float(model_cfg["rms_norm_eps"]),
        rope_parameters={"rope_type": "default", "rope_theta": float(model_cfg["rope_theta"])},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )


@contextmanager
def atomic_folder(path):
    """Yield a temp folder beside ``path``; it becomes ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_base(out_dir, model, tokenizer, record_name: str, record: dict) -> Path:
    """Write model, tokenizer and ``record_name`` (json) into ``out_dir`` at once."""
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / record_name, record)
    return Path(out_dir)


def _token_stream(stories, tokenizer) -> torch.Tensor:
    """All stories as one stream of ids, each story closed by EOS."""
    ids = []
    for story_ids in tokenizer(stories, add_special_tokens=False)["input_ids"]:
        ids.extend(story_ids)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.long)


def _random_windows(stream, batch_size, seq_len, generator):
    starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=generator)
    windows = torch.stack([stream[s : s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def _loss(model, x, y) -> torch.Tensor:
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def _validation_loss(model, stream, seq_len, max_windows=64, batch_size=16) -> float:
    """Mean loss over consecutive windows of the held-out stream (the same each call)."""
    length = min(seq_len + 1, len(stream))
    count = min(max_windows, len(stream) // length)
    windows = stream[: count * length].view(count, length)
    model.eval()
    losses = [
        _loss(model, chunk[:, :-1], chunk[:, 1:]).item() * len(chunk)
        for chunk in windows.split(batch_size)
    ]
    model.train()
    return sum(losses) / count


def _lr_at(step, steps, lr, warmup):
    """Linear warm-up, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def pretrain(model_dir_out, corpus_path, tokenizer_dir, model_cfg: dict, steps: int,
             batch_size: int, seq_len: int, lr: float, seed: int, threads: int,
             log=print) -> dict:
    """Train a fresh model on the corpus, save it with the tokenizer; return the record."""
    if steps < 1:
        raise LorasweepError(f"pretraining steps must be at least 1, got {steps}")
    started = time.time()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    stories = read_corpus(corpus_path)
    random.Random(seed).shuffle(stories)
    n_val = max(1, round(VALIDATION_FRACTION * len(stories)))
    val_stream = _token_stream(stories[:n_val], tokenizer)
    train_stream = _token_stream(stories[n_val:], tokenizer)
    if len(train_stream) <= seq_len + 1 or len(val_stream) < 2:
        raise LorasweepError(
            f"corpus {corpus_path} is too small: {len(stories)} stories, "
            f"{len(train_stream)} training tokens for seq_len={seq_len}"
        )

    model = LlamaForCausalLM(llama_config(model_cfg, len(tokenizer)))
    model.train()
    # Weight decay on matrices only, not on norms (nanoGPT's grouping).
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 20)
    log_every = max(1, steps // 10)
    val_loss_initial = _validation_loss(model, val_stream, seq_len)
    log(f"pretrain: {model.num_parameters():,} parameters, {len(train_stream):,} training "
        f"tokens, {steps} steps of {batch_size}x{seq_len}, initial val loss {val_loss_initial:.3f}")

    window_loss, window_start = 0.0, time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        x, y = _random_windows(train_stream, batch_size, seq_len, generator)
        loss = _loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

        window_loss += loss.item()
        if step == 0:
            first_loss = loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            done_in_window = (step % log_every) + 1
            train_loss = window_loss / done_in_window
            speed = done_in_window * batch_size * seq_len / (time.time() - window_start)
            log(f"step {step + 1}/{steps}  train loss {train_loss:.3f}  {speed:,.0f} tokens/s")
            window_loss, window_start = 0.0, time.time()

    val_loss = _validation_loss(model, val_stream, seq_len)
    log(f"pretrain: final val loss {val_loss:.3f}")
    record = {
        "steps": steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "seed": seed,
        "threads": threads,
        "tokens_seen": steps * batch_size * seq_len,
        "num_parameters": model.num_parameters(),
        "train_stories": len(stories) - n_val,
        "val_stories": n_val,
        "train_loss_first": first_loss,
        "train_loss": train_loss,
        "val_loss_initial": val_loss_initial,
        "val_loss": val_loss,
        "wall_seconds": round(time.time() - started, 2),
    }
    save_base(model_dir_out, model, tokenizer, "pretrain.json", record)
    return record

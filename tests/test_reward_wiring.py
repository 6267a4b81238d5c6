"""The worker finds the reward's sentence delimiters and the end token, or says which is missing."""

import json
import subprocess
import sys

import pytest
from transformers import PreTrainedTokenizerFast

from lorasweep.study.cellspec import WorkerSpec
from lorasweep.base.corpus import generate_stories
from lorasweep.errors import LorasweepError
from lorasweep.base.tokenizer import UNK, delimiter_ids, eos_id, train_wordpiece
from workflow import ROOT


@pytest.fixture(scope="module")
def no_bang():
    """A tokenizer whose stories end sentences with '.' and '?' only: no '!' token."""
    stories = [s.replace("!", ".") for s in generate_stories(300, seed=5)]
    return train_wordpiece(stories, vocab_size=300)


@pytest.fixture(scope="module")
def no_eos():
    full = train_wordpiece(generate_stories(300, seed=5), vocab_size=300)
    return PreTrainedTokenizerFast(tokenizer_object=full.backend_tokenizer, unk_token=UNK)


def test_delimiter_ids_are_the_three_in_order():
    tokenizer = train_wordpiece(generate_stories(300, seed=5), vocab_size=300)
    vocab = tokenizer.get_vocab()
    assert delimiter_ids(tokenizer) == [vocab["."], vocab["?"], vocab["!"]]
    assert eos_id(tokenizer) == 1


def test_a_missing_delimiter_is_named(no_bang):
    assert "?" in no_bang.get_vocab() and "!" not in no_bang.get_vocab()
    with pytest.raises(LorasweepError) as error:
        delimiter_ids(no_bang)
    assert "has no token for '!' of the sentence delimiters '.' '?' '!'" in str(error.value)


def test_a_tokenizer_without_eos_is_named(no_eos):
    assert no_eos.eos_token_id is None
    with pytest.raises(LorasweepError, match=r"has no end-of-sequence token \(eos_token\)"):
        eos_id(no_eos)


def run_worker(tokenizer, tmp_path):
    """The worker entry point on a base folder holding only this tokenizer: it must stop at loading it."""
    base = tmp_path / "base"
    tokenizer.save_pretrained(base)
    # only what loading the task reads: it must stop before anything else is needed
    spec = WorkerSpec.alone(rank=4, batch_size=4, lr=1e-3, steps=1, device="cpu", base_dir=base,
                            training={"generations_per_prompt": 4, "reward": "sentence_length_10_smooth"},
                            prompts=tmp_path / "no-prompts.jsonl", steps_out=tmp_path / "steps.jsonl")
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    done = subprocess.run([sys.executable, "-m", "lorasweep", "worker", str(tmp_path / "spec.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return done, str(base)


def test_the_worker_stops_on_a_tokenizer_without_a_delimiter(no_bang, tmp_path):
    done, base = run_worker(no_bang, tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"lorasweep worker: error: tokenizer {base} has no token for '!' of the sentence delimiters" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_worker_stops_on_a_tokenizer_without_eos(no_eos, tmp_path):
    done, base = run_worker(no_eos, tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"lorasweep worker: error: tokenizer {base} has no end-of-sequence token" in done.stderr
    assert "Traceback" not in done.stderr

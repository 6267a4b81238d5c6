import pytest
from transformers import AutoTokenizer

from lorasweep.base.corpus import generate_stories
from lorasweep.errors import LorasweepError
from lorasweep.base.tokenizer import delimiter_ids, train_wordpiece


@pytest.fixture(scope="module")
def stories():
    return generate_stories(1000, seed=3)


@pytest.fixture(scope="module")
def tokenizer(stories):
    return train_wordpiece(stories)


def test_special_tokens_are_unk_0_and_eos_1_without_bos(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1]) == ["[UNK]", "[EOS]"]
    assert tokenizer.unk_token_id == 0
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 1
    assert tokenizer.bos_token is None


def test_encoding_adds_no_special_token_and_lowercases(tokenizer):
    ids = tokenizer("Mia ran.")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["mia", "ran", "."]
    assert tokenizer("MIA RAN.")["input_ids"] == ids


def test_delimiters_and_punctuation_are_tokens_of_their_own(tokenizer):
    assert tokenizer.tokenize('Mia ran. Is it? Wow! "Go," said Leo.') == [
        "mia", "ran", ".", "is", "it", "?", "wow", "!", '"', "go", ",", '"', "said", "leo", ".",
    ]
    assert delimiter_ids(tokenizer) == tokenizer.convert_tokens_to_ids([".", "?", "!"])
    assert len(set(delimiter_ids(tokenizer))) == 3


def test_unknown_characters_map_to_unk(tokenizer):
    assert tokenizer("€")["input_ids"] == [0]


def test_vocabulary_is_capped(stories):
    assert len(train_wordpiece(stories, vocab_size=100)) <= 100


def test_save_and_load_give_identical_ids(tokenizer, stories, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sample = stories[:50] + ["Where is my ball? Wow!", "unseen zebra words."]
    assert loaded(sample)["input_ids"] == tokenizer(sample)["input_ids"]
    assert (loaded.unk_token_id, loaded.eos_token_id, loaded.pad_token_id) == (0, 1, 1)
    assert loaded.bos_token is None
    assert delimiter_ids(loaded) == delimiter_ids(tokenizer)
    assert loaded.decode(loaded("Mia ran home.")["input_ids"]) == "mia ran home."


def test_delimiter_ids_names_the_problem_when_none_exist():
    plain = train_wordpiece(["no punctuation here at all"] * 10)
    with pytest.raises(LorasweepError, match="sentence delimiters"):
        delimiter_ids(plain)

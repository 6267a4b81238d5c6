import re
from collections import Counter
from statistics import mean

import pytest

from lorasweep.base.corpus import generate_stories, read_corpus, write_corpus
from lorasweep.definitions.rewards import sentence_lengths
from lorasweep.base.tokenizer import delimiter_ids, train_wordpiece

SENTENCE_END = re.compile(r"[.?!]")


@pytest.fixture(scope="module")
def stories():
    return generate_stories(2000, seed=7)


def test_same_seed_same_stories_other_seed_other_stories():
    assert generate_stories(50, seed=1) == generate_stories(50, seed=1)
    assert generate_stories(50, seed=1) != generate_stories(50, seed=2)


def test_stories_are_varied(stories):
    assert len(set(stories)) >= 0.99 * len(stories)
    words = {w for s in stories for w in re.findall(r"[a-z]+", s.lower())}
    assert len(words) > 200


def test_three_to_eight_sentences_ending_mostly_in_full_stops(stories):
    counts = [len(SENTENCE_END.findall(s)) for s in stories]
    assert min(counts) == 3 and max(counts) == 8
    ends = Counter(c for s in stories for c in SENTENCE_END.findall(s))
    assert ends["."] > 0.8 * sum(ends.values())
    assert ends["?"] > 0 and ends["!"] > 0
    assert any("," in s for s in stories) and any('"' in s for s in stories)
    assert all("\n" not in s and s.endswith((".", "?", "!")) for s in stories)


def test_sentence_lengths_in_tokens_centre_near_nine_with_many_tens(stories):
    tokenizer = train_wordpiece(stories)
    delimiters = frozenset(delimiter_ids(tokenizer))
    lengths = [
        n
        for ids in tokenizer(stories, add_special_tokens=False)["input_ids"]
        for n in sentence_lengths(ids, delimiters)
    ]
    share = Counter(lengths)
    assert 8.0 <= mean(lengths) <= 9.0
    assert min(lengths) >= 3 and max(lengths) <= 16
    assert sum(share[n] for n in range(4, 17)) >= 0.95 * len(lengths)
    # Exactly-ten sentences are frequent enough for RL to find and reinforce.
    assert share[10] >= 0.12 * len(lengths)
    # The corpus uses closed word lists, so no word falls back to [UNK].
    assert tokenizer.unk_token_id not in {i for ids in tokenizer(stories[:200])["input_ids"] for i in ids}


def test_corpus_file_round_trip(tmp_path, stories):
    path = write_corpus(tmp_path / "corpus.txt", stories[:100])
    assert read_corpus(path) == stories[:100]
    assert path.read_text().count("\n") == 100

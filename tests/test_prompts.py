import itertools

import pytest

from lorasweep.base.corpus import generate_stories
from lorasweep.errors import LorasweepError
from lorasweep.base.prompts import build_prompts, read_prompts, read_prompts_meta, write_prompts
from lorasweep.base.tokenizer import train_wordpiece


class WordTokenizer:
    """Each whitespace word's length is its id: easy to reason about in tests."""

    def __call__(self, texts, add_special_tokens=True):
        assert add_special_tokens is False
        return {"input_ids": [[len(w) for w in text.split()] for text in texts]}


def test_dedup_keeps_first_occurrence_order_and_skips_short_stories():
    stories = ["a bb ccc", "a b", "dd e f g", "x yy zzz w", "a bb", "q"]
    prompts = build_prompts(stories, WordTokenizer(), prompt_tokens=2, num_prompts=100, min_prompts=1)
    # "a bb ccc" -> [1, 2]; "a b" -> [1, 1]; "dd e f g" -> [2, 1]; "x yy.." and "a bb" repeat [1, 2].
    assert prompts == [[1, 2], [1, 1], [2, 1]]
    assert build_prompts(stories, WordTokenizer(), prompt_tokens=4, min_prompts=1) == [[2, 1, 1, 1], [1, 2, 3, 1]]


def test_stops_at_num_prompts_even_on_an_endless_stream():
    endless = (" ".join("w" * (1 + (n >> k) % 5) for k in range(8)) for n in itertools.count())
    prompts = build_prompts(endless, WordTokenizer(), prompt_tokens=8, num_prompts=50)
    assert len(prompts) == 50 and len({tuple(p) for p in prompts}) == 50


def test_too_few_prompts_is_an_error():
    with pytest.raises(LorasweepError, match="only 1 distinct prompts"):
        build_prompts(["a b c"] * 100, WordTokenizer(), prompt_tokens=3)


def test_real_tokenizer_prompts_are_story_openings_without_special_tokens():
    stories = generate_stories(500, seed=11)
    tokenizer = train_wordpiece(stories)
    prompts = build_prompts(stories, tokenizer, prompt_tokens=8, num_prompts=200)
    assert len(prompts) == 200 and all(len(p) == 8 for p in prompts)
    assert not {0, 1} & {i for p in prompts for i in p}
    first = tokenizer(stories[0], add_special_tokens=False)["input_ids"][:8]
    assert prompts[0] == first


def test_prompt_file_round_trip(tmp_path):
    prompts = [[5, 6, 7], [8, 9, 10]]
    meta = {"source": "embedded", "prompt_tokens": 3}
    path = write_prompts(tmp_path / "prompts.jsonl", prompts, meta)
    assert read_prompts(path) == prompts
    assert read_prompts_meta(path) == meta

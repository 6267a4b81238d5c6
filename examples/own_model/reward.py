"""A reward of one's own, in TRL's form: the prompts and completions as text in, one float per completion out.

Short sentences: each sentence of a completion (split at '.', '?' and '!') scores
max(0, 1 - |words - 6| / 6), the completion the mean over its sentences, 0 without
one. Any function of this shape works, in any file: name it in the config as
``training.reward: path/to/file.py:function``.
"""

import re


def short_sentences(prompts: list[str], completions: list[str]) -> list[float]:
    scores = []
    for completion in completions:
        sentences = [s.split() for s in re.split(r"[.?!]", completion) if s.strip()]
        scores.append(sum(max(0.0, 1 - abs(len(words) - 6) / 6) for words in sentences) / len(sentences)
                      if sentences else 0.0)
    return scores

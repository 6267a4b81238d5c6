"""Rewards on token ids, one function each, looked up by name in ``REWARDS``.

A reward takes the completion's token ids (up to but excluding the stop token),
the tokenizer's sentence-delimiter ids, and returns a float. Working on ids keeps
text decoding out of the training step.
"""

from typing import Callable, Sequence

RewardFn = Callable[[Sequence[int], frozenset], float]

REWARDS: dict[str, RewardFn] = {}


def register(name: str):
    def add(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return add


def sentence_lengths(ids: Sequence[int], delimiters: frozenset) -> list[int]:
    """Token counts of the sentences in ``ids``.

    A sentence is a maximal run of non-delimiter tokens; the delimiter itself is
    not counted and empty runs (".." or a leading ".") are not sentences. The
    last run counts even without a closing delimiter: an unfinished fragment is
    scored like any other sentence, as in the study.
    """
    lengths, run = [], 0
    for token in ids:
        if token in delimiters:
            if run:
                lengths.append(run)
            run = 0
        else:
            run += 1
    if run:
        lengths.append(run)
    return lengths


def _sentence_length_smooth(ids, delimiters, target: int, slope: float) -> float:
    lengths = sentence_lengths(ids, delimiters)
    if not lengths:
        return 0.0
    return sum(max(0.0, 1.0 - slope * abs(target - n)) for n in lengths) / len(lengths)


@register("sentence_length_10_smooth")
def sentence_length_10_smooth(ids, delimiters) -> float:
    """Mean over sentences of max(0, 1 - 0.2 * |10 - n|); 0 without a sentence."""
    return _sentence_length_smooth(ids, delimiters, target=10, slope=0.2)


@register("sentence_length_5_smooth")
def sentence_length_5_smooth(ids, delimiters) -> float:
    """Like sentence_length_10_smooth with 5 tokens as the ideal length."""
    return _sentence_length_smooth(ids, delimiters, target=5, slope=0.2)


def get_reward(name: str) -> RewardFn:
    try:
        return REWARDS[name]
    except KeyError:
        from ..errors import LorasweepError

        raise LorasweepError(
            f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}"
        ) from None

"""Has a run collapsed? Diversity measures of a few sampled completions (pure Python).

A run can reach a high reward by repeating one template sentence. A worker
samples one completion for each of a fixed set of held-out prompts (20 by
default) when it reaches its target, or after its last step if it never does,
and these measures are computed on the decoded completions:

- ``distinct_first``: how many different first sentences there are among them
  (the text up to and including the first ``.``, ``?`` or ``!``, or the whole
  text without one; compared lower-cased with spaces collapsed);
- ``jaccard``: the mean over all pairs of samples of the Jaccard similarity of
  their word sets (|A and B| / |A or B|; 1 for two empty samples);
- ``distinct_2``: distinct word bigrams over all bigrams of all samples (0 when
  no sample has two words).

The flag rule (:func:`is_degenerate`): a run is *degenerate* if at most
``max_distinct_flag`` (7) of its 20 first sentences are distinct, or if the mean
pairwise Jaccard similarity is at least ``min_jaccard_flag`` (0.18). Read by
hand, collapsed runs had 5-6 distinct first sentences of 20 (8-9 borderline,
13-17 coherent) and a mean Jaccard of 0.18-0.36 (0.12-0.15 for coherent runs).
"""

import re
from itertools import combinations

WORD = re.compile(r"[a-z0-9']+")
SENTENCE_END = re.compile(r"[.?!]")

# The sampling seed of the evaluation: the same for every worker and run, and a
# generator of its own, so that the training's random streams are not touched.
EVAL_SEED = 20240


def first_sentence(text: str) -> str:
    """The text up to and including its first sentence delimiter, normalised for comparison."""
    end = SENTENCE_END.search(text)
    sentence = text[: end.end()] if end else text
    return " ".join(sentence.lower().split())


def words(text: str) -> list:
    return WORD.findall(text.lower())


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def mean_pairwise_jaccard(texts: list) -> float:
    sets = [set(words(t)) for t in texts]
    pairs = list(combinations(sets, 2))
    if not pairs:
        return 1.0
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs)


def distinct_2(texts: list) -> float:
    bigrams = [pair for t in texts for pair in zip(words(t), words(t)[1:])]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def measure(texts: list) -> dict:
    """The three measures of a run's samples (decoded completions, without their prompts)."""
    return {
        "samples": len(texts),
        "distinct_first": len({first_sentence(t) for t in texts}),
        "jaccard": mean_pairwise_jaccard(texts),
        "distinct_2": distinct_2(texts),
    }


def is_degenerate(measures: dict, max_distinct_flag: int, min_jaccard_flag: float) -> bool:
    """Degenerate: distinct first sentences <= ``max_distinct_flag``, or mean Jaccard >= ``min_jaccard_flag``."""
    return measures["distinct_first"] <= max_distinct_flag or measures["jaccard"] >= min_jaccard_flag


def base_reference_text(record: dict, settings: dict) -> str:
    """What the untrained base's own samples read (``lorasweep.training.base_samples``), for under a table.

    Read against it, a flag says the run moved away from its base towards collapse;
    a base that is flagged itself makes the rule meaningless for its runs, and says so.
    The measures are recomputed from the record's texts, as for every seed.
    """
    base = measure([s["completion"] for s in record["samples"]])
    flagged = is_degenerate(base, settings["max_distinct_flag"], settings["min_jaccard_flag"])
    text = (f"The untrained base, sampled alike: {base['distinct_first']} of {base['samples']} first sentences "
            f"distinct, mean Jaccard {base['jaccard']:.3f}, distinct-2 {base['distinct_2']:.3f}")
    if flagged:
        return text + (" - flagged by the same rule, so on this base the rule cannot tell a collapsed run from "
                       "an untrained one; read the degenerate column with care")
    return text + " (not flagged)"


def rule_text(settings: dict) -> str:
    """The flag rule in words, for under a table."""
    return (f"degenerate = seeds whose {settings['samples']} samples of held-out prompts (taken when the run "
            f"reached its target, or after its last step) have at most {settings['max_distinct_flag']} distinct "
            f"first sentences or a mean pairwise Jaccard similarity of word sets of at least "
            f"{settings['min_jaccard_flag']:g}")

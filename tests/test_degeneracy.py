import pytest

from lorasweep.training import degeneracy

RULE = {"samples": 20, "max_distinct_flag": 7, "min_jaccard_flag": 0.18}


def test_twenty_identical_samples_are_one_first_sentence_and_jaccard_one():
    texts = ["the cat sat on the mat. then it slept."] * 20
    m = degeneracy.measure(texts)
    assert m["samples"] == 20 and m["distinct_first"] == 1 and m["jaccard"] == 1.0
    # bigrams per sample: the cat, cat sat, sat on, on the, the mat, mat then, then it, it slept;
    # 8 distinct of 20 x 8 = 160
    assert m["distinct_2"] == pytest.approx(8 / 160)
    assert degeneracy.is_degenerate(m, 7, 0.18)


def test_twenty_samples_without_a_shared_word_are_twenty_first_sentences_and_jaccard_zero():
    texts = [f"word{i}a word{i}b. word{i}c" for i in range(20)]
    m = degeneracy.measure(texts)
    assert (m["distinct_first"], m["jaccard"], m["distinct_2"]) == (20, 0.0, 1.0)
    assert not degeneracy.is_degenerate(m, 7, 0.18)


def test_first_sentences_are_compared_normalised_and_end_at_the_first_delimiter():
    assert degeneracy.first_sentence("  The dog   ran!  It was fast.") == "the dog ran!"
    assert degeneracy.first_sentence("no end here") == "no end here"
    assert degeneracy.first_sentence("") == ""
    texts = ["The dog ran. A", "the  dog ran. B", "The dog ran? C", "a cat"]
    assert degeneracy.measure(texts)["distinct_first"] == 3  # "the dog ran." twice, "the dog ran?", "a cat"


def test_mean_pairwise_jaccard_and_distinct_2_by_hand():
    # word sets {a, b}, {b, c}, {a, b, c}: J = 1/3, 2/3, 2/3 over the three pairs -> mean 5/9
    texts = ["a b", "b c", "a b c"]
    assert degeneracy.mean_pairwise_jaccard(texts) == pytest.approx(5 / 9)
    # bigrams: (a b), (b c), (a b), (b c): 2 distinct of 4
    assert degeneracy.distinct_2(texts) == pytest.approx(0.5)
    assert degeneracy.jaccard(set(), set()) == 1.0 and degeneracy.distinct_2(["one", ""]) == 0.0


@pytest.mark.parametrize("distinct, jaccard, flagged", [
    (7, 0.10, True),    # at most 7 distinct first sentences
    (8, 0.10, False),   # borderline diversity, low overlap
    (13, 0.18, True),   # overlap at the threshold
    (13, 0.179, False),
    (5, 0.36, True),
])
def test_the_flag_rule_at_its_thresholds(distinct, jaccard, flagged):
    assert degeneracy.is_degenerate({"distinct_first": distinct, "jaccard": jaccard}, 7, 0.18) is flagged


def test_the_rule_in_words_names_both_thresholds():
    text = degeneracy.rule_text(RULE)
    assert "at most 7 distinct first sentences" in text and "at least 0.18" in text and "20 samples" in text


def test_one_empty_word_set_shares_nothing_and_one_sample_is_its_own_pair():
    # {} against {a}: nothing shared of one word -> 0 (only two empty sets are alike, 1)
    assert degeneracy.jaccard(set(), {"a"}) == 0.0 and degeneracy.jaccard({"a"}, set()) == 0.0
    # no pair to compare: the mean is 1, as for identical samples
    assert degeneracy.mean_pairwise_jaccard(["a b"]) == 1.0 and degeneracy.measure(["a b"])["jaccard"] == 1.0


def test_distinct_2_counts_word_pairs_not_words():
    # "a b c b": pairs (a b), (b c), (c b), all distinct -> 1; its words after the first, b c b, are not
    assert degeneracy.distinct_2(["a b c b"]) == 1.0

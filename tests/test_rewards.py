import pytest

from lorasweep.errors import LorasweepError
from lorasweep.definitions.rewards import REWARDS, get_reward, sentence_length_10_smooth, sentence_lengths

DOT, QM, EX = 5, 6, 7
DELIMS = frozenset({DOT, QM, EX})


def words(n):
    return [100 + i for i in range(n)]


def test_sentence_lengths_split_at_every_delimiter_and_skip_empty_runs():
    ids = words(3) + [DOT] + [DOT] + words(2) + [QM] + words(4) + [EX] + words(1)
    assert sentence_lengths(ids, DELIMS) == [3, 2, 4, 1]
    assert sentence_lengths([DOT, QM], DELIMS) == []


def test_a_ten_token_sentence_scores_one():
    assert sentence_length_10_smooth(words(10) + [DOT], DELIMS) == pytest.approx(1.0)


@pytest.mark.parametrize("n, expected", [(9, 0.8), (11, 0.8), (8, 0.6), (12, 0.6), (5, 0.0), (15, 0.0), (3, 0.0), (20, 0.0)])
def test_score_falls_by_a_fifth_per_token_away_from_ten(n, expected):
    assert sentence_length_10_smooth(words(n) + [DOT], DELIMS) == pytest.approx(expected)


def test_reward_is_the_mean_over_sentences_including_an_unfinished_last_fragment():
    # 10 tokens (1.0), 8 tokens (0.6), then an unfinished fragment of 9 (0.8)
    ids = words(10) + [DOT] + words(8) + [QM] + words(9)
    assert sentence_length_10_smooth(ids, DELIMS) == pytest.approx((1.0 + 0.6 + 0.8) / 3)


def test_no_sentence_scores_zero():
    assert sentence_length_10_smooth([], DELIMS) == 0.0
    assert sentence_length_10_smooth([DOT, DOT], DELIMS) == 0.0


def test_registry_knows_the_study_reward_and_names_unknown_ones():
    assert REWARDS["sentence_length_10_smooth"] is sentence_length_10_smooth
    with pytest.raises(LorasweepError, match="unknown reward 'nope'.*sentence_length_10_smooth"):
        get_reward("nope")


def test_the_registry_serves_the_study_rewards_by_name():
    # 3 tokens then a delimiter, then 5: max(0, 1 - 0.2 x |5 - 3|) = 0.6 and 1.0 -> 0.8 with target 5;
    # with target 10: max(0, 1 - 1.4) = 0 and 1 - 0.2 x 5 = 0 -> 0
    ids = words(3) + [DOT] + words(5)
    assert get_reward("sentence_length_5_smooth")(ids, DELIMS) == pytest.approx(0.8)
    assert get_reward("sentence_length_10_smooth")(ids, DELIMS) == 0.0
    with pytest.raises(LorasweepError) as error:
        get_reward("nope")
    assert str(error.value).endswith("known rewards: sentence_length_10_smooth, sentence_length_5_smooth")

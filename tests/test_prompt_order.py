import pytest
import torch

from lorasweep.errors import LorasweepError
from lorasweep.training.run import prompt_batches, split_prompts


def draw(seed, num_prompts, per_step, steps):
    batches = prompt_batches(num_prompts, per_step, torch.Generator().manual_seed(seed))
    return [next(batches).tolist() for _ in range(steps)]


def test_one_epoch_uses_every_prompt_once():
    steps = draw(0, num_prompts=12, per_step=3, steps=4)
    assert sorted(i for step in steps for i in step) == list(range(12))


def test_a_step_that_outruns_its_epoch_wraps_into_the_next_permutation():
    generator = torch.Generator().manual_seed(3)
    first, second = torch.randperm(10, generator=generator).tolist(), torch.randperm(10, generator=generator).tolist()
    steps = draw(3, num_prompts=10, per_step=4, steps=5)
    assert [i for step in steps for i in step] == first + second
    assert steps[2] == first[8:] + second[:2]  # the end of epoch 1, then the start of epoch 2


def test_the_order_is_fixed_by_the_seed_and_differs_between_seeds():
    assert draw(1, 50, 5, 10) == draw(1, 50, 5, 10)
    assert draw(1, 50, 5, 10) != draw(2, 50, 5, 10)


def test_held_out_prompts_are_the_last_of_the_bank_and_never_in_the_training_pool():
    bank = torch.arange(30).view(30, 1)
    train, held_out = split_prompts(bank, 20)
    assert train.view(-1).tolist() == list(range(10)) and held_out.view(-1).tolist() == list(range(10, 30))
    with pytest.raises(LorasweepError, match="20 prompts; the degeneracy check holds out 20"):
        split_prompts(bank[:20], 20)

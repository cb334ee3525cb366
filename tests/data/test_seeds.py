"""Named random streams: the same seed and names give the same draws, others differ."""

import torch

from rational_icl.data import CategoricalSequence, generator, seed_for


def test_same_seed_same_data_and_streams_differ():
    setting = CategoricalSequence(num_dims=8, context_length=32)
    first = setting.sample_batch(setting.sample_tasks(16, generator(1, "a")), 8, generator(1, "b"))
    again = setting.sample_batch(setting.sample_tasks(16, generator(1, "a")), 8, generator(1, "b"))
    other = setting.sample_batch(setting.sample_tasks(16, generator(1, "a")), 8, generator(2, "b"))
    assert torch.equal(first.tokens, again.tokens)
    assert not torch.equal(first.tokens, other.tokens)
    assert seed_for(1, "tasks", 4) == seed_for(1, "tasks", 4) != seed_for(1, "tasks", 8)

"""Samplers: seeded, batched, with the statistics of the settings in docs/science.md."""

import math

import pytest
import torch

from rational_icl.data import (
    CategoricalSequence,
    Classification,
    LinearRegression,
    generator,
    load_specs,
    make_setting,
    seed_for,
)


def test_same_seed_same_data_and_streams_differ():
    setting = CategoricalSequence(num_dims=8, context_length=32)
    first = setting.sample_batch(setting.sample_tasks(16, generator(1, "a")), 8, generator(1, "b"))
    again = setting.sample_batch(setting.sample_tasks(16, generator(1, "a")), 8, generator(1, "b"))
    other = setting.sample_batch(setting.sample_tasks(16, generator(1, "a")), 8, generator(2, "b"))
    assert torch.equal(first.tokens, again.tokens)
    assert not torch.equal(first.tokens, other.tokens)
    assert seed_for(1, "tasks", 4) == seed_for(1, "tasks", 4) != seed_for(1, "tasks", 8)


def test_dirichlet_tasks_have_the_prior_moments():
    setting = CategoricalSequence(num_dims=4, context_length=2, prior=(0.5, 1.0, 2.0, 4.5))
    probs = setting.sample_tasks(200_000, generator(0, "dirichlet")).tasks
    alpha = torch.tensor([0.5, 1.0, 2.0, 4.5], dtype=torch.float64)
    total = alpha.sum()
    mean = alpha / total
    variance = mean * (1 - mean) / (total + 1)
    assert torch.allclose(probs.mean(0), mean, atol=3e-3)
    assert torch.allclose(probs.var(0), variance, rtol=0.03)


def test_categorical_tokens_follow_their_task():
    setting = CategoricalSequence(num_dims=5, context_length=4000)
    tasks = setting.sample_tasks(3, generator(0, "t"))
    batch = setting.sample_batch(tasks, 3, generator(0, "s"), task_index=torch.arange(3))
    frequency = torch.nn.functional.one_hot(batch.tokens, 5).double().mean(1)  # (B, K)
    assert torch.allclose(frequency, tasks.tasks, atol=0.03)
    assert batch.target.shape == (3, 4000)


def test_regression_moments():
    setting = LinearRegression(num_dims=8, context_length=64, noise_variance=8 / 256)
    tasks = setting.sample_tasks(4, generator(0, "t"))
    batch = setting.sample_batch(tasks, 512, generator(0, "s"))
    residual = batch.y - torch.einsum("btd,bd->bt", batch.x, tasks.tasks[batch.task_index])
    assert residual.var().item() == pytest.approx(8 / 256, rel=0.05)
    assert batch.x.var().item() == pytest.approx(1.0, rel=0.02)


def test_classification_query_comes_from_context_and_iwl_keeps_it_out():
    setting = Classification(num_dims=8, context_length=9, within_class_variance=0.5)
    tasks = setting.sample_tasks(20, generator(0, "t"))
    batch = setting.sample_batch(tasks, 256, generator(0, "s"))
    in_context = (batch.context_index == batch.task_index[:, None]).any(1)
    assert in_context.all()
    assert torch.equal(batch.query_label, tasks.labels[batch.task_index])
    iwl = setting.sample_batch(tasks, 256, generator(0, "s"), in_weights=True)
    assert not (iwl.context_index == iwl.task_index[:, None]).any()
    # Noisy items keep unit variance per dimension times 1/d: (1/d + eps/d) / (1 + eps).
    items = setting.sample_batch(
        setting.sample_tasks(5000, generator(1, "t")), 5000, generator(1, "s")
    )
    assert items.query_item.var().item() == pytest.approx(1 / 8, rel=0.05)
    assert batch.target.shape == (256, 1)


def test_make_setting_from_presets():
    names = [make_setting(spec.expand()[0]).name for spec in load_specs("tiny")]
    assert names == ["categorical-sequence", "linear-regression", "classification"]
    regression = make_setting(load_specs("tiny-regression")[0].expand()[0])
    assert regression.noise_variance == pytest.approx(4 / 256)
    assert math.isclose(
        make_setting(load_specs("tiny-classification")[0]).within_class_variance, 0.5
    )

"""The categorical setting: Dirichlet tasks, symbol sequences, and its strategies against
brute-force float64 references with explicit loops."""

import math

import numpy as np
import pytest
import torch

from rational_icl.data import CategoricalSequence, generator
from rational_icl.data.settings.categorical import categorical_generalizing, categorical_memorizing
from tests.data.settings.cases import categorical, source_bits_and_complexities

SEEDS = [0, 1, 2]


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


# ---------------------------------------------------------------------------- strategies


def _reference_categorical_memorizing(tokens, probs):
    batch, length = tokens.shape
    num_tasks, num_outcomes = probs.shape
    out = np.zeros((batch, length, num_outcomes))
    for b in range(batch):
        for t in range(length):
            log_post = np.zeros(num_tasks)
            for k in range(num_tasks):
                for s in range(t):
                    log_post[k] += math.log(probs[k, tokens[b, s]])
            post = np.exp(log_post - log_post.max())
            post /= post.sum()
            for k in range(num_tasks):
                out[b, t] += post[k] * probs[k]
    return out


def _reference_categorical_generalizing(tokens, alpha):
    batch, length = tokens.shape
    out = np.zeros((batch, length, len(alpha)))
    for b in range(batch):
        for t in range(length):
            counts = np.array(alpha, dtype=float)
            for s in range(t):
                counts[tokens[b, s]] += 1
            out[b, t] = counts / counts.sum()
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_categorical_matches_reference(seed):
    setting, tasks, batch = categorical(seed)
    probs, tokens = tasks.tasks.numpy(), batch.tokens.numpy()
    memorizing = categorical_memorizing(batch.tokens, tasks.tasks).numpy()
    generalizing = categorical_generalizing(batch.tokens, setting.concentration).numpy()
    assert np.abs(memorizing - _reference_categorical_memorizing(tokens, probs)).max() <= 1e-9
    reference = _reference_categorical_generalizing(tokens, np.ones(4))
    assert np.abs(generalizing - reference).max() <= 1e-9
    memorizing32 = categorical_memorizing(batch.tokens, tasks.tasks.float()).numpy()
    assert memorizing32.dtype == np.float32
    assert np.abs(memorizing32 - _reference_categorical_memorizing(tokens, probs)).max() <= 1e-4


def test_memorizing_converges_to_the_true_task():
    # With a long context the posterior concentrates on the task that made the sequence.
    setting, tasks, batch = categorical(6, num_tasks=4, batch=8, length=400)
    prediction = categorical_memorizing(batch.tokens, tasks.tasks)[:, -1]  # (B, K)
    assert torch.allclose(prediction, tasks.tasks[batch.task_index], atol=1e-6)


# ---------------------------------------------------------------------------- loss


def test_prediction_loss_of_the_truth_is_zero_for_categorical():
    setting = CategoricalSequence(num_dims=5, context_length=7)
    tasks = setting.sample_tasks(3, generator(0, "t"))
    batch = setting.sample_batch(tasks, 4, generator(0, "s"))
    truth = tasks.tasks[batch.task_index][:, None, :].expand(4, 7, 5)
    assert torch.allclose(setting.prediction_loss(truth, batch, tasks), torch.zeros(()).double())


def test_small_dirichlet_concentrations_give_finite_normalised_tasks():
    # Issue 24, item 3: prior 0.001 underflowed every Gamma draw of a row to 0 (NaN tasks).
    setting = CategoricalSequence(4, 8, prior=(0.001,) * 4)
    tasks = setting.sample_tasks(64, generator(1, "tasks", 64)).tasks
    assert torch.isfinite(tasks).all()
    np.testing.assert_allclose(tasks.sum(-1).numpy(), 1.0, rtol=1e-12)


def test_categorical_complexities_are_pinned():
    # (source bits, [K_Q at D = 2, 16, 128]) per strategy: see cases.py before changing them
    setting = CategoricalSequence(num_dims=4, context_length=8)
    assert source_bits_and_complexities(setting) == {
        "memorizing": (5064, [5664.0, 9248.0, 36328.0]),
        "generalizing": (2496, [2624.0, 2624.0, 2624.0]),
        "constant": (952, [1080.0, 1080.0, 1080.0]),
    }

"""Each strategy against a brute-force float64 reference with explicit loops."""

import math

import numpy as np
import pytest
import torch

from rational_icl.data import CategoricalSequence, Classification, LinearRegression, generator
from rational_icl.modeling import STRATEGIES, all_strategy_predictions, strategy_prediction
from rational_icl.modeling.strategies import (
    categorical_generalizing,
    categorical_memorizing,
    classification_generalizing,
    classification_memorizing,
    regression_generalizing,
    regression_memorizing,
)

SEEDS = [0, 1, 2]


# ---------------------------------------------------------------------------- references


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


def _reference_regression_memorizing(x, y, weights, noise_variance):
    batch, length, _ = x.shape
    out = np.zeros((batch, length))
    for b in range(batch):
        for t in range(length):
            log_post = np.array(
                [
                    -sum((y[b, s] - x[b, s] @ w) ** 2 for s in range(t)) / (2 * noise_variance)
                    for w in weights
                ]
            )
            post = np.exp(log_post - log_post.max())
            post /= post.sum()
            out[b, t] = sum(p * (x[b, t] @ w) for p, w in zip(post, weights, strict=True))
    return out


def _reference_ridge(x, y, noise_variance):
    batch, length, dims = x.shape
    out = np.zeros((batch, length))
    for b in range(batch):
        for t in range(length):
            gram = noise_variance * np.eye(dims) + x[b, :t].T @ x[b, :t]
            w = np.linalg.solve(gram, x[b, :t].T @ y[b, :t])
            out[b, t] = x[b, t] @ w
    return out


def _gauss_log_density(x, mean, variance):
    return -((x - mean) ** 2).sum() / (2 * variance)


def _reference_classification_memorizing(query, items, labels, eps):
    dims = query.shape[-1]
    variance = eps / ((1 + eps) * dims)
    out = np.zeros((len(query), 1, 2))
    for b in range(len(query)):
        log_post = np.array(
            [_gauss_log_density(query[b], mu / math.sqrt(1 + eps), variance) for mu in items]
        )
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        for k in range(len(items)):
            out[b, 0, labels[k]] += post[k]
    return out


def _reference_classification_generalizing(context, context_labels, query, eps):
    rho = 1 / (1 + eps)
    variance = (1 - rho**2) / query.shape[-1]
    out = np.zeros((len(query), 1, 2))
    for b in range(len(query)):
        log_post = np.array(
            [_gauss_log_density(query[b], rho * item, variance) for item in context[b]]
        )
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        for j in range(context.shape[1]):
            out[b, 0, context_labels[b, j]] += post[j]
    return out


# ---------------------------------------------------------------------------- fixtures


def _categorical(seed, num_tasks=5, batch=3, length=9):
    setting = CategoricalSequence(num_dims=4, context_length=length)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


def _regression(seed, num_tasks=5, batch=3, length=7):
    setting = LinearRegression(num_dims=3, context_length=length, noise_variance=0.25)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


def _classification(seed, num_tasks=6, batch=4, length=8):
    setting = Classification(num_dims=4, context_length=length, within_class_variance=0.5)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


# ---------------------------------------------------------------------------- float64 and float32


@pytest.mark.parametrize("seed", SEEDS)
def test_categorical_matches_reference(seed):
    setting, tasks, batch = _categorical(seed)
    probs, tokens = tasks.tasks.numpy(), batch.tokens.numpy()
    memorizing = categorical_memorizing(batch.tokens, tasks.tasks).numpy()
    generalizing = categorical_generalizing(batch.tokens, setting.concentration).numpy()
    assert np.abs(memorizing - _reference_categorical_memorizing(tokens, probs)).max() <= 1e-9
    reference = _reference_categorical_generalizing(tokens, np.ones(4))
    assert np.abs(generalizing - reference).max() <= 1e-9
    memorizing32 = categorical_memorizing(batch.tokens, tasks.tasks.float()).numpy()
    assert memorizing32.dtype == np.float32
    assert np.abs(memorizing32 - _reference_categorical_memorizing(tokens, probs)).max() <= 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_matches_reference(seed):
    setting, tasks, batch = _regression(seed)
    x, y, w = batch.x.numpy(), batch.y.numpy(), tasks.tasks.numpy()
    memorizing = regression_memorizing(batch.x, batch.y, tasks.tasks, 0.25).numpy()
    ridge = regression_generalizing(batch.x, batch.y, 0.25).numpy()
    reference_m = _reference_regression_memorizing(x, y, w, 0.25)
    reference_g = _reference_ridge(x, y, 0.25)
    assert np.abs(memorizing - reference_m).max() <= 1e-9
    assert np.abs(ridge - reference_g).max() <= 1e-9
    memorizing32 = regression_memorizing(
        batch.x.float(), batch.y.float(), tasks.tasks.float(), 0.25
    )
    ridge32 = regression_generalizing(batch.x.float(), batch.y.float(), 0.25)
    assert np.abs(memorizing32.numpy() - reference_m).max() <= 1e-4
    assert np.abs(ridge32.numpy() - reference_g).max() <= 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_matches_reference(seed):
    setting, tasks, batch = _classification(seed)
    eps = setting.within_class_variance
    query, items, labels = batch.query_item.numpy(), tasks.tasks.numpy(), tasks.labels.numpy()
    memorizing = classification_memorizing(batch.query_item, tasks.tasks, tasks.labels, eps)
    reference_m = _reference_classification_memorizing(query, items, labels, eps)
    assert np.abs(memorizing.numpy() - reference_m).max() <= 1e-9
    generalizing = classification_generalizing(
        batch.context_items, batch.context_labels, batch.query_item, eps
    )
    reference_g = _reference_classification_generalizing(
        batch.context_items.numpy(), batch.context_labels.numpy(), query, eps
    )
    assert np.abs(generalizing.numpy() - reference_g).max() <= 1e-9
    memorizing32 = classification_memorizing(
        batch.query_item.float(), tasks.tasks.float(), tasks.labels, eps
    )
    assert np.abs(memorizing32.numpy() - reference_m).max() <= 1e-4


# ---------------------------------------------------------------------------- known limits


@pytest.mark.parametrize("make", [_categorical, _regression, _classification])
def test_memorizing_with_one_task_returns_that_task(make):
    setting, tasks, batch = make(3, num_tasks=1)
    prediction = strategy_prediction(setting, batch, tasks, "memorizing")
    if setting.name == "categorical-sequence":
        expected = tasks.tasks[0].expand_as(prediction)
    elif setting.name == "linear-regression":
        expected = (batch.x @ tasks.tasks[0])[..., None]
    else:
        expected = torch.nn.functional.one_hot(tasks.labels[[0]], 2).double().expand_as(prediction)
    assert torch.allclose(prediction, expected, atol=1e-12)


@pytest.mark.parametrize("make", [_categorical, _regression])
def test_generalizing_at_position_zero_equals_constant(make):
    setting, tasks, batch = make(4)
    prediction = all_strategy_predictions(setting, batch, tasks)  # (Q, B, P, O)
    generalizing, constant = prediction[1, :, 0], prediction[2, :, 0]
    assert torch.allclose(generalizing, constant, atol=1e-12)


def test_predictions_are_distributions():
    for make in (_categorical, _classification):
        setting, tasks, batch = make(5)
        prediction = all_strategy_predictions(setting, batch, tasks)
        assert torch.allclose(prediction.sum(-1), torch.ones(()).double(), atol=1e-12)
        assert (prediction >= 0).all()


def test_memorizing_converges_to_the_true_task():
    # With a long context the posterior concentrates on the task that made the sequence.
    setting, tasks, batch = _categorical(6, num_tasks=4, batch=8, length=400)
    prediction = categorical_memorizing(batch.tokens, tasks.tasks)[:, -1]  # (B, K)
    assert torch.allclose(prediction, tasks.tasks[batch.task_index], atol=1e-6)


# ---------------------------------------------------------------------------- numerics at scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_at_large_num_tasks_and_context(dtype):
    num_tasks, length = 65536, 512
    gen = generator(7, "large")
    categorical = CategoricalSequence(num_dims=8, context_length=length)
    tasks = categorical.sample_tasks(num_tasks, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = categorical.sample_batch(tasks, 2, gen)
    assert torch.isfinite(all_strategy_predictions(categorical, batch, tasks)).all()

    regression = LinearRegression(num_dims=8, context_length=length, noise_variance=8 / 256)
    tasks = regression.sample_tasks(num_tasks, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = regression.sample_batch(tasks, 1, gen)
    batch.x, batch.y = batch.x.to(dtype), batch.y.to(dtype)
    assert torch.isfinite(all_strategy_predictions(regression, batch, tasks)).all()

    classification = Classification(num_dims=8, context_length=length, within_class_variance=0.5)
    tasks = classification.sample_tasks(num_tasks, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = classification.sample_batch(tasks, 4, gen)
    assert torch.isfinite(all_strategy_predictions(classification, batch, tasks)).all()


def test_unknown_strategy_is_rejected():
    setting, tasks, batch = _categorical(0)
    with pytest.raises(ValueError, match="allowed: memorizing"):
        strategy_prediction(setting, batch, tasks, "oracle")
    assert STRATEGIES == ("memorizing", "generalizing", "constant")

"""The linear-regression setting: Gaussian tasks and inputs, and its strategies against
brute-force float64 references with explicit loops."""

import numpy as np
import pytest
import torch

from rational_icl.data import LinearRegression, generator
from rational_icl.data.settings.regression import regression_generalizing, regression_memorizing
from tests.data.settings.cases import regression, source_bits_and_complexities

SEEDS = [0, 1, 2]


def test_regression_moments():
    setting = LinearRegression(num_dims=8, context_length=64, noise_variance=8 / 256)
    tasks = setting.sample_tasks(4, generator(0, "t"))
    batch = setting.sample_batch(tasks, 512, generator(0, "s"))
    residual = batch.y - torch.einsum("btd,bd->bt", batch.x, tasks.tasks[batch.task_index])
    assert residual.var().item() == pytest.approx(8 / 256, rel=0.05)
    assert batch.x.var().item() == pytest.approx(1.0, rel=0.02)


# ---------------------------------------------------------------------------- strategies


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


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_matches_reference(seed):
    setting, tasks, batch = regression(seed)
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


def test_regression_complexities_are_pinned():
    # (source bits, [K_Q at D = 2, 16, 128]) per strategy: see cases.py before changing them
    setting = LinearRegression(num_dims=3, context_length=8, noise_variance=0.25)
    assert source_bits_and_complexities(setting) == {
        "memorizing": (2504, [2976.0, 5664.0, 26448.0]),
        "generalizing": (2808, [2952.0, 2952.0, 2952.0]),
        "constant": (664, [808.0, 808.0, 808.0]),
    }

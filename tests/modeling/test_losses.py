"""Monte Carlo strategy losses against closed forms, within their standard errors."""

import math

import pytest
from scipy.special import digamma

from rational_icl.data import CategoricalSequence, Classification, LinearRegression, generator
from rational_icl.modeling import strategy_loss


def test_categorical_constant_loss_matches_closed_form():
    # E[KL(theta || uniform)] under Dirichlet(1, ..., 1) = psi(2) - psi(K + 1) + log K.
    num_dims = 6
    setting = CategoricalSequence(num_dims=num_dims, context_length=8)
    tasks = setting.sample_tasks(20_000, generator(0, "t"))
    estimate = strategy_loss(setting, tasks, "constant", 20_000, generator(0, "l"))
    expected = digamma(2) - digamma(num_dims + 1) + math.log(num_dims)
    assert abs(estimate.mean - expected) < 4 * estimate.standard_error
    assert estimate.standard_error < 0.01
    assert estimate.median_of_means == pytest.approx(estimate.mean, abs=5 * estimate.standard_error)


def test_regression_constant_loss_matches_closed_form():
    # Predicting 0: E[y^2] / (2 sigma^2) = (d + sigma^2) / (2 sigma^2), with w ~ N(0, I).
    setting = LinearRegression(num_dims=4, context_length=8, noise_variance=0.25)
    tasks = setting.sample_tasks(50_000, generator(0, "t"))
    estimate = strategy_loss(setting, tasks, "constant", 50_000, generator(0, "l"))
    assert abs(estimate.mean - (4 + 0.25) / 0.5) < 4 * estimate.standard_error


def test_classification_constant_loss_is_log_two():
    setting = Classification(num_dims=4, context_length=6, within_class_variance=0.5)
    tasks = setting.sample_tasks(8, generator(0, "t"))
    estimate = strategy_loss(setting, tasks, "constant", 100, generator(0, "l"))
    assert estimate.mean == pytest.approx(math.log(2), abs=1e-12)
    assert estimate.standard_error == pytest.approx(0.0, abs=1e-12)


def test_memorizing_beats_generalizing_on_training_tasks():
    setting = CategoricalSequence(num_dims=8, context_length=32)
    for num_tasks in (2, 64):
        tasks = setting.sample_tasks(num_tasks, generator(0, "t", num_tasks))
        losses = {
            q: strategy_loss(setting, tasks, q, 2000, generator(0, "l")).mean
            for q in ("memorizing", "generalizing", "constant")
        }
        assert losses["memorizing"] < losses["generalizing"] < losses["constant"]

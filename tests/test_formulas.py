"""The shared formulas: the rational model against brute force, the noise default, the
checkpoint schedule."""

import math

import numpy as np
import xarray as xr

from rational_icl import formulas
from rational_icl.formulas import checkpoint_steps


def test_log_posterior_matches_the_definition_in_float64():
    rng = np.random.default_rng(0)
    steps, loss, complexity = (
        rng.uniform(10, 1e5, 7),
        rng.uniform(0.1, 3, 7),
        rng.uniform(1, 1e4, 7),
    )
    alpha, beta, gamma = 0.3, 0.6, 2.5
    expected = [
        -math.log(2) * k**beta - gamma * n ** (1 - alpha) * q
        for n, q, k in zip(steps, loss, complexity, strict=True)
    ]
    got = formulas.log_posterior(steps, loss, complexity, alpha, beta, gamma)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    linear = formulas.log_posterior(steps, loss, complexity, alpha, beta, gamma, True)
    np.testing.assert_allclose(linear - got, math.log(2) * (complexity**beta - beta * complexity))


def test_the_odds_cross_zero_at_the_transition_step():
    l_m, l_g, k_m, k_g = 0.8, 1.0, 3000.0, 200.0
    alpha, beta, gamma = 0.4, 0.7, 0.05
    step = formulas.transition_step(l_m, l_g, k_m, k_g, alpha, beta, gamma)
    odds = formulas.log_posterior(step, l_m, k_m, alpha, beta, gamma) - formulas.log_posterior(
        step, l_g, k_g, alpha, beta, gamma
    )
    assert abs(odds) < 1e-9 and step > 1
    bayes = formulas.log_bayes_factor(step, l_m, l_g, alpha, gamma)
    np.testing.assert_allclose(bayes, math.log(2) * (k_m**beta - k_g**beta))
    # memorizing better but not more complex: no transition (NaN), for numpy and xarray
    assert np.isnan(formulas.transition_step(l_m, l_g, k_g, k_m, alpha, beta, gamma))
    ratio = formulas.transition_step(
        l_m, xr.DataArray([1.0, 0.5], dims="num_tasks"), k_m, k_g, alpha, beta, gamma
    )
    assert ratio.dims == ("num_tasks",) and np.isfinite(ratio[0]) and np.isnan(ratio[1])


def test_regression_noise_defaults_to_num_dims_over_256():
    assert formulas.default_noise_variance(8) == 8 / 256
    runs = xr.Dataset(attrs={"num_dims": 4})
    assert formulas.run_noise_variance(runs) == 4 / 256
    assert formulas.run_noise_variance(runs.assign_attrs(noise_variance=0.5)) == 0.5
    grid = xr.Dataset(coords={"num_dims": [8, 16]})
    np.testing.assert_allclose(formulas.run_noise_variance(grid), [8 / 256, 16 / 256])


def test_checkpoints_are_evenly_spaced_in_sqrt_step_from_20_to_the_last_step():
    steps = checkpoint_steps(4000, 40)
    assert steps[0] == 20 and steps[-1] == 4000
    assert len(steps) == 40
    assert np.all(np.diff(steps) > 0)
    gaps = np.diff(np.sqrt(steps))
    expected = (math.sqrt(4000) - math.sqrt(20)) / 39
    np.testing.assert_allclose(gaps, expected, atol=0.1)  # rounding to whole steps


def test_checkpoints_merge_when_steps_are_few_and_always_include_the_last():
    steps = checkpoint_steps(30, 20)
    assert steps.tolist() == sorted(set(steps.tolist()))
    assert steps[0] == 20 and steps[-1] == 30
    assert checkpoint_steps(10, 5).tolist() == [10]
    assert checkpoint_steps(1000, 1).tolist() == [1000]

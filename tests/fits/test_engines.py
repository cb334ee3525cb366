"""The engines: NUTS recovers the parameters, MAP finds the posterior mode, SVI is close,
seeds repeat."""

import jax
import numpy as np
import pytest

from rational_icl.errors import RiclError
from rational_icl.fits import diagnostics, engines, inference, inputs
from rational_icl.fits import model as rational
from tests.fits.simulated import PAPER_FIT, PARAMETERS, TRUTH


@pytest.mark.slow
def test_nuts_recovers_the_parameters(nuts_fit):
    posterior = nuts_fit.posterior
    for name, truth in TRUTH.items():
        draws = posterior[name]
        low, high = draws.quantile([0.05, 0.95], ("chain", "draw")).values
        assert low <= truth <= high, f"{name}: 90% interval ({low:.3g}, {high:.3g})"
        assert float(draws.mean()) == pytest.approx(truth, rel=0.10)
    found = diagnostics.diagnostics(nuts_fit)
    for name in PARAMETERS:
        assert float(found[f"{name}_r_hat"]) < 1.01
    assert int(found.divergences.sum()) == 0
    assert nuts_fit.attrs["heldout_correlation_id"] > 0.95
    assert nuts_fit.attrs["heldout_correlation_ood"] > 0.95


@pytest.mark.slow
def test_map_agrees_with_the_posterior_mode(map_fit, nuts_fit):
    point = map_fit.point_estimate
    for name in PARAMETERS:
        draws = nuts_fit.posterior[name]
        # posterior nearly normal here: its mode is within a fraction of an sd of its median
        assert abs(float(point[name]) - float(draws.median())) < 0.5 * float(draws.std())
    assert bool(map_fit.sample_stats.optimizer_success)


@pytest.mark.slow
def test_svi_runs_and_is_close(behaviour):
    settings = inputs.FitSettings(**PAPER_FIT, method="svi", chains=1, draws=200, svi_steps=1500)
    tree = inference.fit(behaviour, settings)
    for name, truth in TRUTH.items():
        assert float(tree.posterior[name].mean()) == pytest.approx(truth, rel=0.1)


@pytest.mark.slow
def test_seeds_make_fits_repeatable(behaviour, map_fit):
    again = inference.fit(
        behaviour, inputs.FitSettings(**PAPER_FIT, method="map", chains=1, draws=400)
    )
    np.testing.assert_array_equal(again.posterior.gamma, map_fit.posterior.gamma)
    np.testing.assert_array_equal(
        again.posterior_predictive.observed_weight, map_fit.posterior_predictive.observed_weight
    )


@pytest.fixture(scope="module")
def target(behaviour):
    kwargs = inputs.model_inputs(behaviour, inputs.FitSettings(**PAPER_FIT)).kwargs
    key = jax.random.PRNGKey(0)
    return engines.Target(rational.relative_distance_model, kwargs, "observed_weight", key)


def test_hessian_is_exact(target):
    start = target.best_prior_draw(jax.random.PRNGKey(1), 64)
    optimum, result = target.map_estimate(start)
    assert result.success
    exact = target.hessian(optimum)
    # central differences of the compiled gradient, in float64
    step = 1e-5 * np.maximum(np.abs(np.asarray(optimum)), 1.0)
    columns = []
    for i in range(optimum.size):
        shift = np.zeros(optimum.size)
        shift[i] = step[i]
        up = target._value_and_grad(optimum + shift, target.data)[1]
        down = target._value_and_grad(optimum - shift, target.data)[1]
        columns.append(np.asarray(up - down) / (2 * step[i]))
    differences = np.stack(columns, axis=1)
    np.testing.assert_allclose(exact, exact.T, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(exact, differences, rtol=1e-4, atol=1e-6 * np.abs(exact).max())


def test_newton_steps_finish_an_unconverged_optimisation(target, monkeypatch):
    start = target.best_prior_draw(jax.random.PRNGKey(1), 64)
    optimum, _ = target.map_estimate(start)
    monkeypatch.setattr(engines, "LBFGS_ITERATIONS", 3)  # L-BFGS stops far from the mode
    polished, result = target.map_estimate(start)
    assert result.nit > 3
    # at the mode: the Newton step left is a tiny fraction of a posterior sd (the gradient
    # itself stays above scipy's tolerance, rounding in a sum over thousands of cells)
    assert engines._converged(result, target.hessian(polished))
    np.testing.assert_allclose(polished, optimum, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_nuts_with_the_laplace_mass_matrix_agrees(behaviour, nuts_fit):
    settings = inputs.FitSettings(
        **PAPER_FIT, chains=2, warmup=300, draws=300, seed=1, mass_matrix="laplace"
    )
    tree = inference.fit(behaviour, settings)
    assert tree.sample_stats.attrs["mass_matrix"] == "laplace"
    found = diagnostics.diagnostics(tree)
    for name in PARAMETERS:
        assert float(found[f"{name}_r_hat"]) < 1.01
        adapted, laplace = nuts_fit.posterior[name], tree.posterior[name]
        # two samplers of one posterior: means within 4 Monte Carlo standard errors
        ess = min(float(found[f"{name}_ess_bulk"]), 600)
        error = float(adapted.std()) * np.sqrt(2 / ess)
        assert abs(float(laplace.mean()) - float(adapted.mean())) < 4 * error
        assert float(laplace.std()) == pytest.approx(float(adapted.std()), rel=0.2)
    assert int(found.divergences.sum()) == 0
    with pytest.raises(RiclError, match="mass_matrix must be one of adapted, laplace"):
        inputs.FitSettings(mass_matrix="unit")


def test_keys_come_from_one_seed():
    keys, again = engines.Keys.of(3), engines.Keys.of(3)
    for key, same in zip(keys, again, strict=True):
        np.testing.assert_array_equal(key, same)
    values = {tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys}
    assert len(values) == len(keys)  # every key distinct


def test_target_acceptance_is_higher_for_the_offset_models():
    target_acceptance, FitSettings = engines.target_acceptance, inputs.FitSettings
    assert target_acceptance(FitSettings(**PAPER_FIT)) == 0.9  # the paper's model
    assert target_acceptance(FitSettings(drop_early=False, model="anchored-offsets")) == 0.99
    chosen = FitSettings(drop_early=False, model="anchored-offsets", target_accept=0.8)
    assert target_acceptance(chosen) == 0.8
    seeds = FitSettings(drop_early=False, model="anchored-offsets-drift", pooling="partial")
    assert target_acceptance(seeds) == 0.995  # the population's scales add curvature
    assert target_acceptance(FitSettings(**PAPER_FIT, pooling="partial")) == 0.9
    with pytest.raises(RiclError, match="target_accept must be in \\(0, 1\\); got 1.0"):
        FitSettings(target_accept=1.0)


def test_run_levels_carry_between_parameterizations(behaviour):
    """The decentred MAP carried into a target centred on some runs: the same point (every
    site's value), whichever way each run's level is sampled."""
    settings = inputs.FitSettings(drop_early=False, model="anchored-offsets", method="map")
    kwargs = inputs.model_inputs(behaviour, settings).kwargs
    key = jax.random.PRNGKey(0)
    model = rational.relative_distance_model
    search = engines.Target(model, kwargs, "observed_weight", key, decentred=True)
    centring = np.zeros((1, behaviour.sizes["num_tasks"], 1))
    centring[0, ::2] = 1.0  # every other run centred
    target = engines.Target(model, kwargs, "observed_weight", key, centring=centring)
    flat = search.best_prior_draw(key, 16)
    there = search.point(flat)
    here = target.point(target.unconstrain(there))
    for name in ("alpha", "beta", "gamma", "offset_scale", "run_log_prior_odds", "run_offset"):
        np.testing.assert_allclose(here[name], there[name], rtol=1e-10, atol=1e-12)
    level = there["run_log_prior_odds"]  # centred runs keep the level itself
    decentred = here["run_log_prior_odds_decentered"]
    np.testing.assert_allclose(decentred[0, ::2], level[0, ::2], rtol=1e-12)
    z = there["run_log_prior_odds_decentered"]  # the others the standardized offset
    np.testing.assert_allclose(decentred[0, 1::2], z[0, 1::2], rtol=1e-12)


def test_runs_whose_cells_pin_their_level_are_sampled_centred():
    weight = np.full((1, 3, 8, 2), 0.5)  # (C, D, N, S)
    weight[0, 0] = 1.0  # memorizes throughout: only a bound on its level
    weight[0, 2, :7] = 0.0  # one cell of 16 inside (0.05, 0.95): below the share
    fit_mask = np.ones(weight.shape, bool)
    kwargs = {"observed_weight": weight, "fit_mask": fit_mask, "strategy_loss": np.ones((2, 1, 3))}
    np.testing.assert_array_equal(inference.run_centring(kwargs)[..., 0], [[0.0, 1.0, 0.0]])
    fit_mask[0, 2, :5] = False  # of its 6 fitted cells, 2 inside: a third
    np.testing.assert_array_equal(inference.run_centring(kwargs)[..., 0], [[0.0, 1.0, 1.0]])

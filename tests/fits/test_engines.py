"""The engines: NUTS recovers the parameters, MAP finds the posterior mode, SVI is close,
seeds repeat."""

import numpy as np
import pytest

from rational_icl.fits import diagnostics, inference, inputs
from tests.fits.simulated import PARAMETERS, TRUTH


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


def test_map_agrees_with_the_posterior_mode(map_fit, nuts_fit):
    point = map_fit.point_estimate
    for name in PARAMETERS:
        draws = nuts_fit.posterior[name]
        # posterior nearly normal here: its mode is within a fraction of an sd of its median
        assert abs(float(point[name]) - float(draws.median())) < 0.5 * float(draws.std())
    assert bool(map_fit.sample_stats.optimizer_success)


def test_svi_runs_and_is_close(behaviour):
    settings = inputs.FitSettings(method="svi", chains=1, draws=200, svi_steps=1500)
    tree = inference.fit(behaviour, settings)
    for name, truth in TRUTH.items():
        assert float(tree.posterior[name].mean()) == pytest.approx(truth, rel=0.1)


def test_seeds_make_fits_repeatable(behaviour, map_fit):
    again = inference.fit(behaviour, inputs.FitSettings(method="map", chains=1, draws=400))
    np.testing.assert_array_equal(again.posterior.gamma, map_fit.posterior.gamma)
    np.testing.assert_array_equal(
        again.posterior_predictive.relative_distance, map_fit.posterior_predictive.relative_distance
    )

"""Diagnostics, PSIS-LOO (reported only where reliable), compare, the summary table."""

import types

import numpy as np
import pytest
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import diagnostics, inference, inputs
from rational_icl.fits.tree import read_fit, write_fit
from tests.fits.simulated import PAPER_FIT


@pytest.mark.slow
def test_compare_ranks_the_true_model_first(behaviour, map_fit, unidentified_map_fit):
    ablated = inference.fit(
        behaviour,
        inputs.FitSettings(**PAPER_FIT, method="map", ablation="unit-gamma", chains=1, draws=400),
    )
    table = diagnostics.compare({"full": map_fit, "unit-gamma": ablated})
    assert list(table.index) == ["full", "unit-gamma"]
    result = diagnostics.loo(map_fit)
    assert (
        np.isfinite(result.elpd)
        and result.pareto_k.size == map_fit.log_likelihood.sizes["fitted_cell"]
    )
    # a fit whose LOO cannot be trusted is left out of the ranking, with the reason
    unidentified = unidentified_map_fit
    table = diagnostics.compare({"full": map_fit, "bad": unidentified, "unit-gamma": ablated})
    assert list(table.index) == ["full", "unit-gamma"]
    assert list(table.attrs["not_ranked"]) == ["bad"]
    assert table.attrs["not_ranked"]["bad"].startswith("PSIS-LOO not reported: ")
    with pytest.raises(RiclError, match="^fewer than two fits have a reliable PSIS-LOO"):
        diagnostics.compare({"full": map_fit, "bad": unidentified})


@pytest.mark.slow
def test_loo_is_reported_only_where_psis_supports_it(map_fit, nuts_fit, unidentified_map_fit):
    for tree in (nuts_fit, map_fit):  # the model that made the data: LOO stands
        result = diagnostics.loo(tree)
        assert diagnostics.loo_problem(tree, result) is None
        assert result.p < diagnostics.num_parameters(tree) + 1
    assert diagnostics.num_parameters(map_fit) == 5  # alpha, beta, gamma, sigma[id], sigma[ood]
    unidentified = unidentified_map_fit
    result = diagnostics.loo(unidentified)
    assert not result.p < 100 * 5  # hundreds of "effective parameters", or NaN
    problem = diagnostics.loo_problem(unidentified, result)
    assert problem.startswith("PSIS-LOO not reported: ") and "Pareto k above" in problem
    assert problem.endswith("(the map draws); refit with --method nuts")
    # good Pareto k, but p_loo far above the parameter count: not reported either
    inflated = types.SimpleNamespace(pareto_k=np.zeros(100), good_k=0.7, p=16.0)
    problem = diagnostics.loo_problem(map_fit, inflated)
    assert "p_loo exceeds 3 times the model's 5 free parameters" in problem
    inflated.p = 14.0
    assert diagnostics.loo_problem(map_fit, inflated) is None


@pytest.mark.slow
def test_outputs_fits_are_compared_by_loo(outputs_fits, map_fit, tmp_path):
    _, full, ablated = outputs_fits
    ablated = read_fit(write_fit(ablated, tmp_path / "ablated.nc"))
    result = diagnostics.loo(full)
    assert np.isfinite(result.elpd)
    assert result.pareto_k.size == full.log_likelihood.sizes["fitted_cell"]
    log_lik = ablated.log_likelihood  # 1400 draws: every second kept
    assert log_lik.attrs["thinned_from"] == 700
    np.testing.assert_array_equal(log_lik.draw.values, np.arange(0, 700, 2))
    assert log_lik.sizes["chain"] == 2
    # The ablation (gamma fixed at 1, truth 3) is misspecified enough that its Laplace
    # draws give p_loo in the hundreds: it is not ranked, and the reason is kept.
    table = diagnostics.compare({"full": full, "unit-gamma": ablated, "copy": full})
    assert sorted(table.index) == ["copy", "full"]
    assert "p_loo exceeds 3 times" in table.attrs["not_ranked"]["unit-gamma"]
    with pytest.raises(RiclError, match="one observation model"):
        diagnostics.compare({"outputs": full, "relative-distance": map_fit})


def test_summary_prints_90_percent_intervals(map_fit):
    table = diagnostics.summary(map_fit)
    assert {"eti90_lb", "eti90_ub"} <= set(table.columns)
    low = float(map_fit.posterior.alpha.quantile(0.05))
    assert float(table.loc["alpha", "eti90_lb"]) == pytest.approx(low, abs=2e-3)


def test_run_offsets_are_each_runs_posterior_mean_and_the_spreads_quantiles():
    import xarray as xr

    rng = np.random.default_rng(0)
    offsets = np.array([0.1, -2.0, 0.5, 1.5])  # (num_tasks,)
    draws = offsets + 0.01 * rng.standard_normal((2, 50, 4))
    scale = np.linspace(0.5, 1.5, 100).reshape(2, 50)
    posterior = xr.Dataset(
        {
            "run_offset": (
                ("chain", "draw", "num_tasks", "offset_strategy"),
                draws[..., None],
            ),
            "offset_scale": (("chain", "draw"), scale),
        },
        coords={"num_tasks": [2, 8, 32, 128], "offset_strategy": ["memorizing"]},
    )
    found = diagnostics.run_offsets(xr.DataTree.from_dict({"posterior": posterior}))
    assert found["run_offset"].dims == ("num_tasks",)  # one offset strategy: dim dropped
    np.testing.assert_allclose(found["run_offset"].values, draws.mean((0, 1)), rtol=1e-12)
    expected = np.quantile(scale, [0.05, 0.5, 0.95])
    assert list(found["offset_scale"].statistic.values) == ["low", "median", "high"]
    np.testing.assert_allclose(found["offset_scale"].values, expected, rtol=1e-12)
    without = xr.Dataset({"alpha": (("chain", "draw"), scale)})
    assert diagnostics.run_offsets(xr.DataTree.from_dict({"posterior": without})) is None


def test_loo_of_too_few_draws_is_one_clear_line(map_fit):
    """PSIS fits a Pareto tail of at least 5 draws: with 20 arviz-stats raised a bare
    ValueError (a traceback in ricl compare); it is a RiclError naming the fix."""
    few = map_fit.copy()
    few["log_likelihood"] = xr.DataTree(map_fit.log_likelihood.ds.isel(chain=[0], draw=slice(20)))
    with pytest.raises(RiclError, match="at least 25 draws .* this fit has 20: refit with more"):
        diagnostics.loo(few)
    assert np.isfinite(diagnostics.loo(map_fit).elpd)  # 400 draws: a number

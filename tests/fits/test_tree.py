"""The fit's DataTree: names, dims and dtypes, thinned per-cell draws, held-out cells, the
outputs model's pointwise log likelihood, and the fit file round trip."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import diagnostics, inference, inputs
from rational_icl.fits.tree import read_fit, write_fit
from tests.fits.simulated import PAPER_FIT, PARAMETERS


@pytest.mark.slow
def test_fit_tree_names_round_trip_through_netcdf(nuts_fit, tmp_path):
    path = write_fit(nuts_fit, tmp_path / "fit.nc")
    tree = read_fit(path)
    for group in (
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "constant_data",
        "sample_stats",
    ):
        assert group in tree.children
    for name in (*PARAMETERS, "sigma", "weight_memorizing", "log_posterior_odds"):
        assert name in tree.posterior
    assert tree.posterior.weight_memorizing.dims == ("chain", "draw", "num_tasks", "checkpoint")
    assert tree.posterior_predictive.observed_weight.dims == (
        "chain",
        "draw",
        "num_tasks",
        "checkpoint",
        "split",
    )
    assert tree.observed_data.observed_weight.dims == ("num_tasks", "checkpoint", "split")
    constant = tree.constant_data
    for name in ("num_tasks", "checkpoint", "strategy_loss", "strategy_complexity", "held_out"):
        assert name in constant
    assert constant.held_out.dtype == bool
    for key in (
        "observation_model",
        "ablation",
        "pooling",
        "heldout_correlation_id",
        "heldout_correlation_ood",
        "package_version",
        "created",
    ):
        assert key in tree.attrs
    assert tree.attrs["observation_model"] == "relative-distance"
    np.testing.assert_array_equal(tree.posterior.alpha.values, nuts_fit.posterior.alpha.values)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


@pytest.mark.slow
def test_per_cell_draws_are_float32_thinned_and_read_back_unchanged(behaviour, map_fit, tmp_path):
    settings = inputs.FitSettings(
        **PAPER_FIT, method="map", chains=1, draws=400, pointwise_draws=100
    )
    tree = inference.fit(behaviour, settings)
    posterior = tree.posterior
    for name in ("weight_memorizing", "log_posterior_odds", "expected_weight"):
        assert posterior[name].dtype == np.float32
        assert posterior[name].sizes["draw"] == 400  # summaries see every draw
    # two strategies: w_M = sigmoid(log odds), to float32 precision
    np.testing.assert_allclose(
        posterior.weight_memorizing.values,
        scipy.special.expit(posterior.log_posterior_odds.values.astype(np.float64)),
        rtol=1e-6,
        atol=1e-7,
    )
    kept = np.arange(0, 400, 4)  # 100 of 400 draws, every fourth
    predictive = tree.posterior_predictive
    assert predictive.observed_weight.dtype == np.float32
    np.testing.assert_array_equal(predictive.draw.values, kept)
    assert predictive.attrs["thinned_from"] == 400
    log_lik = tree.log_likelihood.observed_weight
    np.testing.assert_array_equal(log_lik.draw.values, kept)
    assert tree.log_likelihood.attrs["thinned_from"] == 400
    # the same optimum and Laplace draws as map_fit (1000 pointwise draws: all 400 kept)
    assert map_fit.log_likelihood.observed_weight.sizes["draw"] == 400
    np.testing.assert_array_equal(
        log_lik.values, map_fit.log_likelihood.observed_weight.sel(draw=kept).values
    )
    assert np.isfinite(diagnostics.loo(tree).elpd)
    back = read_fit(write_fit(tree, tmp_path / "fit.nc"))
    for group in tree.children:
        xr.testing.assert_identical(back[group].to_dataset(), tree[group].to_dataset())
        for name, variable in tree[group].variables.items():
            assert back[group][name].dtype == variable.dtype, (group, name)
    stored = xr.open_datatree(tmp_path / "fit.nc")
    # w_M is the sigmoid of the odds, which the file holds instead (compressed)
    assert "weight_memorizing" not in stored.posterior
    assert stored.posterior.log_posterior_odds.encoding["zlib"]
    stored.close()
    with pytest.raises(RiclError, match="pointwise_draws must be at least 1"):
        inputs.FitSettings(pointwise_draws=0)


def test_a_fit_written_with_the_old_names_reads_as_today(map_fit, tmp_path):
    from rational_icl.io import write_datatree

    path = write_fit(map_fit, tmp_path / "fit.nc")
    today = read_fit(path)
    old = xr.open_datatree(path).load()
    for group in ("observed_data", "posterior_predictive", "log_likelihood"):
        data = old[group].to_dataset(inherit=False)
        old[group] = xr.DataTree(data.rename_vars(observed_weight="relative_distance"))
    posterior = old.posterior.to_dataset(inherit=False)
    posterior.attrs["expected_relative_distance_is_weight_memorizing"] = posterior.attrs.pop(
        "expected_weight_is_weight_memorizing"
    )
    old["posterior"] = xr.DataTree(posterior)
    back = read_fit(write_datatree(old, tmp_path / "old.nc"))
    assert "relative_distance" not in back.observed_data
    for group in today.children:
        xr.testing.assert_identical(back[group].to_dataset(), today[group].to_dataset())


def test_held_out_cells_are_not_fitted(map_fit):
    constant = map_fit.constant_data
    assert not (constant.fit_mask & constant.held_out).any()
    fitted = map_fit.log_likelihood.sizes["fitted_cell"]
    assert fitted == int((~constant.held_out).sum()) * 2  # both splits


def _dirichlet_cell_log_density(runs, tree, draw, cell):
    """Brute-force float64 log density of one cell's predictions: Dirichlet(kappa * h) of
    every (sequence, position), floored and renormalised as the model does, summed."""

    def floored(p):
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, None)
        return p / p.sum(-1, keepdims=True)

    where = {"num_tasks": cell["num_tasks"], "split": cell["split"]}
    posterior = tree.posterior.isel(chain=0, draw=draw)
    w = float(
        posterior.weight_memorizing.sel(num_tasks=cell["num_tasks"], checkpoint=cell["checkpoint"])
    )
    strategy = floored(runs.strategy_prediction.sel(**where).values)  # (Q, B, P, O)
    mixture = w * strategy[0] + (1.0 - w) * strategy[1]
    y = floored(runs.transformer_prediction.sel(**where, checkpoint=cell["checkpoint"]).values)
    a = float(posterior.concentration) * mixture
    density = (
        scipy.special.gammaln(a.sum(-1))
        - scipy.special.gammaln(a).sum(-1)
        + ((a - 1.0) * np.log(y)).sum(-1)
    )
    return density.sum()


@pytest.mark.slow
def test_outputs_log_likelihood_is_the_cells_log_density(outputs_fits):
    runs, tree, _ = outputs_fits
    log_lik = tree.log_likelihood.transformer_prediction
    constant = tree.constant_data
    assert log_lik.sizes["fitted_cell"] == int(constant.fit_mask.sum())
    assert log_lik.sizes == {"chain": 1, "draw": 200, "fitted_cell": log_lik.sizes["fitted_cell"]}
    cells = log_lik.fitted_cell.size
    for draw in (0, 7):  # the MAP and a Laplace draw
        for index in (0, cells // 2, cells - 1):
            point = log_lik.isel(chain=0, draw=draw, fitted_cell=index)
            cell = {
                dim: point[f"fitted_{dim}"].item() for dim in ("num_tasks", "checkpoint", "split")
            }
            assert not bool(
                constant.held_out.sel(num_tasks=cell["num_tasks"], checkpoint=cell["checkpoint"])
            )
            expected = _dirichlet_cell_log_density(runs, tree, draw, cell)
            assert float(point) == pytest.approx(expected, rel=1e-6)


def test_observed_description_names_the_measure_once():
    from rational_icl.fits.tree import observed_description

    attrs = {"observation_model": "relative-distance", "measure": "barycentric"}
    assert observed_description(attrs) == (
        "the barycentric weight on memorizing (against generalizing)"
    )
    attrs = {**attrs, "strategies": "contextual,generalizing"}
    assert (
        observed_description(attrs) == "the barycentric weight on contextual (against generalizing)"
    )
    attrs = {"observation_model": "outputs", "strategies": "memorizing,generalizing,contextual"}
    assert observed_description(attrs) == (
        "the transformer's outputs (a mixture of memorizing, generalizing, contextual)"
    )

"""Inference: parameter recovery, MAP vs posterior, held-out split, DataTree, LOO, compare."""

import math
import types

import numpy as np
import numpyro
import pytest
import scipy.special
import scipy.stats
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import inference
from rational_icl.fits import model as rational
from rational_icl.fits.behaviour import load_behaviour
from rational_icl.fits.runs import open_runs

TRUTH = {"alpha": 0.5, "beta": 0.3, "gamma": 3.0}
NUM_TASKS = 2 ** np.arange(1, 12)  # 2 ... 2048, 11 values as in the paper's grids
PARAMETERS = ("alpha", "beta", "gamma")


def simulated_behaviour(
    *, num_checkpoints=30, sigma=0.05, seed=0, mlp=None, truth=TRUTH
) -> xr.Dataset:
    """A behaviour dataset whose relative distance is drawn from the model itself.

    Losses and complexities are realistic: K_M = 1500 + 64·D·8 bits, K_G = 1200 bits,
    L_G − L_M from 0.15 nats (D = 2) shrinking as D grows.
    """
    steps = np.unique(np.geomspace(20, 1e5, num_checkpoints).round()).astype(np.int64)
    d = NUM_TASKS.astype(float)
    loss = np.stack([0.2 - 0.15 * (2 / d) ** 0.8, np.full_like(d, 0.2)])
    complexity = np.stack([1500 + 64 * 8 * d, np.full_like(d, 1200.0)])
    num_configs = 1 if mlp is None else len(mlp)
    values = {k: np.full(num_configs, v) if mlp else v for k, v in truth.items()}
    values["sigma"] = np.full(2, sigma)
    model = numpyro.handlers.condition(rational.relative_distance_model, data=values)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(model, seed)).get_trace(
        strategy_loss=np.repeat(loss[:, None], num_configs, 1),
        strategy_complexity=np.repeat(complexity[:, None], num_configs, 1),
        checkpoint=steps.astype(float),
        num_splits=2,
        pooling="complete" if mlp is None else "none",
    )
    observed = np.asarray(trace["relative_distance"]["value"])  # (C, D, N, S)
    grid = ("num_tasks", "checkpoint", "split")
    coords = {"num_tasks": NUM_TASKS, "checkpoint": steps, "split": ["id", "ood"]}
    coords["strategy"] = ["memorizing", "generalizing"]
    if mlp is None:
        data = {"relative_distance": (grid, observed[0])}
    else:
        data = {"relative_distance": (("mlp_expansion_factor", *grid), observed)}
        coords["mlp_expansion_factor"] = mlp
    data["strategy_loss"] = (("strategy", "num_tasks"), loss)
    data["strategy_complexity"] = (("strategy", "num_tasks"), complexity)
    return xr.Dataset(data, coords=coords, attrs={"setting": "categorical-sequence"})


@pytest.fixture(scope="module")
def behaviour():
    # One fixed data set. A 90% interval misses the truth 10% of the time by design; the
    # calibration over many data sets is checked by benchmarks/calibration.py.
    return simulated_behaviour(seed=4)


@pytest.fixture(scope="module")
def nuts_fit(behaviour):
    settings = inference.FitSettings(chains=2, warmup=300, draws=300, seed=1)
    return inference.fit(behaviour, settings)


@pytest.fixture(scope="module")
def map_fit(behaviour):
    return inference.fit(behaviour, inference.FitSettings(method="map", chains=1, draws=400))


def test_nuts_recovers_the_parameters(nuts_fit):
    posterior = nuts_fit.posterior
    for name, truth in TRUTH.items():
        draws = posterior[name]
        low, high = draws.quantile([0.05, 0.95], ("chain", "draw")).values
        assert low <= truth <= high, f"{name}: 90% interval ({low:.3g}, {high:.3g})"
        assert float(draws.mean()) == pytest.approx(truth, rel=0.10)
    found = inference.diagnostics(nuts_fit)
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


def test_fit_tree_names_round_trip_through_netcdf(nuts_fit, tmp_path):
    path = inference.write_fit(nuts_fit, tmp_path / "fit.nc")
    tree = inference.read_fit(path)
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
    assert tree.posterior_predictive.relative_distance.dims == (
        "chain",
        "draw",
        "num_tasks",
        "checkpoint",
        "split",
    )
    assert tree.observed_data.relative_distance.dims == ("num_tasks", "checkpoint", "split")
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


def test_per_cell_draws_are_float32_thinned_and_read_back_unchanged(behaviour, map_fit, tmp_path):
    settings = inference.FitSettings(method="map", chains=1, draws=400, pointwise_draws=100)
    tree = inference.fit(behaviour, settings)
    posterior = tree.posterior
    for name in ("weight_memorizing", "log_posterior_odds", "expected_relative_distance"):
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
    assert predictive.relative_distance.dtype == np.float32
    np.testing.assert_array_equal(predictive.draw.values, kept)
    assert predictive.attrs["thinned_from"] == 400
    log_lik = tree.log_likelihood.relative_distance
    np.testing.assert_array_equal(log_lik.draw.values, kept)
    assert tree.log_likelihood.attrs["thinned_from"] == 400
    # the same optimum and Laplace draws as map_fit (1000 pointwise draws: all 400 kept)
    assert map_fit.log_likelihood.relative_distance.sizes["draw"] == 400
    np.testing.assert_array_equal(
        log_lik.values, map_fit.log_likelihood.relative_distance.sel(draw=kept).values
    )
    assert np.isfinite(inference.loo(tree).elpd)
    back = inference.read_fit(inference.write_fit(tree, tmp_path / "fit.nc"))
    for group in tree.children:
        xr.testing.assert_identical(back[group].to_dataset(), tree[group].to_dataset())
        for name, variable in tree[group].variables.items():
            assert back[group][name].dtype == variable.dtype, (group, name)
    stored = xr.open_datatree(tmp_path / "fit.nc")
    assert stored.posterior.weight_memorizing.encoding["zlib"]
    stored.close()
    with pytest.raises(RiclError, match="pointwise_draws must be at least 1"):
        inference.FitSettings(pointwise_draws=0)


def test_held_out_mask_is_the_last_20_percent():
    held_out = inference.held_out_cells(NUM_TASKS, np.arange(1, 101) * 10)
    assert held_out.dims == ("num_tasks", "checkpoint")
    fitted = ~held_out.values
    assert fitted[:9, :80].all()  # round(0.8 * 11) = 9 num_tasks, 80 checkpoints
    assert not fitted[9:].any() and not fitted[:, 80:].any()
    shuffled = inference.held_out_cells([8, 2, 4, 16, 32], [30, 10, 20, 40, 50])
    # ranks, not positions: the largest values are held out
    assert shuffled.sel(num_tasks=32).all() and not shuffled.sel(num_tasks=2, checkpoint=10)
    assert shuffled.sel(checkpoint=50).all()


def test_held_out_cells_are_not_fitted(map_fit):
    constant = map_fit.constant_data
    assert not (constant.fit_mask & constant.held_out).any()
    fitted = map_fit.log_likelihood.sizes["fitted_cell"]
    assert fitted == int((~constant.held_out).sum()) * 2  # both splits


def test_early_checkpoints_are_dropped():
    distance = xr.DataArray(
        [[5.0, 4.0, 1.5, 1.0, 1.2], [1.0, 1.0, 1.0, 1.0, 1.0]],
        dims=("num_tasks", "checkpoint"),
        coords={"num_tasks": [2, 4], "checkpoint": [10, 20, 30, 40, 50]},
    )
    dropped = inference.early_cells(distance, within=0.2)
    # range 1..5: within 0.2 * 4 = 0.8 of the minimum from step 30 on
    np.testing.assert_array_equal(dropped.sel(num_tasks=2), [True, True, False, False, False])
    assert not dropped.sel(num_tasks=4).any()


@pytest.mark.parametrize(
    ("ablation", "fixed", "value"),
    [
        ("linear-likelihood", "alpha", 0.0),
        ("fixed-complexity", "beta", 1.0),
        ("unit-gamma", "gamma", 1.0),
    ],
)
def test_ablations_fix_the_right_parameter(behaviour, ablation, fixed, value):
    settings = inference.FitSettings(method="map", ablation=ablation, chains=1, draws=50)
    tree = inference.fit(behaviour, settings)
    assert (tree.posterior[fixed] == value).all()
    assert tree.attrs["ablation"] == ablation
    free = [p for p in PARAMETERS if p != fixed]
    assert all(float(tree.posterior[p].std()) > 0 for p in free)


def test_compare_ranks_the_true_model_first(behaviour, map_fit):
    ablated = inference.fit(
        behaviour, inference.FitSettings(method="map", ablation="unit-gamma", chains=1, draws=400)
    )
    table = inference.compare({"full": map_fit, "unit-gamma": ablated})
    assert list(table.index) == ["full", "unit-gamma"]
    result = inference.loo(map_fit)
    assert (
        np.isfinite(result.elpd)
        and result.pareto_k.size == map_fit.log_likelihood.sizes["fitted_cell"]
    )
    # a fit whose LOO cannot be trusted is left out of the ranking, with the reason
    unidentified = _unidentified_map_fit(behaviour)
    table = inference.compare({"full": map_fit, "bad": unidentified, "unit-gamma": ablated})
    assert list(table.index) == ["full", "unit-gamma"]
    assert list(table.attrs["not_ranked"]) == ["bad"]
    assert table.attrs["not_ranked"]["bad"].startswith("PSIS-LOO not reported: ")
    with pytest.raises(RiclError, match="^fewer than two fits have a reliable PSIS-LOO"):
        inference.compare({"full": map_fit, "bad": unidentified})


def _unidentified_map_fit(behaviour):
    """Issue 15's symptom: with two num_tasks values (one fitted) alpha, beta and gamma are
    barely identified and the Laplace draws of a MAP fit fall far outside the posterior."""
    settings = inference.FitSettings(method="map", chains=1, draws=400)
    return inference.fit(behaviour.isel(num_tasks=[0, 1]), settings)


def test_loo_is_reported_only_where_psis_supports_it(behaviour, map_fit, nuts_fit):
    for tree in (nuts_fit, map_fit):  # the model that made the data: LOO stands
        result = inference.loo(tree)
        assert inference.loo_problem(tree, result) is None
        assert result.p < inference.num_parameters(tree) + 1
    assert inference.num_parameters(map_fit) == 5  # alpha, beta, gamma, sigma[id], sigma[ood]
    unidentified = _unidentified_map_fit(behaviour)
    result = inference.loo(unidentified)
    assert not result.p < 100 * 5  # hundreds of "effective parameters", or NaN
    problem = inference.loo_problem(unidentified, result)
    assert problem.startswith("PSIS-LOO not reported: ") and "Pareto k above" in problem
    assert problem.endswith("(the map draws); refit with --method nuts")
    # good Pareto k, but p_loo far above the parameter count: not reported either
    inflated = types.SimpleNamespace(pareto_k=np.zeros(100), good_k=0.7, p=16.0)
    problem = inference.loo_problem(map_fit, inflated)
    assert "p_loo exceeds 3 times the model's 5 free parameters" in problem
    inflated.p = 14.0
    assert inference.loo_problem(map_fit, inflated) is None


@pytest.fixture(scope="module")
def two_configurations():
    return simulated_behaviour(num_checkpoints=16, mlp=[1.0, 4.0], seed=4)


def test_no_pooling_recovers_each_configuration(two_configurations):
    settings = inference.FitSettings(method="map", pooling="none", chains=1, draws=50)
    tree = inference.fit(two_configurations, settings)
    assert tree.posterior.alpha.dims == ("chain", "draw", "mlp_expansion_factor")
    assert tree.posterior.weight_memorizing.dims == (
        "chain",
        "draw",
        "mlp_expansion_factor",
        "num_tasks",
        "checkpoint",
    )
    for name, truth in TRUTH.items():
        np.testing.assert_allclose(tree.point_estimate[name], truth, rtol=0.1)


def test_partial_pooling_is_non_centred(two_configurations):
    # Structure only (a short SVI run): MAP of a hierarchical model shrinks the population
    # scale towards 0, and NUTS is the method for real partial-pooling fits.
    settings = inference.FitSettings(
        method="svi", pooling="partial", chains=1, draws=20, svi_steps=100
    )
    tree = inference.fit(two_configurations, settings)
    for name in PARAMETERS:
        assert tree.posterior[f"{name}_offset"].dims[-1] == "mlp_expansion_factor"
        assert tree.posterior[f"{name}_loc"].dims == ("chain", "draw")
        assert tree.posterior[name].dims == ("chain", "draw", "mlp_expansion_factor")


def test_svi_runs_and_is_close(behaviour):
    settings = inference.FitSettings(method="svi", chains=1, draws=200, svi_steps=1500)
    tree = inference.fit(behaviour, settings)
    for name, truth in TRUTH.items():
        assert float(tree.posterior[name].mean()) == pytest.approx(truth, rel=0.1)


def test_seeds_make_fits_repeatable(behaviour, map_fit):
    again = inference.fit(behaviour, inference.FitSettings(method="map", chains=1, draws=400))
    np.testing.assert_array_equal(again.posterior.gamma, map_fit.posterior.gamma)
    np.testing.assert_array_equal(
        again.posterior_predictive.relative_distance, map_fit.posterior_predictive.relative_distance
    )


def test_settings_are_validated():
    with pytest.raises(RiclError, match="ablation must be one of"):
        inference.FitSettings(ablation="half")
    with pytest.raises(RiclError, match="constant strategy needs --observation outputs"):
        inference.FitSettings(strategies=("memorizing", "generalizing", "constant"))
    with pytest.raises(RiclError, match="needs several configurations"):
        inference.fit(simulated_behaviour(num_checkpoints=5), inference.FitSettings(pooling="none"))


def test_simulated_runs_recover_roughly(synthetic_runs):
    """The full pipeline on the behaviour of simulated predictions files (MAP).

    The relative distance of a noisy mixture is not exactly its weight, so only the 10%
    bound is asserted here; exact recovery is tested on model-simulated behaviour above.
    """
    measured = load_behaviour(synthetic_runs.folder)
    tree = inference.fit(measured, inference.FitSettings(method="map", chains=1, draws=50))
    for name in PARAMETERS:
        truth = getattr(synthetic_runs, name)
        assert float(tree.point_estimate[name]) == pytest.approx(truth, rel=0.1)


def _outputs_map(measured, runs, **settings):
    settings = inference.FitSettings(
        **{"observation": "outputs", "method": "map", "chains": 1, "draws": 20} | settings
    )
    return inference.fit(measured, settings, runs=runs)


@pytest.fixture(scope="module")
def outputs_fits(synthetic_runs):
    """The full outputs model and its unit-gamma ablation (MAP), the latter on 2 x 700
    draws, which its log likelihood thins to every second draw."""
    runs = open_runs(synthetic_runs.folder)
    measured = load_behaviour(synthetic_runs.folder)
    full = _outputs_map(measured, runs, draws=200)
    ablated = _outputs_map(measured, runs, chains=2, draws=700, ablation="unit-gamma")
    return runs, full, ablated


def test_outputs_and_context_dependent_models_fit(synthetic_runs, outputs_fits):
    runs, outputs, _ = outputs_fits
    measured = load_behaviour(synthetic_runs.folder)
    assert "concentration" in outputs.posterior
    for name in PARAMETERS:
        truth = getattr(synthetic_runs, name)
        assert float(outputs.point_estimate[name]) == pytest.approx(truth, rel=0.1)
    context = inference.fit(
        measured,
        inference.FitSettings(method="map", chains=1, draws=20, context_dependent=True),
        runs=runs,
    )
    expected = context.posterior.expected_relative_distance
    assert not math.isclose(  # the context moves id and ood apart
        float(expected.sel(split="id").mean()), float(expected.sel(split="ood").mean())
    )
    context_outputs = inference.fit(
        measured,
        inference.FitSettings(
            observation="outputs", method="map", chains=1, draws=5, context_dependent=True
        ),
        runs=runs,
    )
    assert "log_likelihood" not in context_outputs.children
    with pytest.raises(RiclError, match="context-dependent outputs fits have no pointwise"):
        inference.loo(context_outputs)


def test_early_checkpoints_can_be_left_out_of_the_fit(synthetic_runs):
    measured = load_behaviour(synthetic_runs.folder)
    settings = inference.FitSettings(method="map", chains=1, draws=20, drop_early=True)
    tree = inference.fit(measured, settings)
    constant = tree.constant_data
    expected = inference.early_cells(measured.interpolation_distance)
    np.testing.assert_array_equal(constant.dropped.values, expected.values)
    assert not (constant.fit_mask & constant.dropped).any()
    assert tree.log_likelihood.sizes["fitted_cell"] == int(constant.fit_mask.sum())


def test_outputs_quadrature_nodes_find_the_exact_optimum(synthetic_runs, outputs_fits):
    runs, nodes, _ = outputs_fits
    measured = load_behaviour(synthetic_runs.folder)
    exact = _outputs_map(measured, runs, outputs_bin_width=None)  # every prediction a node
    for name in (*PARAMETERS, "concentration"):  # within a tenth of a posterior sd
        shift = float(nodes.point_estimate[name] - exact.point_estimate[name])
        sd = float(exact.posterior[name].std())
        assert abs(shift) < 0.1 * sd


def test_summary_prints_90_percent_intervals(map_fit):
    table = inference.summary(map_fit)
    assert {"eti90_lb", "eti90_ub"} <= set(table.columns)
    low = float(map_fit.posterior.alpha.quantile(0.05))
    assert float(table.loc["alpha", "eti90_lb"]) == pytest.approx(low, abs=2e-3)


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


def test_outputs_fits_are_compared_by_loo(outputs_fits, map_fit, tmp_path):
    _, full, ablated = outputs_fits
    ablated = inference.read_fit(inference.write_fit(ablated, tmp_path / "ablated.nc"))
    result = inference.loo(full)
    assert np.isfinite(result.elpd)
    assert result.pareto_k.size == full.log_likelihood.sizes["fitted_cell"]
    log_lik = ablated.log_likelihood  # 1400 draws: every second kept
    assert log_lik.attrs["thinned_from"] == 700
    np.testing.assert_array_equal(log_lik.draw.values, np.arange(0, 700, 2))
    assert log_lik.sizes["chain"] == 2
    # The ablation (gamma fixed at 1, truth 3) is misspecified enough that its Laplace
    # draws give p_loo in the hundreds: it is not ranked, and the reason is kept.
    table = inference.compare({"full": full, "unit-gamma": ablated, "copy": full})
    assert sorted(table.index) == ["copy", "full"]
    assert "p_loo exceeds 3 times" in table.attrs["not_ranked"]["unit-gamma"]
    with pytest.raises(RiclError, match="one observation model"):
        inference.compare({"outputs": full, "relative-distance": map_fit})


def test_authors_threshold_is_the_latest_first_close_checkpoint():
    """Hand case: ranges [1, 0] per num_tasks; within 0.2 of the range at steps 30 and 50."""
    distance = xr.DataArray(
        [
            [[1.0, 9.0], [0.5, 9.0], [0.1, 9.0], [0.0, 9.0], [0.0, 9.0]],  # first close: 30
            [[1.0, 0.0], [0.9, 0.0], [0.5, 0.0], [0.3, 0.0], [0.0, 0.0]],  # first close: 50
        ],
        dims=("num_tasks", "checkpoint", "split"),
        coords={"num_tasks": [2, 4], "checkpoint": [10, 20, 30, 40, 50], "split": ["id", "ood"]},
    )
    kept = inference.authors_kept(distance, within=0.2)
    assert kept.dims == ("num_tasks", "checkpoint")
    np.testing.assert_array_equal(kept.values, [[False] * 4 + [True]] * 2)
    kept = inference.authors_kept(distance, within=0.5)  # first close: 20 and 30
    np.testing.assert_array_equal(kept.checkpoint.where(kept).min(), 30)


def test_fitting_one_split_masks_the_others(behaviour):
    settings = inference.FitSettings(method="map", chains=1, draws=50, splits=("id",))
    tree = inference.fit(behaviour, settings)
    mask = tree.constant_data.fit_mask
    assert not bool(mask.sel(split="ood").any())
    assert int(mask.sel(split="id").sum()) == int((~tree.constant_data.held_out).sum())
    with pytest.raises(RiclError, match="allowed are id, ood"):
        inference.fit(behaviour, inference.FitSettings(method="map", splits=("iwl",)))
    # the unfitted split is predicted with the fitted split's noise scale (0.05 in the
    # simulation), not a draw of the HalfNormal(0.2) prior, whose intervals cover everything
    weight = tree.posterior.weight_memorizing
    inside = ((weight > 0.3) & (weight < 0.7)).all(["chain", "draw"])  # no clipping there
    noise = (tree.posterior_predictive.relative_distance - weight).where(inside)
    spread = noise.std(["chain", "draw", "num_tasks", "checkpoint"])
    np.testing.assert_allclose(spread.sel(split="ood"), spread.sel(split="id"), rtol=0.15)
    assert float(spread.sel(split="id")) == pytest.approx(0.05, rel=0.3)


def test_no_skill_baseline_is_each_num_tasks_mean(map_fit):
    """The baseline's agreement, recomputed by hand from the fit's own observed cells."""
    observed = map_fit.observed_data.relative_distance.sel(split="id")
    cells = (map_fit.constant_data.held_out & observed.notnull()).values
    values = np.where(cells, observed.values, np.nan)
    baseline = np.broadcast_to(np.nanmean(values, axis=1, keepdims=True), values.shape)
    p, o = baseline[cells], observed.values[cells]
    expected = scipy.stats.pearsonr(p, o).statistic
    assert map_fit.attrs["baseline_heldout_correlation_id"] == pytest.approx(expected)
    assert map_fit.attrs["baseline_heldout_tvd_id"] == pytest.approx(np.mean(np.abs(p - o)))


def test_context_loss_uses_the_default_regression_noise():
    # no noise_variance attribute: sigma^2 = num_dims / 256, as the data stage assumes
    rng = np.random.default_rng(3)
    prediction, target = rng.normal(size=(2, 1, 3, 5, 1)), rng.normal(size=(1, 3, 5))
    runs = xr.Dataset(
        {
            "strategy_prediction": (
                ("strategy", "split", "sequence", "position", "outcome"),
                prediction,
            ),
            "target": (("split", "sequence", "position"), target),
        },
        attrs={"setting": "linear-regression", "num_dims": 4},
    )
    got = inference.context_loss(runs).values  # (strategy, split, sequence, position)
    per_step = (prediction[..., 0] - target) ** 2 / (2 * 4 / 256)
    for t in range(5):
        expected = per_step[..., :t].mean(-1) if t else 0.0
        np.testing.assert_allclose(got[..., t], expected, rtol=1e-12)

"""fit() end to end: ablations, pooling, simulated runs, outputs and context-dependent
models, early checkpoints, one fitted split."""

import math

import numpy as np
import pytest
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import diagnostics, inference, inputs, metrics
from rational_icl.fits.behaviour import load_behaviour
from tests.fits.simulated import (
    PAPER_FIT,
    PARAMETERS,
    TRUTH,
    outputs_map,
    simulated_behaviour,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ablation", "fixed", "value"),
    [
        ("linear-likelihood", "alpha", 0.0),
        ("fixed-complexity", "beta", 1.0),
        ("unit-gamma", "gamma", 1.0),
    ],
)
def test_ablations_fix_the_right_parameter(behaviour, ablation, fixed, value):
    settings = inputs.FitSettings(**PAPER_FIT, method="map", ablation=ablation, chains=1, draws=50)
    tree = inference.fit(behaviour, settings)
    assert (tree.posterior[fixed] == value).all()
    assert tree.attrs["ablation"] == ablation
    free = [p for p in PARAMETERS if p != fixed]
    assert all(float(tree.posterior[p].std()) > 0 for p in free)


@pytest.mark.slow
def test_no_pooling_recovers_each_configuration(two_configurations):
    settings = inputs.FitSettings(**PAPER_FIT, method="map", pooling="none", chains=1, draws=50)
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


@pytest.mark.slow
def test_partial_pooling_is_non_centred(two_configurations):
    # Structure only (a short SVI run): MAP of a hierarchical model shrinks the population
    # scale towards 0, and NUTS is the method for real partial-pooling fits.
    settings = inputs.FitSettings(
        **PAPER_FIT, method="svi", pooling="partial", chains=1, draws=20, svi_steps=100
    )
    tree = inference.fit(two_configurations, settings)
    for name in PARAMETERS:
        assert tree.posterior[f"{name}_offset"].dims[-1] == "mlp_expansion_factor"
        assert tree.posterior[f"{name}_loc"].dims == ("chain", "draw")
        assert tree.posterior[name].dims == ("chain", "draw", "mlp_expansion_factor")


@pytest.mark.slow
def test_simulated_runs_recover_roughly(synthetic_runs):
    """The full pipeline on the behaviour of simulated predictions files (MAP).

    The relative distance of a noisy mixture is not exactly its weight, so only the 10%
    bound is asserted here; exact recovery is tested on model-simulated behaviour above.
    """
    measured = load_behaviour(synthetic_runs.folder)
    tree = inference.fit(
        measured, inputs.FitSettings(**PAPER_FIT, method="map", chains=1, draws=50)
    )
    for name in PARAMETERS:
        truth = getattr(synthetic_runs, name)
        assert float(tree.point_estimate[name]) == pytest.approx(truth, rel=0.1)


@pytest.mark.slow
def test_outputs_and_context_dependent_models_fit(synthetic_runs, outputs_fits):
    runs, outputs, _ = outputs_fits
    measured = load_behaviour(synthetic_runs.folder)
    assert "concentration" in outputs.posterior
    for name in PARAMETERS:
        truth = getattr(synthetic_runs, name)
        assert float(outputs.point_estimate[name]) == pytest.approx(truth, rel=0.1)
    context = inference.fit(
        measured,
        inputs.FitSettings(**PAPER_FIT, method="map", chains=1, draws=20, context_dependent=True),
        runs=runs,
    )
    expected = context.posterior.expected_weight
    assert not math.isclose(  # the context moves id and ood apart
        float(expected.sel(split="id").mean()), float(expected.sel(split="ood").mean())
    )
    context_outputs = inference.fit(
        measured,
        inputs.FitSettings(
            **PAPER_FIT,
            observation="outputs",
            method="map",
            chains=1,
            draws=5,
            context_dependent=True,
        ),
        runs=runs,
    )
    assert "log_likelihood" not in context_outputs.children
    with pytest.raises(RiclError, match="context-dependent outputs fits have no pointwise"):
        diagnostics.loo(context_outputs)


@pytest.mark.slow
def test_early_checkpoints_can_be_left_out_of_the_fit(synthetic_runs):
    measured = load_behaviour(synthetic_runs.folder)
    settings = inputs.FitSettings(model="paper", method="map", chains=1, draws=20, drop_early=True)
    tree = inference.fit(measured, settings)
    constant = tree.constant_data
    # each run's range over the cells the fit may read (no held-out checkpoint decides)
    expected = inputs.early_cells(measured.interpolation_distance, seen=~constant.held_out)
    np.testing.assert_array_equal(constant.dropped.values, expected.values)
    assert not (constant.fit_mask & constant.dropped).any()
    assert tree.log_likelihood.sizes["fitted_cell"] == int(constant.fit_mask.sum())


@pytest.mark.slow
def test_outputs_quadrature_nodes_find_the_exact_optimum(synthetic_runs, outputs_fits):
    runs, nodes, _ = outputs_fits
    measured = load_behaviour(synthetic_runs.folder)
    exact = outputs_map(measured, runs, outputs_bin_width=None)  # every prediction a node
    for name in (*PARAMETERS, "concentration"):  # within a tenth of a posterior sd
        shift = float(nodes.point_estimate[name] - exact.point_estimate[name])
        sd = float(exact.posterior[name].std())
        assert abs(shift) < 0.1 * sd


@pytest.mark.slow
def test_fitting_one_split_masks_the_others(behaviour):
    settings = inputs.FitSettings(**PAPER_FIT, method="map", chains=1, draws=50, splits=("id",))
    tree = inference.fit(behaviour, settings)
    mask = tree.constant_data.fit_mask
    assert not bool(mask.sel(split="ood").any())
    assert int(mask.sel(split="id").sum()) == int((~tree.constant_data.held_out).sum())
    with pytest.raises(RiclError, match="allowed are id, ood"):
        inference.fit(behaviour, inputs.FitSettings(**PAPER_FIT, method="map", splits=("iwl",)))
    # the unfitted split is predicted with the fitted split's noise scale (0.05 in the
    # simulation), not a draw of the HalfNormal(0.2) prior, whose intervals cover everything
    weight = tree.posterior.weight_memorizing
    inside = ((weight > 0.3) & (weight < 0.7)).all(["chain", "draw"])  # no clipping there
    noise = (tree.posterior_predictive.observed_weight - weight).where(inside)
    spread = noise.std(["chain", "draw", "num_tasks", "checkpoint"])
    np.testing.assert_allclose(spread.sel(split="ood"), spread.sel(split="id"), rtol=0.15)
    assert float(spread.sel(split="id")) == pytest.approx(0.05, rel=0.3)


def test_a_fit_without_fitted_cells_is_refused_before_sampling(behaviour):
    # Issue 24, item 4: a --drop-early that dropped every cell crashed after NUTS had run.
    empty = behaviour.assign(relative_distance=behaviour.relative_distance * np.nan)
    settings = inputs.FitSettings(
        **PAPER_FIT, measure="relative-distance", chains=1, draws=10, warmup=10
    )
    with pytest.raises(RiclError, match="no cell is left to fit"):
        inference.fit(empty, settings)


def test_fit_refuses_float32(behaviour):
    import jax

    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RiclError, match="configure_jax"):
            inference.fit(
                behaviour, inputs.FitSettings(**PAPER_FIT, method="map", chains=1, draws=5)
            )
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.slow
def test_drift_model_forecasts_a_run_from_its_fitted_checkpoints(behaviour):
    """A run that sits well above the law from the middle of training on: the drift model
    carries the shift into the held-out (forecast) checkpoints, by the normal conditional
    on that run's fitted cells; the paper's model cannot."""
    shifted = behaviour.copy(deep=True)
    later = shifted.checkpoint >= shifted.checkpoint[10]
    run = shifted.relative_distance.sel(num_tasks=256)  # generalizing throughout
    shifted["relative_distance"].loc[{"num_tasks": 256}] = xr.where(
        later, np.clip(run + 0.3, -1, 1), run
    )
    common = dict(method="map", chains=1, draws=20, held_out="forecast:0.3", drop_early=False)
    drift = inference.fit(shifted, inputs.FitSettings(model="anchored-offsets-drift", **common))
    paper = inference.fit(shifted, inputs.FitSettings(model="paper", **common))

    held = drift.constant_data.held_out.sel(num_tasks=256).values
    observed = drift.observed_data.observed_weight.sel(num_tasks=256, split="id").values
    errors = {}
    for name, tree in [("drift", drift), ("paper", paper)]:
        predicted = metrics.predicted_weight(tree).sel(num_tasks=256, split="id")
        errors[name] = np.sqrt(np.mean((predicted.values[held] - observed[held]) ** 2))
    assert errors["drift"] < 0.5 * errors["paper"]

    # one draw by hand: law + k(held, fitted) K^-1 (observed - law) over the fitted cells
    draw = drift.posterior.isel(chain=0, draw=0)
    law = draw.weight_memorizing.sel(num_tasks=256).values.astype(float)
    fitted = drift.constant_data.fit_mask.sel(num_tasks=256, split="id").values
    time = np.log(drift.posterior.checkpoint.values.astype(float))
    size, length = float(draw.drift_scale.sel(split="id")), float(draw.drift_length)
    kernel = size**2 * np.exp(-np.abs(time[:, None] - time[None, :]) / length)
    noise = float(draw.sigma.sel(split="id")) ** 2 * np.eye(time.size)
    weights = np.linalg.solve((kernel + noise)[np.ix_(fitted, fitted)], kernel[fitted][:, held])
    expected = np.clip(law[held] + weights.T @ (observed[fitted] - law[fitted]), 0, 1)
    # a prediction from the observed cells: kept with the posterior predictive's draws
    predictive = drift.posterior_predictive.isel(chain=0, draw=0)
    assert int(predictive.draw) == int(draw.draw)
    assert "expected_weight" not in drift.posterior
    got = predictive.expected_weight.sel(num_tasks=256, split="id").values[held]
    np.testing.assert_allclose(got, expected, atol=1e-5)  # per-cell draws are float32


# Runs whose offsets fall along a line in log num_tasks, from +1 at D = 2 to -0.25 at 2048
# (the smooth models' walk with fixed innovations), the evidence at the mean log checkpoint
# 40 (gamma about 1.1)
SMOOTH_TRUTH = {
    "alpha": 0.5,
    "beta": 0.3,
    "evidence_scale": 40.0,
    "offset_scale": 0.5,
    "smooth_scale": 0.5,
    "run_offset_innovation": np.array([2.0] + [-0.3] * 10)[None, :, None],  # (C, D, Q - 1)
}


@pytest.mark.slow
def test_smooth_offsets_predict_an_unseen_num_tasks_from_its_neighbours():
    """Every other num_tasks held out: the smooth model recovers alpha within its 90%
    interval and predicts the unseen num_tasks from its neighbours' offsets, far better
    than the independent offsets, which leave them at the law (RMSE on the held-out cells
    0.008 and 0.043 when written)."""
    behaviour = simulated_behaviour(
        seed=3, sigma=0.01, truth=SMOOTH_TRUTH, model="anchored-smooth-offsets"
    )
    common = dict(
        method="map", chains=1, draws=200, held_out="num-tasks", drop_early=False, law_free=False
    )
    errors = {}
    for model in ("anchored-smooth-offsets", "anchored-offsets"):
        tree = inference.fit(behaviour, inputs.FitSettings(model=model, **common))
        held = tree.constant_data.held_out.values  # (num_tasks, checkpoint, split)
        predicted = metrics.predicted_weight(tree).values
        observed = tree.observed_data.observed_weight.values
        errors[model] = float(np.sqrt(np.mean((predicted[held] - observed[held]) ** 2)))
        if model == "anchored-smooth-offsets":
            low, high = np.quantile(tree.posterior.alpha.values, [0.05, 0.95])
            assert low < SMOOTH_TRUTH["alpha"] < high, (low, high)
            # the fit file: its sites as the form says, per run where they are per run
            innovation = tree.posterior.run_offset_innovation
            assert innovation.dims == ("chain", "draw", "num_tasks", "offset_strategy")
            assert {"smooth_scale", "offset_scale", "run_offset"} <= set(tree.posterior)
            assert "run_log_prior_odds_decentered" not in tree.posterior
    assert errors["anchored-smooth-offsets"] < 0.012
    assert errors["anchored-smooth-offsets"] < 0.3 * errors["anchored-offsets"]

"""Figures: every one draws from runs and a fit, labels its axes, and the quantities they
show (crossing steps, predicted N*, log odds) match closed forms."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from rational_icl.fits import rational_weight
from rational_icl.reports import figures

PER_CELL = [
    figures.weight_map,
    figures.weight_over_training,
    figures.loss_complexity,
    figures.transition_steps,
    figures.transience,
]
FIT_ONLY = [
    figures.predicted_vs_observed,
    figures.parameter_trace,
    figures.parameter_rank,
    figures.posterior_predictive_check,
    figures.log_odds,
    figures.parameters_by_configuration,
]


def _labelled(figure: Figure) -> None:
    """Every data axes has x and y labels; every colour bar has a title."""
    for ax in figure.axes:
        if not ax.axison or not ax.has_data() and not ax.collections:
            continue
        is_colorbar = ax.get_label() == "<colorbar>"
        if is_colorbar:
            assert ax.get_ylabel(), "untitled colour bar"
        else:
            assert ax.get_xlabel(), f"axes {ax.get_title()!r} has no x label"
    plt.close(figure)


@pytest.mark.parametrize("draw", PER_CELL, ids=lambda f: f.__name__)
def test_figures_from_runs_and_fit(draw, behaviour, fit):
    for figure in (draw(behaviour, fit), draw(behaviour, None)):
        assert isinstance(figure, Figure)
        _labelled(figure)


def test_id_and_ood_side_by_side(behaviour, fit):
    figure = figures.weight_map(behaviour, fit)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == [
        "observed, id",
        "observed, ood",
        "predicted (posterior mean), id",
        "predicted (posterior mean), ood",
    ]
    plt.close(figure)


def test_num_tasks_axes_are_log2(behaviour):
    figure = figures.weight_map(behaviour)
    ax = figure.axes[0]
    assert ax.get_yscale() == "log" and ax.yaxis.get_transform().base == 2
    plt.close(figure)


@pytest.mark.parametrize(
    "draw", [f for f in FIT_ONLY if f is not figures.parameters_by_configuration]
)
def test_fit_figures(draw, fit):
    figure = draw(fit)
    assert isinstance(figure, Figure) and figure.axes
    _labelled(figure)


@pytest.mark.parametrize("draw", FIT_ONLY, ids=lambda f: f.__name__)
def test_fit_figures_say_they_need_a_fit(draw):
    with pytest.raises(figures.FigureUnavailable, match="needs a fit"):
        draw(None)


def test_losses_over_training_needs_runs(fit, behaviour):
    with pytest.raises(figures.FigureUnavailable, match="runs folder"):
        figures.losses_over_training(None)
    _labelled(figures.losses_over_training(behaviour))


def test_fit_alone_draws_the_observed_figures(fit):
    """From a fit alone, the weight map shows the fit's observed weights cell by cell and
    the loss-complexity figure draws the fit's L_Q and K_Q."""
    (observed,) = fit["observed_data"].data_vars.values()
    figure = figures.weight_map(None, fit)
    splits = [str(s) for s in observed["split"].values]
    assert len(splits) == 2  # the first row: observed, one panel per split
    for ax, split in zip(figure.axes[: len(splits)], splits, strict=True):
        mesh = ax.collections[0]
        assert isinstance(mesh, QuadMesh) and ax.get_title() == f"observed, {split}"
        cells = observed.sel(split=split).transpose("num_tasks", "checkpoint").values
        np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(cells.shape), cells)
    _labelled(figure)

    constant = fit["constant_data"]
    loss, complexity = constant["strategy_loss"], constant["strategy_complexity"]
    figure = figures.loss_complexity(None, fit)
    by_num_tasks, tradeoff = figure.axes[1], figure.axes[2]
    strategies = [str(s) for s in loss["strategy"].values]
    assert [line.get_label() for line in by_num_tasks.lines] == strategies
    for q, line, point in zip(strategies, by_num_tasks.lines, tradeoff.lines, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), loss["num_tasks"].values)
        np.testing.assert_array_equal(line.get_ydata(), complexity.sel(strategy=q).values)
        np.testing.assert_array_equal(point.get_xdata(), complexity.sel(strategy=q).values)
        np.testing.assert_array_equal(point.get_ydata(), loss.sel(strategy=q).values)
    _labelled(figure)


def test_observed_transition_step_interpolates_in_log_steps():
    steps = [10, 100, 1000, 10000]
    weight = xr.DataArray(
        [[0.1, 0.3, 0.7, 0.9], [0.1, 0.2, 0.3, 0.4], [0.6, 0.8, 0.9, 1.0], [0.1, 0.5, 0.2, 0.9]],
        dims=("num_tasks", "checkpoint"),
        coords={"num_tasks": [2, 4, 8, 16], "checkpoint": steps},
    )
    step = figures.observed_transition_step(weight).values
    assert step[0] == pytest.approx(math.sqrt(100 * 1000))  # halfway in log N
    assert math.isnan(step[1])  # never reaches 0.5
    assert step[2] == pytest.approx(10)  # already there at the first checkpoint
    assert step[3] == pytest.approx(100)  # exactly 0.5 at a checkpoint


def test_predicted_transition_step_is_where_the_weight_is_one_half(fit):
    predicted = figures.predicted_transition_step(fit)
    posterior, constant = fit["posterior"], fit["constant_data"]
    draw = {"chain": 0, "draw": 3}
    alpha, beta, gamma = (float(posterior[p].isel(draw)) for p in ("alpha", "beta", "gamma"))
    loss = constant["strategy_loss"].transpose("num_tasks", "strategy").values
    complexity = constant["strategy_complexity"].transpose("num_tasks", "strategy").values
    steps = predicted.isel(draw).values
    finite = np.isfinite(steps)
    assert finite.sum() >= 4
    weight = rational_weight(steps[finite], loss[finite], complexity[finite], alpha, beta, gamma)
    np.testing.assert_allclose(weight[:, 0], 0.5, atol=1e-9)


def test_log_odds_terms_match_the_closed_form_prior(fit):
    terms = figures.log_odds_terms(fit)
    posterior, complexity = fit["posterior"], fit["constant_data"]["strategy_complexity"]
    beta = posterior["beta"]
    k_m, k_g = complexity.sel(strategy="memorizing"), complexity.sel(strategy="generalizing")
    expected = -math.log(2) * (k_m**beta - k_g**beta)
    prior = terms["log_prior_odds"]
    # fit.nc stores the per-cell log posterior odds in float32: the prior odds are exact up
    # to a few float32 ulps of the posterior odds they are taken from
    resolution = 4 * np.finfo(np.float32).eps * float(abs(terms["log_posterior_odds"]).max())
    np.testing.assert_allclose(
        prior.transpose("chain", "draw", "num_tasks", "checkpoint").values,
        expected.broadcast_like(prior).transpose(*prior.dims).values,
        rtol=0,
        atol=resolution,
    )


def test_growth_exponent_recovers_a_power_law():
    num_tasks = np.array([2, 4, 8, 16, np.nan])
    assert figures.growth_exponent(num_tasks, 7 * num_tasks**1.7) == pytest.approx(1.7)
    assert math.isnan(figures.growth_exponent([2, 4], [1.0, np.nan]))


def test_intermediate_num_tasks_is_the_middle_half():
    assert figures.intermediate_num_tasks([2, 4, 8, 16, 32, 64, 128, 256]).tolist() == [
        8,
        16,
        32,
        64,
    ]
    assert figures.intermediate_num_tasks([4]).tolist() == [4]


def _pooled_fit() -> xr.DataTree:
    """A hand-made fit with per-configuration beta and gamma over mlp_expansion_factor."""
    rng = np.random.default_rng(0)
    widths = [0.5, 4.0, 8.0]
    sample = {"chain": np.arange(2), "draw": np.arange(50)}
    posterior = xr.Dataset(
        {
            "alpha": (("chain", "draw"), rng.uniform(0.4, 0.6, (2, 50))),
            "beta": (("chain", "draw", "mlp_expansion_factor"), rng.normal(0.3, 0.01, (2, 50, 3))),
            "gamma": (("chain", "draw", "mlp_expansion_factor"), rng.normal(3, 0.1, (2, 50, 3))),
        },
        coords={**sample, "mlp_expansion_factor": widths},
    )
    return xr.DataTree.from_dict({"posterior": posterior})


def test_parameters_by_configuration():
    fit = _pooled_fit()
    figure = figures.parameters_by_configuration(fit)
    axes = [ax for ax in figure.axes if ax.axison]
    assert [ax.get_ylabel() for ax in axes] == ["beta (1)", "gamma (1)"]  # alpha shared
    assert all(ax.get_xscale() == "log" for ax in axes)
    posterior = fit["posterior"]
    for ax, name in zip(axes, ["beta", "gamma"], strict=True):
        # one median per MLP factor, its 90% interval as the error bar
        median = posterior[name].median(("chain", "draw")).values
        low, high = posterior[name].quantile([0.05, 0.95], dim=("chain", "draw")).values
        line = ax.lines[0]
        np.testing.assert_array_equal(line.get_xdata(), [0.5, 4.0, 8.0])
        np.testing.assert_allclose(line.get_ydata(), median, rtol=1e-12)
        (bars,) = [c for c in ax.collections if len(c.get_segments()) == 3]
        ends = np.array([segment[:, 1] for segment in bars.get_segments()])
        np.testing.assert_allclose(ends, np.stack([low, high], axis=1), rtol=1e-12)
    _labelled(figure)


def test_parameters_by_configuration_needs_a_pooled_fit(fit):
    with pytest.raises(figures.FigureUnavailable, match="one set of parameters"):
        figures.parameters_by_configuration(fit)


def test_configurations():
    data = xr.Dataset(coords={"num_tasks": [2, 4], "mlp_expansion_factor": [0.5, 4.0]})
    data = data.assign(x=(("num_tasks", "mlp_expansion_factor"), np.zeros((2, 2))))
    assert figures.configurations(data) == [
        {"mlp_expansion_factor": 0.5},
        {"mlp_expansion_factor": 4.0},
    ]
    assert figures.configurations(data.isel(mlp_expansion_factor=0)) == [{}]


def test_transition_steps_draws_when_no_num_tasks_crosses(behaviour, tmp_path):
    # A split that never memorizes has no transition step: the axes must still draw.
    never = behaviour.copy()
    never["relative_distance"] = never["relative_distance"] * 0.0
    figure = figures.transition_steps(never)
    figure.savefig(tmp_path / "never.png")
    for ax in figure.axes:
        assert ax.get_xlim()[0] > 0 and ax.get_ylim()[0] > 0


def _transition(forecast: np.ndarray) -> xr.Dataset:
    """A transition forecast (fits.transition) of four runs, two splits: every run crosses at
    step 2000, forecast from step 1000 where ``forecast`` (num_tasks, split) says so."""
    dims, shape = ("num_tasks", "split"), forecast.shape
    step = np.full(shape, 2000.0)
    return xr.Dataset(
        {
            "forecast": (dims, forecast),
            "scored": (dims, forecast),
            "predicted_median": (dims, step),
            "predicted_low": (dims, step / 1.5),
            "predicted_high": (dims, step * 1.5),
            "observed_step": (dims, step),
            "baseline_step": (dims, step * 2),
            "forecast_origin": (dims, np.full(shape, 1000.0)),
        },
        coords={"num_tasks": [2, 8, 32, 128], "split": ["id", "ood"]},
        attrs={"last_checkpoint": 4000.0},
    )


def test_transition_forecast_draws_a_split_with_no_forecast_run(tmp_path):
    # ricl run tiny-categorical crashed drawing a panel with no point on its log2 axis
    forecast = np.zeros((4, 2), bool)
    forecast[1, 0] = True  # D = 8 in id; nothing in ood
    figure = figures.transition_forecast(_transition(forecast))
    figure.savefig(tmp_path / "forecast.png")
    for ax in figure.axes:
        low, high = ax.get_xlim()
        assert 0 < low < 2 and high > 128  # every num_tasks on the axis


def test_transition_forecast_of_no_forecast_run_is_unavailable_with_why():
    with pytest.raises(figures.FigureUnavailable, match="after the forecast origin .step 1000"):
        figures.transition_forecast(_transition(np.zeros((4, 2), bool)))


@pytest.mark.parametrize("draw", PER_CELL, ids=lambda f: f.__name__)
def test_panel_titles_fit_their_panels(draw, behaviour, fit):
    """Titles never overrun their neighbours: each is no wider than its panel and row."""
    figure = draw(behaviour, fit)
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    panels = [ax for ax in figure.axes if ax.get_title() and ax.get_label() != "<colorbar>"]
    boxes = [ax.title.get_window_extent(renderer) for ax in panels]
    for ax, box in zip(panels, boxes, strict=True):
        assert box.width <= ax.get_window_extent(renderer).width * 1.05, ax.get_title()
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), f"titles overlap: {a} {b}"
    plt.close(figure)


@pytest.mark.slow
def test_weight_over_training_draws_the_law_beside_the_drift(behaviour, fit):
    from rational_icl.fits.inference import fit as fit_model
    from rational_icl.fits.inputs import FitSettings

    paper = figures.weight_over_training(behaviour, fit)
    # the paper's law has no drift: one line per num_tasks
    assert not any(line.get_linestyle() == "--" for line in paper.axes[0].get_lines())
    plt.close(paper)
    settings = FitSettings(
        method="map", model="anchored-offsets-drift", drop_early=False, draws=50, seed=0
    )
    fit = fit_model(behaviour, settings)
    figure = figures.weight_over_training(behaviour, fit)
    ax = figure.axes[0]  # id
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    num_tasks = behaviour.num_tasks.values
    assert len(dashed) == len(solid) == len(num_tasks)
    law = fit.posterior.weight_memorizing.mean(("chain", "draw"))
    # the drift's prediction, kept beside the posterior predictive on its draws
    expected = fit.posterior_predictive.expected_weight.mean(("chain", "draw")).sel(split="id")
    for d, line_law, line_mean in zip(num_tasks, dashed, solid, strict=True):
        np.testing.assert_allclose(line_law.get_ydata(), law.sel(num_tasks=d).values)
        np.testing.assert_allclose(line_mean.get_ydata(), expected.sel(num_tasks=d).values)
    assert "the law alone" in figure.get_suptitle()
    plt.close(figure)

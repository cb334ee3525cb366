"""Baselines that see only fitted cells, and the skill: against hand computations."""

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from rational_icl.fits import baselines

NUM_TASKS, STEPS = [2, 4, 8], [10, 20, 30, 40, 50]
# observed weight (num_tasks, checkpoint), split id; ood is 1 - id
ID = np.array(
    [
        [0.1, 0.2, 0.3, 0.4, 0.5],
        [0.5, 0.5, 0.6, 0.7, 0.9],
        [0.9, 0.9, 0.9, 1.0, 1.0],
    ]
)


def _observed(values=ID) -> xr.DataArray:
    return xr.DataArray(
        np.stack([values, 1 - values], axis=-1),
        dims=("num_tasks", "checkpoint", "split"),
        coords={"num_tasks": NUM_TASKS, "checkpoint": STEPS, "split": ["id", "ood"]},
    )


def _mask(rows) -> xr.DataArray:
    return xr.DataArray(
        np.array(rows, bool),
        dims=("num_tasks", "checkpoint"),
        coords={"num_tasks": NUM_TASKS, "checkpoint": STEPS},
    )


# D = 4 held out entirely, every D's last checkpoint held out (a mix of both designs)
FITTED = _mask([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]])


def test_persistence_carries_the_last_three_fitted_checkpoints_forward():
    got = baselines.baseline_predictions(_observed(), FITTED).persistence.sel(split="id")
    d2, d8 = (0.2 + 0.3 + 0.4) / 3, (0.9 + 0.9 + 1.0) / 3
    # D = 4 has no fitted cell: halfway between D = 2 and D = 8 in log D
    expected = np.array([[d2] * 5, [(d2 + d8) / 2] * 5, [d8] * 5])
    np.testing.assert_allclose(got.values, expected, rtol=1e-12)


def test_num_tasks_mean_is_each_runs_fitted_mean():
    got = baselines.baseline_predictions(_observed(), FITTED).num_tasks_mean.sel(split="ood")
    d2, d8 = 1 - np.mean([0.1, 0.2, 0.3, 0.4]), 1 - np.mean([0.9, 0.9, 0.9, 1.0])
    np.testing.assert_allclose(got.values, [[d2] * 5, [(d2 + d8) / 2] * 5, [d8] * 5])


def test_interpolation_in_log_num_tasks_per_checkpoint():
    observed = _observed()
    got = baselines.baseline_predictions(observed, FITTED).log_num_tasks_interpolation
    got = got.sel(split="id").values
    # fitted cells are the observed ones; D = 4 at a fitted checkpoint interpolates its
    # neighbours at that checkpoint; the last checkpoint holds each fitted run's persistence
    np.testing.assert_allclose(got[0, :4], ID[0, :4])
    np.testing.assert_allclose(got[1, :4], (ID[0, :4] + ID[2, :4]) / 2)
    d2, d8 = (0.2 + 0.3 + 0.4) / 3, (0.9 + 0.9 + 1.0) / 3
    np.testing.assert_allclose(got[:, 4], [d2, (d2 + d8) / 2, d8])


def test_interpolation_is_linear_in_log_num_tasks_and_nearest_past_the_ends():
    y = np.array([[np.nan, 1.0, np.nan, np.nan, 4.0, np.nan]])
    x = np.log([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    got = baselines.interpolate_missing(y, x)
    np.testing.assert_allclose(got, [[1.0, 1.0, 2.0, 3.0, 4.0, 4.0]])
    assert np.isnan(baselines.interpolate_missing(np.full((1, 3), np.nan), x[:3])).all()


def test_an_unfitted_split_is_predicted_from_the_fitted_splits():
    fitted = FITTED & xr.DataArray([True, False], dims="split", coords={"split": ["id", "ood"]})
    got = baselines.baseline_predictions(_observed(), fitted).persistence
    np.testing.assert_allclose(got.sel(split="ood").values, got.sel(split="id").values)


def test_other_seeds_mean_leaves_the_seed_out():
    observed = xr.concat(
        [_observed(ID), _observed(ID + 0.05), _observed(ID - 0.1)], dim="seed"
    ).assign_coords(seed=[1, 2, 3])
    fitted = xr.DataArray([True, True, False], dims="seed", coords={"seed": [1, 2, 3]})
    got = baselines.baseline_predictions(observed, fitted).other_seeds_mean.sel(split="id")
    np.testing.assert_allclose(got.sel(seed=3).values, ID + 0.025, rtol=1e-12)
    np.testing.assert_allclose(got.sel(seed=1).values, ID + 0.05, rtol=1e-12)


def test_skill_scores_every_predictor_on_the_same_cells():
    observed = _observed()
    predicted = observed * 0.5 + 0.25  # the "model"
    draws = xr.DataArray(np.linspace(-0.2, 0.2, 40), dims="draw").expand_dims(chain=1)
    predictive = predicted + draws  # interval: predicted +- 0.18
    scored = ~FITTED
    skill = baselines.predictive_skill(observed, predicted, FITTED, scored, predictive)

    cells = np.broadcast_to(scored.values[..., None], observed.shape)
    for split in ("id", "ood"):
        s = observed.get_index("split").get_loc(split)
        o = observed.values[..., s][cells[..., s]]
        p = predicted.values[..., s][cells[..., s]]
        row = skill.sel(split=split)
        model = row.sel(predictor="model")
        assert float(model.rmse) == pytest.approx(np.sqrt(np.mean((p - o) ** 2)))
        assert float(model.correlation) == pytest.approx(scipy.stats.pearsonr(p, o).statistic)
        pit = np.mean(p[:, None] + draws.values[0] <= o[:, None], axis=1)  # no ties here
        assert float(model.coverage) == pytest.approx(np.mean((pit >= 0.05) & (pit <= 0.95)))
        rmses = {}
        for name in ("persistence", "num_tasks_mean", "log_num_tasks_interpolation"):
            b = baselines.baseline_predictions(observed, FITTED)[name]
            b = b.values[..., s][cells[..., s]]
            rmses[name] = np.sqrt(np.mean((b - o) ** 2))
            assert float(row.rmse.sel(predictor=name)) == pytest.approx(rmses[name])
            assert 0.0 <= float(row.coverage.sel(predictor=name)) <= 1.0
        best = min(rmses, key=rmses.get)
        assert str(row.best_baseline.values) == best
        assert float(row.skill) == pytest.approx(1 - float(model.rmse) / rmses[best])
        assert int(row.num_cells) == cells[..., s].sum() == 7


def test_the_oracle_is_labelled_and_never_the_best_baseline():
    observed = _observed()
    skill = baselines.predictive_skill(observed, observed, FITTED, ~FITTED)
    oracle = skill.sel(predictor="oracle")
    assert bool(oracle.sees_held_out) and "sees held-out cells" in str(oracle.label.values)
    assert not skill.sees_held_out.sel(predictor="persistence")
    assert (skill.best_baseline != "oracle").all()
    # a perfect model: RMSE 0, skill 1
    np.testing.assert_allclose(skill.skill.values, 1.0)


def test_a_held_out_seed_is_predicted_from_the_other_seeds():
    observed = xr.concat(
        [_observed(ID), _observed(ID + 0.05), _observed(ID - 0.1)], dim="seed"
    ).assign_coords(seed=[1, 2, 3])
    fitted = xr.DataArray([True, True, False], dims="seed", coords={"seed": [1, 2, 3]})
    fitted = fitted & _mask([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])  # D=8 step 10
    got = baselines.baseline_predictions(observed, fitted).sel(split="id", seed=3)
    last = ID[:, 2:].mean(axis=1) + 0.025  # seeds 1 and 2: last 3 checkpoints, averaged
    np.testing.assert_allclose(got.persistence.values, np.repeat(last[:, None], 5, 1))
    others = got.other_seeds_mean.values
    np.testing.assert_allclose(others[:, 1:], ID[:, 1:] + 0.025)
    # D = 8 at step 10: no other seed fitted there, so their persistence at D = 8
    assert others[2, 0] == pytest.approx(last[2])
    skill = baselines.predictive_skill(observed, observed, fitted, ~fitted)
    assert np.isfinite(skill.rmse.sel(predictor="other_seeds_mean")).all()
    assert np.isfinite(skill.rmse.sel(predictor="persistence")).all()


def test_central_share_counts_a_pit_range_by_its_share_inside_the_interval():
    below = np.array([0.0, 0.96, 0.5, 0.01, 0.0, 0.2])
    at_or_below = np.array([0.5, 1.0, 0.5, 0.01, 1.0, 0.3])
    expected = [(0.5 - 0.05) / 0.5, 0.0, 1.0, 0.0, 0.9, 1.0]
    np.testing.assert_allclose(baselines._central_share(below, at_or_below), expected)


def test_coverage_of_a_calibrated_censored_predictive_is_ninety_percent():
    # observations and predictive drawn from the same normal censored to [0, 1]; about a
    # third of the cells sit at 0 or 1, where a closed interval reaching the bound covers
    # every one of them
    rng = np.random.default_rng(3)
    loc = rng.uniform(-0.3, 1.3, size=(40, 50, 1))
    observed = xr.DataArray(
        np.clip(loc + 0.2 * rng.standard_normal(loc.shape), 0, 1),
        dims=("num_tasks", "checkpoint", "split"),
        coords={"num_tasks": np.arange(1, 41), "split": ["id"]},
    )
    draws = np.clip(loc[None, None] + 0.2 * rng.standard_normal((1, 400, *loc.shape)), 0, 1)
    predictive = xr.DataArray(draws, dims=("chain", "draw", *observed.dims))
    scored = xr.ones_like(observed.isel(split=0, drop=True), dtype=bool)
    skill = baselines.predictive_skill(
        observed, predictive.mean(("chain", "draw")), ~scored, scored, predictive
    )
    assert float(skill.coverage.sel(predictor="model", split="id")) == pytest.approx(
        0.90, abs=0.015
    )
    low, high = np.quantile(draws[0], [0.05, 0.95], axis=0)
    closed = np.mean((observed.values >= low) & (observed.values <= high))
    assert closed > 0.93  # what the closed interval reports for the same calibrated model


def _normal_crps(y, mu, sigma):
    """The closed form of the CRPS of Normal(mu, sigma) at y (Gneiting & Raftery 2007)."""
    z = (y - mu) / sigma
    return sigma * (
        z * (2 * scipy.stats.norm.cdf(z) - 1) + 2 * scipy.stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    )


def test_crps_of_predictive_draws_is_the_normal_closed_form():
    # draws of a normal far inside (0, 1), where censoring never acts
    observed = _observed(np.full((3, 5), 0.55))
    mu, sigma = 0.5, 0.04
    quantiles = scipy.stats.norm.ppf((np.arange(2000) + 0.5) / 2000)  # even, not random
    draws = xr.DataArray(mu + sigma * quantiles[None], dims=("chain", "draw"))
    predictive = draws + xr.zeros_like(observed)
    skill = baselines.predictive_skill(observed, observed * 0 + mu, FITTED, ~FITTED, predictive)
    expected = _normal_crps(0.55, mu, sigma)  # in both splits: 0.45 is as far from 0.5
    np.testing.assert_allclose(skill.crps.sel(predictor="model").values, expected, rtol=1e-3)
    assert expected == pytest.approx(0.031479, abs=1e-6)


def test_a_baselines_crps_is_its_censored_normal_by_brute_force():
    observed = _observed()
    skill = baselines.predictive_skill(observed, observed, FITTED, ~FITTED)
    predictions = baselines.baseline_predictions(observed, FITTED)
    cells = np.broadcast_to((~FITTED).values[..., None], observed.shape)
    x = np.linspace(0.0, 1.0, 20001)  # the censored normal's CDF is 0 below 0, 1 from 1 on
    rng = np.random.default_rng(1)
    for name in ("persistence", "log_num_tasks_interpolation"):
        spread = float(skill.spread.sel(predictor=name, split="id"))
        mu = predictions[name].sel(split="id").values[cells[..., 0]]
        y = observed.sel(split="id").values[cells[..., 0]]
        cdf = np.where(x < 1.0, scipy.stats.norm.cdf((x - mu[:, None]) / spread), 1.0)
        integral = np.trapezoid((cdf - (y[:, None] <= x)) ** 2, x, axis=1)
        got = float(skill.crps.sel(predictor=name, split="id"))
        assert got == pytest.approx(integral.mean(), rel=1e-3)
        # and E|X - y| - E|X - X'| / 2 on draws of the censored normal
        a, b = np.clip(mu[:, None] + spread * rng.standard_normal((2, mu.size, 20000)), 0, 1)
        energy = np.abs(a - y[:, None]).mean(1) - np.abs(a - b).mean(1) / 2
        assert got == pytest.approx(energy.mean(), rel=0.02)


def test_spreads_are_the_fitted_residuals_interpolation_leaving_its_num_tasks_out():
    observed = _observed()
    spreads = baselines.baseline_spreads(
        observed, FITTED, baselines.baseline_predictions(observed, FITTED)
    )
    fitted_id = ID[[0, 2], :4]  # D = 2 and 8, first four checkpoints
    last = fitted_id[:, 1:].mean(axis=1, keepdims=True)
    expected = np.sqrt(np.mean((fitted_id - last) ** 2))
    assert float(spreads.persistence.sel(split="id")) == pytest.approx(expected)
    # with D = 4 unfitted, each of D = 2 and D = 8 is predicted by the other (nearest)
    expected = np.sqrt(np.mean((fitted_id[0] - fitted_id[1]) ** 2))
    got = float(spreads.log_num_tasks_interpolation.sel(split="id"))
    assert got == pytest.approx(expected)


def test_crps_skill_is_against_the_best_baseline_by_crps():
    observed = _observed()
    skill = baselines.predictive_skill(observed, observed * 0.9 + 0.05, FITTED, ~FITTED)
    assert np.isnan(skill.crps.sel(predictor="model")).all()  # no predictive draws
    assert np.isnan(skill.crps_skill).all()
    crps = skill.crps.sel(predictor=list(baselines.BASELINES[:3]))
    for split in ("id", "ood"):
        best = str(skill.best_crps_baseline.sel(split=split).values)
        assert best == str(crps.predictor[int(crps.sel(split=split).argmin("predictor"))].values)

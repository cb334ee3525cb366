"""Simulated sweeps: the rational weights, the mixture, and the shapes behaviour recovers."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import (
    load_behaviour,
    open_runs,
    rational_weight,
    simulate_runs,
)


def test_rational_weight_is_the_sigmoid_of_the_log_odds():
    steps = np.array([1.0, 20.0, 500.0, 4000.0])[:, None]  # (checkpoint, num_tasks)
    loss = np.array([[0.05, 0.2], [0.2, 0.21]])  # (num_tasks, strategy)
    complexity = np.array([[2500.0, 1200.0], [525_000.0, 1200.0]])
    alpha, beta, gamma = 0.4, 0.5, 2.0
    weight = rational_weight(steps, loss, complexity, alpha, beta, gamma)
    assert weight.shape == (4, 2, 2)
    np.testing.assert_allclose(weight.sum(-1), 1.0)
    eta = -np.log(2) * (complexity[:, 0] ** beta - complexity[:, 1] ** beta) + gamma * steps ** (
        1 - alpha
    ) * (loss[:, 1] - loss[:, 0])
    np.testing.assert_allclose(weight[..., 0], 1 / (1 + np.exp(-eta)), rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(weight))  # eta ~ -480 for the large K_M: no overflow


def test_rational_weight_softmax_over_three_strategies():
    loss = np.array([0.1, 0.2, 0.4])
    complexity = np.array([3000.0, 1200.0, 500.0])
    weight = rational_weight(100.0, loss, complexity, 0.5, 0.4, 1.5)
    logits = -np.log(2) * complexity**0.4 - 1.5 * 100.0**0.5 * loss
    np.testing.assert_allclose(weight, np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


def test_noise_free_simulation_is_the_exact_mixture(data_folder, tmp_path):
    steps = [20, 200, 2000]
    simulate_runs(data_folder, tmp_path, 0.3, 0.4, 2.0, checkpoints=steps, noise=0.0)
    path = next(tmp_path.glob("*_D16_*.nc"))
    run = xr.load_dataset(path)
    source = xr.load_dataset(data_folder / path.name)
    loss = source["strategy_loss"].values[:2]
    complexity = source["strategy_complexity"].values[:2]
    weight = rational_weight(np.array(steps), loss, complexity, 0.3, 0.4, 2.0)  # (checkpoint, 2)
    np.testing.assert_allclose(run["simulated_weight"].values[:, :2], weight, rtol=1e-12)
    np.testing.assert_array_equal(run["simulated_weight"].sel(strategy="constant"), 0.0)
    m, g = source["strategy_prediction"].values[:2]
    expected = weight[:, 0, None, None, None, None] * m + weight[:, 1, None, None, None, None] * g
    np.testing.assert_allclose(run["transformer_prediction"].values, expected, rtol=1e-5, atol=1e-7)
    assert run["checkpoint"].values.tolist() == steps
    assert run.attrs["simulated_beta"] == 0.4 and run.attrs["num_tasks"] == 16
    theta = source["sequence_task"].values[None, :, :, None, :]  # (1, split, sequence, 1, K)
    kl = (theta * (np.log(theta) - np.log(expected))).sum(-1).mean((-2, -1))
    assert run["transformer_loss"].dims == ("checkpoint", "split")
    np.testing.assert_allclose(run["transformer_loss"].values, kl, rtol=1e-4)
    assert "training_tasks" in run  # everything of the data file is kept


@pytest.mark.slow
def test_simulated_sweep_shows_the_rational_phenomena(synthetic_runs):
    beh = load_behaviour(synthetic_runs.folder)
    observed = beh["relative_distance"].sel(split="id")  # (num_tasks, checkpoint)
    late = observed.isel(checkpoint=slice(-10, None)).mean("checkpoint")
    early = observed.isel(checkpoint=slice(0, 5)).mean("checkpoint")
    assert late.sel(num_tasks=2) > 0.95  # small D memorizes
    assert (observed.sel(num_tasks=[256, 512, 1024]) < 0.2).all()  # large D never does
    for d in (16, 32):  # intermediate D: generalizes first, memorizes later
        assert early.sel(num_tasks=d) < 0.3 and late.sel(num_tasks=d) > 0.7
    truth = open_runs(synthetic_runs.folder)["simulated_weight"].sel(strategy="memorizing")
    r = np.corrcoef(truth.values.ravel(), observed.values.ravel())[0, 1]
    assert r > 0.97


@pytest.mark.slow
def test_simulation_is_repeatable_and_seeded(data_folder, tmp_path):
    kwargs = {"checkpoints": 4, "noise": 0.2}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        simulate_runs(data_folder, tmp_path / name, seed=seed, **kwargs)
    file = "categorical-sequence_K8_T16_D4_mlp4_seed1.nc"
    a, b, c = (xr.load_dataset(tmp_path / n / file)["transformer_prediction"] for n in "abc")
    xr.testing.assert_identical(a, b)
    assert not np.allclose(a.values, c.values)


def test_regression_simulation_keeps_relative_distance_unbiased(tmp_path, make_run):
    """Additive noise raises d_TM and d_TG alike, so the observed weight tracks w_M."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for d in (2, 64):
        strategies = rng.normal(size=(3, 2, 64, 8, 1))
        run = make_run(d, np.zeros((2, 2, 64, 8, 1)), strategies, setting="linear-regression")
        run = run.drop_vars(["transformer_prediction", "transformer_loss", "checkpoint"])
        run["target"] = (("split", "sequence", "position"), rng.normal(size=(2, 64, 8)))
        run.to_netcdf(data / f"regression_D{d}.nc")
    simulate_runs(data, tmp_path / "runs", 0.5, 0.5, 0.1, checkpoints=30, noise=0.3)
    beh = load_behaviour(tmp_path / "runs")
    truth = open_runs(tmp_path / "runs")["simulated_weight"].sel(strategy="memorizing")
    assert beh.attrs["distance_measure"] == "mean squared error"
    error = beh["relative_distance"] - truth
    assert float(np.abs(error).max()) < 0.1
    assert abs(float(error.mean())) < 0.02


def test_simulation_follows_the_file_facts_not_the_setting_name(tmp_path, make_run):
    """A file whose facts say "mean" gets additive noise and the squared-error loss."""
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    data.mkdir()
    facts = {
        "prediction_kind": "mean",
        "distance_kind": "mse",
        "loss_kind": "squared-error",
        "alternative_generalizer": "none",
    }
    run = make_run(4, np.zeros((2, 2, 8, 5, 1)), rng.normal(size=(3, 2, 8, 5, 1)))
    run = run.drop_vars(["transformer_prediction", "transformer_loss", "checkpoint"])
    run["target"] = (("split", "sequence", "position"), rng.normal(size=(2, 8, 5)))
    run.assign_attrs(setting="gaussian-mean", noise_variance=0.5, **facts).to_netcdf(
        data / "run.nc"
    )
    simulate_runs(data, tmp_path / "runs", checkpoints=[20, 40], noise=0.0)
    out = xr.load_dataset(tmp_path / "runs" / "run.nc")
    mixture = (out.simulated_weight * out.strategy_prediction).sum("strategy")
    # noise 0: the exact mixture, not renormalised over the one outcome as probabilities are
    np.testing.assert_allclose(
        out.transformer_prediction, mixture.transpose(*out.transformer_prediction.dims), rtol=1e-6
    )
    error = (out.target - out.transformer_prediction.isel(outcome=0).astype(np.float64)) ** 2
    expected = (error / (2 * 0.5)).mean(["sequence", "position"])
    np.testing.assert_allclose(
        out.transformer_loss, expected.transpose("checkpoint", "split"), rtol=1e-5
    )
    assert out.transformer_prediction.attrs["units"] == "units of y"


def test_simulate_runs_errors(tmp_path, data_folder):
    with pytest.raises(RiclError, match="no data files in"):
        simulate_runs(tmp_path, tmp_path / "out")
    with pytest.raises(RiclError, match="alpha=1.5 is out of range"):
        simulate_runs(data_folder, tmp_path / "out", alpha=1.5)
    with pytest.raises(RiclError, match="gamma=-1"):
        simulate_runs(data_folder, tmp_path / "out", gamma=-1)
    with pytest.raises(RiclError, match="checkpoints .* are not valid"):
        simulate_runs(data_folder, tmp_path / "out", checkpoints=[5, 5])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_simulation_from_real_ricl_data(ricl_data_folder, tmp_path):
    simulate_runs(ricl_data_folder, tmp_path, checkpoints=10, max_steps=1000)
    beh = load_behaviour(tmp_path)
    assert beh["relative_distance"].dims == ("num_tasks", "checkpoint", "split")
    assert beh["num_tasks"].values.tolist() == [2, 64]
    assert np.isfinite(beh["relative_distance"]).all()

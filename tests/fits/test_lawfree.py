"""The law-free reference: it recovers a law-free process and loses to the law on the law's."""

import numpy as np
import numpyro
import pytest
import scipy.special
import xarray as xr

from rational_icl.fits import baselines, lawfree
from rational_icl.fits.simulate import rational_weight
from tests.fits.simulated import TRUTH, simulated_behaviour

STEPS = np.unique(np.geomspace(20, 4000, 16).round()).astype(np.int64)
LEVELS = np.array([-2.0, -0.5, 0.5, 2.0])  # each run's log odds at the mean log N
SLOPES = np.array([1.0, 0.6, -0.4, -1.0])  # per e-fold of training steps


def _law_free_runs(seed: int = 0) -> tuple[xr.DataArray, xr.DataArray]:
    """Observed weights drawn from the law-free trend model itself (noise 0.03, a drift of
    0.02), and the noise-free weight, (num_tasks, checkpoint, split)."""
    runs = LEVELS.size
    truth = {
        "level_loc": 0.0,
        "level_scale": 1.0,
        "level_decentred": LEVELS[None],
        "slope_loc": 0.0,
        "slope_scale": 1.0,
        "slope_decentred": SLOPES[None],
        "sigma": np.full(2, 0.03),
        "drift_scale": np.full(2, 0.02),
        "drift_length": 1.0,
    }
    model = numpyro.handlers.condition(lawfree.law_free_model, data=truth)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(model, seed)).get_trace(
        checkpoint=STEPS.astype(float), fit_mask=np.ones((1, runs, STEPS.size, 2), bool), trend=1.0
    )
    log_steps = np.log(STEPS)
    odds = LEVELS[:, None] + SLOPES[:, None] * (log_steps - log_steps.mean())
    coords = {"num_tasks": [2, 4, 8, 16], "checkpoint": STEPS, "split": ["id", "ood"]}
    dims = ("num_tasks", "checkpoint", "split")
    observed = xr.DataArray(np.asarray(trace["observed_weight"]["value"])[0], coords, dims)
    weight = np.repeat(scipy.special.expit(odds)[..., None], 2, axis=-1)
    return observed, xr.DataArray(weight, coords, dims)


def _forecast(observed: xr.DataArray, fraction: float) -> xr.DataArray:
    """The fitted cells of a forecast design: the checkpoints up to ``fraction`` of the last."""
    return observed.checkpoint <= fraction * observed.checkpoint.max()


def _held_out_rmse(predicted, truth, fitted) -> float:
    held_out = ~fitted.broadcast_like(truth)
    return float(np.sqrt(((predicted - truth) ** 2).where(held_out).mean()))


def test_the_trend_recovers_a_simulated_law_free_process():
    observed, weight = _law_free_runs()
    fitted = _forecast(observed, 0.4)  # 13 of 16 checkpoints; the last 3 forecast
    found = lawfree.law_free_predictions(observed, fitted, seed=1, draws=100)
    predicted = found.expected_weight.mean(("chain", "draw"))
    trend = _held_out_rmse(predicted.sel(reference="law_free_trend"), weight, fitted)
    level = _held_out_rmse(predicted.sel(reference="law_free_level"), weight, fitted)
    # the forecast of the noise-free weight is near the noise (0.03) and the drift (0.02);
    # a level, which cannot follow the runs' slopes, misses it by 3 times more
    assert trend == pytest.approx(0.060, abs=0.005)
    assert level == pytest.approx(0.171, abs=0.01)
    assert found.attrs["seconds"] > 0


def test_the_law_beats_the_law_free_reference_on_the_laws_own_data():
    behaviour = simulated_behaviour(num_checkpoints=16, sigma=0.05, seed=2)
    observed = behaviour.relative_distance.transpose("num_tasks", "checkpoint", "split")
    fitted = _forecast(observed, 0.05)  # 10 of 16 checkpoints: the law's switches come later
    loss = behaviour.strategy_loss.transpose("num_tasks", "strategy").values
    complexity = behaviour.strategy_complexity.transpose("num_tasks", "strategy").values
    steps = observed.checkpoint.values[None, :]
    law = rational_weight(steps, loss[:, None], complexity[:, None], **TRUTH)[..., 0]
    law = xr.DataArray(law, dims=("num_tasks", "checkpoint")).broadcast_like(observed)
    found = lawfree.law_free_predictions(observed, fitted, seed=1, draws=100)
    skill = baselines.predictive_skill(observed, law, fitted, ~fitted, references=found)
    # the law predicts the held-out cells to within their noise; neither reference can
    np.testing.assert_allclose(skill.law_free_skill.values, [0.874, 0.860], atol=0.02)
    assert set(skill.best_law_free.values) <= set(baselines.LAW_FREE)
    assert np.isfinite(skill.crps.sel(predictor=list(baselines.LAW_FREE))).all()


def test_a_run_without_fitted_cells_takes_its_neighbours_in_log_num_tasks():
    # two draws, one configuration, D = 2, 4, 8, 16 with D = 4 and D = 16 unfitted
    loc, spread = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    levels = np.array([[[1.0, 9.0, 3.0, 9.0]], [[-2.0, 9.0, 0.0, 9.0]]])  # (draw, C, D)
    latent = {"level_loc": loc, "level_scale": spread}
    latent["level_decentred"] = (levels - loc[:, None, None]) / spread[:, None, None]
    latent |= {k.replace("level", "slope"): v for k, v in latent.items()}
    fitted = np.array([[True, False, True, False]])
    got = lawfree._unfitted_runs_from_neighbours(latent, fitted, np.log([2, 4, 8, 16]))
    for name in ("level", "slope"):
        value = loc[:, None, None] + spread[:, None, None] * got[f"{name}_decentred"]
        # halfway in log D between D = 2 and D = 8; D = 16 past the end: D = 8's
        np.testing.assert_allclose(value[:, 0], [[1.0, 2.0, 3.0, 3.0], [-2.0, -1.0, 0.0, 0.0]])

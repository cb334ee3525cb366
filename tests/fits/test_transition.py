"""Tests for fits/transition.py: first crossings against a brute-force loop, the transition
step of a known path recovered, the line baseline's closed form, and a forecast from a MAP
fit of runs simulated from the law."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits.transition import first_crossing, transition_forecast

STEPS = np.unique(np.geomspace(10, 4000, 40).round()).astype(np.int64)
NUM_TASKS = [4, 16, 64]
TRUE_STEP = {4: 300.0, 16: 900.0, 64: 2500.0}  # where each run's weight crosses 0.5
WIDTH = 0.4  # of the logistic in log N


def _brute_force(path, log_steps, level, start):
    """The first crossing by walking the checkpoints one by one."""
    side = np.sign(path[start] - level)
    for k in range(start + 1, len(path)):
        if side != 0 and np.sign(path[k] - level) != side:
            w0, w1 = path[k - 1], path[k]
            fraction = 1.0 if w1 == w0 else min(max((level - w0) / (w1 - w0), 0.0), 1.0)
            return log_steps[k - 1] + fraction * (log_steps[k] - log_steps[k - 1])
    return np.inf


def test_first_crossing_matches_a_checkpoint_by_checkpoint_walk():
    rng = np.random.default_rng(3)
    paths = np.cumsum(rng.normal(0, 0.1, (200, 25)), axis=-1) + 0.5
    log_steps = np.log(np.geomspace(10, 1000, 25))
    level = rng.uniform(0.3, 0.7, 200)
    start = rng.integers(0, 10, 200)
    found = first_crossing(paths, log_steps, level, start)
    expected = [
        _brute_force(p, log_steps, lv, s) for p, lv, s in zip(paths, level, start, strict=True)
    ]
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)
    assert np.isinf(found).any() and np.isfinite(found).any()


def _logistic(steps, crossing):
    """Weight on memorizing rising through 0.5 at ``crossing``, logistic in log N."""
    return 1 / (1 + np.exp(-(np.log(steps) - np.log(crossing)) / WIDTH))


def _forecast_fit(paths, fitted_until, jitter=0.0, draws=100, design="forecast:0.3", exact=False):
    """A fit whose observed weight is ``paths`` (num_tasks, checkpoint) in two splits, fitted
    up to step ``fitted_until``, with draws of the mean path around the logistic truth (or,
    ``exact``, equal to ``paths``)."""
    rng = np.random.default_rng(0)
    observed = np.stack([paths, paths], axis=-1)  # (D, N, S)
    dims = ("num_tasks", "checkpoint", "split")
    coords = {"num_tasks": NUM_TASKS, "checkpoint": STEPS, "split": ["id", "ood"]}
    shift = jitter * rng.standard_normal((1, draws, len(NUM_TASKS), 1, 1))
    log_steps = np.log(STEPS)[None, None, None, :, None]
    crossing = np.log([TRUE_STEP[d] for d in NUM_TASKS])[None, None, :, None, None]
    mean_paths = 1 / (1 + np.exp(-(log_steps - crossing - shift) / WIDTH))
    mean_paths = np.repeat(mean_paths, 2, axis=-1)  # (chain, draw, D, N, S)
    if exact:
        mean_paths = np.broadcast_to(observed, (1, draws, *observed.shape))
    fitted = np.broadcast_to((STEPS <= fitted_until)[None, :, None], observed.shape)
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset(
                {"expected_weight": (("chain", "draw", *dims), mean_paths)}, coords=coords
            ),
            "observed_data": xr.Dataset({"observed_weight": (dims, observed)}, coords=coords),
            "constant_data": xr.Dataset({"fit_mask": (dims, fitted)}, coords=coords),
        }
    )
    tree.attrs = {"held_out_design": design}
    return tree


def test_the_transition_step_of_a_known_path_is_recovered_with_its_interval():
    paths = np.stack([_logistic(STEPS, TRUE_STEP[d]) for d in NUM_TASKS])
    # each draw's crossing is off the truth by a factor exp(0.2 z)
    found = transition_forecast(_forecast_fit(paths, fitted_until=200, jitter=0.2), level=0.5)
    truth = xr.DataArray([TRUE_STEP[d] for d in NUM_TASKS], coords={"num_tasks": NUM_TASKS})
    # linear in log N between checkpoints 16% apart: the logistic's crossing to 1e-3 in log
    np.testing.assert_allclose(np.log(found.observed_step / truth), 0, atol=1e-3)
    np.testing.assert_allclose(np.log(found.predicted_median / truth), 0, atol=0.06)
    # the 90% interval of exp(0.2 z): log width 2 x 1.645 x 0.2
    width = np.log(found.predicted_high / found.predicted_low)
    np.testing.assert_allclose(width, 2 * 1.645 * 0.2, rtol=0.2)
    assert bool(found.scored.all()) and bool(found.covered.all())
    assert found.attrs["num_scored"] == 6 and found.attrs["coverage"] == 1.0
    assert found.attrs["median_abs_log_error"] < 0.06
    assert float(found.no_crossing.max()) == 0.0


def test_a_crossing_seen_before_the_origin_is_not_scored_and_a_flat_run_has_no_level():
    paths = np.stack([_logistic(STEPS, TRUE_STEP[d]) for d in NUM_TASKS])
    paths[2] = 0.3  # flat: the predicted last weight is the first
    found = transition_forecast(_forecast_fit(paths, fitted_until=700, exact=True))
    # D = 4 crossed at step 300, before the origin (the last checkpoint up to 700): seen,
    # not forecast; D = 16 crosses at 900, after it; D = 64 has nothing to cross
    assert float(found.forecast_origin.max()) == STEPS[STEPS <= 700].max()
    assert found.scored.sel(split="id").values.tolist() == [False, True, False]
    assert np.isinf(found.predicted_median.sel(num_tasks=64)).all()
    assert found.attrs["num_scored"] == 2 and found.attrs["coverage"] == 1.0
    assert found.attrs["median_abs_log_error"] == 0.0  # the draws are the observed path
    late = transition_forecast(_forecast_fit(paths, fitted_until=1100, exact=True))
    assert late.scored.sel(num_tasks=16).values.tolist() == [False, False]  # 883 was seen
    assert late.attrs["num_scored"] == 0 and np.isnan(late.attrs["coverage"])


def test_the_line_baseline_extrapolates_the_fitted_window_in_log_n():
    # weight = 0.1 + 0.1 log(N / 10) up to step 200, then flat: the line reaches the
    # halfway level between 0.1 and the predicted last weight in closed form
    log_n = np.log(STEPS / 10.0)
    path = np.where(STEPS <= 200, 0.1 + 0.1 * log_n, 0.1 + 0.1 * np.log(20.0))
    paths = np.stack([path, path, path])
    found = transition_forecast(_forecast_fit(paths, fitted_until=200), level=0.45)
    expected = 10.0 * np.exp((0.45 - 0.1) / 0.1)  # 331 steps
    np.testing.assert_allclose(found.baseline_step, expected, rtol=1e-9)
    falling = transition_forecast(_forecast_fit(1 - paths, fitted_until=200), level=0.55)
    np.testing.assert_allclose(falling.baseline_step, expected, rtol=1e-9)
    away = transition_forecast(_forecast_fit(paths, fitted_until=200), level=0.05)
    assert np.isinf(away.baseline_step).all()  # the line heads away from the level


def test_only_a_forecast_fit_and_a_level_inside_zero_one():
    paths = np.stack([_logistic(STEPS, TRUE_STEP[d]) for d in NUM_TASKS])
    with pytest.raises(RiclError, match="needs a fit with --held-out forecast:F; .* num-tasks"):
        transition_forecast(_forecast_fit(paths, 200, design="num-tasks"))
    with pytest.raises(RiclError, match="--transition-level must lie strictly between 0 and 1"):
        transition_forecast(_forecast_fit(paths, 200), level=1.0)


@pytest.mark.slow
def test_a_map_forecast_of_runs_simulated_from_the_law_beats_the_line(synthetic_runs):
    """Runs simulated from the law (tests/fits/conftest.py): forecast from their first 30%
    of training, the transition steps land within a factor 1.5 and inside the intervals."""
    from rational_icl.fits.behaviour import load_behaviour
    from rational_icl.fits.inference import fit
    from rational_icl.fits.inputs import FitSettings

    behaviour = load_behaviour(synthetic_runs.folder)
    settings = FitSettings(
        method="map", chains=2, draws=200, seed=0, held_out="forecast:0.3", law_free=False
    )
    found = transition_forecast(fit(behaviour, settings))
    # D = 32 crosses halfway in both splits after the origin (step 1198), the rest before it
    # or not at all
    assert found.attrs["num_scored"] >= 2 and bool(found.scored.sel(num_tasks=32).all())
    assert found.attrs["median_abs_log_error"] <= np.log(1.5)
    assert found.attrs["median_abs_log_error"] < found.attrs["baseline_median_abs_log_error"]
    assert found.attrs["coverage"] >= 0.8

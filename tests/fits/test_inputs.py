"""FitSettings, held-out and early cells, the authors' threshold, the context loss."""

import numpy as np
import pytest
import xarray as xr

from rational_icl import vocabulary
from rational_icl.errors import RiclError
from rational_icl.fits import inference, inputs
from tests.fits.simulated import PAPER_FIT, simulated_behaviour


def test_early_checkpoints_are_dropped():
    distance = xr.DataArray(
        [[5.0, 4.0, 1.5, 1.0, 1.2], [1.0, 1.0, 1.0, 1.0, 1.0]],
        dims=("num_tasks", "checkpoint"),
        coords={"num_tasks": [2, 4], "checkpoint": [10, 20, 30, 40, 50]},
    )
    dropped = inputs.early_cells(distance, within=0.2)
    # range 1..5: within 0.2 * 4 = 0.8 of the minimum from step 30 on
    np.testing.assert_array_equal(dropped.sel(num_tasks=2), [True, True, False, False, False])
    assert not dropped.sel(num_tasks=4).any()


@pytest.mark.parametrize("design", ["authors", "forecast:0.3", "num-tasks", "seed:2"])
def test_no_held_out_cell_decides_which_cells_are_fitted(design):
    """The early-checkpoint rule read the held-out checkpoints' interpolation distance
    (12 of tiny-categorical's 420 fitted cells under forecast:0.3): with the held-out cells'
    distances and weights replaced by anything, the fitted cells stay the same."""
    rng = np.random.default_rng(0)
    steps = np.unique(np.geomspace(20, 4000, 25).round()).astype(np.int64)
    shape = (2, 4, steps.size, 2)  # (seed, num_tasks, checkpoint, split)
    dims = ("seed", "num_tasks", "checkpoint", "split")
    decay = np.exp(-np.arange(steps.size) / 6.0)  # far from any mixture early on
    behaviour = xr.Dataset(
        {
            "relative_distance": (dims, rng.uniform(-1, 1, shape)),
            "interpolation_distance": (dims, decay[:, None] + 0.1 * rng.uniform(size=shape)),
            "strategy_loss": (("strategy", "num_tasks"), [[0.1, 0.12, 0.15, 0.18], [0.2] * 4]),
            "strategy_complexity": (("strategy", "num_tasks"), [[2e3, 3e3, 5e3, 9e3], [1e3] * 4]),
        },
        coords={
            "seed": [1, 2],
            "num_tasks": [2, 8, 32, 128],
            "checkpoint": steps,
            "split": ["id", "ood"],
            "strategy": ["memorizing", "generalizing"],
        },
        attrs={"setting": "categorical-sequence", "max_steps": 4000},
    )
    settings = inputs.FitSettings(model="paper", held_out=design, drop_early=True, method="map")
    before = inputs.model_inputs(behaviour, settings)
    held_out = before.held_out.broadcast_like(behaviour.relative_distance)
    assert held_out.any() and (~held_out).any()
    changed = behaviour.copy(deep=True)
    for name, low, high in [("relative_distance", -1, 1), ("interpolation_distance", 0, 50)]:
        noise = xr.full_like(behaviour[name], 0.0) + rng.uniform(low, high, shape)
        changed[name] = behaviour[name].where(~held_out, noise)
    after = inputs.model_inputs(changed, settings)
    assert int(before.dropped.sum()) > 0  # the rule drops early cells here
    xr.testing.assert_equal(after.fit_mask, before.fit_mask)
    fitted = before.fit_mask
    xr.testing.assert_equal(after.dropped.where(fitted), before.dropped.where(fitted))


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
    kept = inputs.authors_kept(distance, within=0.2)
    assert kept.dims == ("num_tasks", "checkpoint")
    np.testing.assert_array_equal(kept.values, [[False] * 4 + [True]] * 2)
    kept = inputs.authors_kept(distance, within=0.5)  # first close: 20 and 30
    np.testing.assert_array_equal(kept.checkpoint.where(kept).min(), 30)


def test_settings_are_validated():
    with pytest.raises(RiclError, match="ablation must be one of"):
        inputs.FitSettings(ablation="half")
    with pytest.raises(RiclError, match="need --observation outputs"):
        inputs.FitSettings(strategies=("memorizing", "generalizing", "constant"))
    with pytest.raises(
        RiclError,
        match="model must be one of paper, anchored-offsets, anchored-offsets-drift, "
        "anchored-smooth-offsets, anchored-smooth-offsets-drift; got .best.",
    ):
        inputs.FitSettings(model="best")
    for removed in vocabulary.REMOVED_MODELS:
        with pytest.raises(RiclError, match=f"model '{removed}' was removed; the default anch"):
            inputs.FitSettings(model=removed)
    with pytest.raises(RiclError, match="'offsets' was removed; the default anchored-offsets "):
        inputs.FitSettings(model="offsets", observation="outputs")
    with pytest.raises(RiclError, match="unit-gamma ablation fixes gamma, which model 'anch"):
        inputs.FitSettings(model="anchored-offsets", ablation="unit-gamma")
    with pytest.raises(RiclError, match="drift along training, which the outputs observation"):
        inputs.FitSettings(model="anchored-offsets-drift", observation="outputs")
    with pytest.raises(RiclError, match="needs several configurations"):
        inference.fit(
            simulated_behaviour(num_checkpoints=5), inputs.FitSettings(**PAPER_FIT, pooling="none")
        )


@pytest.mark.parametrize(
    "strategies, observation",
    [
        (("contextual", "generalizing"), "relative-distance"),
        (("memorizing", "generalizing", "contextual"), "outputs"),
        (("contextual", "generalizing", "memorizing", "constant"), "outputs"),
    ],
)
def test_strategy_sets_with_the_contextual_memorizer_are_accepted(strategies, observation):
    settings = inputs.FitSettings(**PAPER_FIT, strategies=strategies, observation=observation)
    assert settings.strategies == strategies


@pytest.mark.parametrize(
    "strategies, message",
    [
        (("generalizing", "memorizing"), "strategies must be memorizing,generalizing or"),
        (("memorizing", "generalizing", "memorizing"), "strategies must be"),
        (("memorizing", "generalizing", "bogus"), "got 'memorizing,generalizing,bogus'"),
        (("memorizing", "generalizing", "contextual"), "need --observation outputs"),
    ],
)
def test_bad_strategy_sets_are_refused_in_one_line(strategies, message):
    with pytest.raises(RiclError, match=message) as error:
        inputs.FitSettings(**PAPER_FIT, strategies=strategies)
    assert "\n" not in str(error.value)


def test_the_contextual_memorizer_is_observed_through_its_barycentric_weight():
    behaviour = simulated_behaviour(num_checkpoints=5)
    behaviour["barycentric_weight"] = behaviour.relative_distance
    behaviour["contextual_weight"] = 1 - behaviour.relative_distance
    contextual = inputs.FitSettings(**PAPER_FIT, strategies=("contextual", "generalizing"))
    assert inputs.measured_variable(behaviour, contextual) == ("barycentric", "contextual_weight")
    assert inputs.measured_variable(behaviour, inputs.FitSettings(**PAPER_FIT)) == (
        "barycentric",
        "barycentric_weight",
    )
    with pytest.raises(RiclError, match="measured barycentrically only; got --measure relative"):
        inputs.measured_variable(
            behaviour,
            inputs.FitSettings(
                **PAPER_FIT, strategies=contextual.strategies, measure="relative-distance"
            ),
        )


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
    got = inputs.context_loss(runs).values  # (strategy, split, sequence, position)
    per_step = (prediction[..., 0] - target) ** 2 / (2 * 4 / 256)
    for t in range(5):
        expected = per_step[..., :t].mean(-1) if t else 0.0
        np.testing.assert_allclose(got[..., t], expected, rtol=1e-12)


def _probability_runs(num_positions: int, attrs: dict) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    prediction = rng.dirichlet(np.ones(3), size=(2, 1, 4, num_positions))  # (Q, S, B, P, O)
    target = rng.integers(3, size=(1, 4, num_positions))
    runs = xr.Dataset(
        {
            "strategy_prediction": (
                ("strategy", "split", "sequence", "position", "outcome"),
                prediction,
            ),
            "target": (("split", "sequence", "position"), target),
        },
        attrs=attrs,
    )
    return runs, prediction, target


def test_context_loss_reads_the_file_facts_not_the_setting_name():
    # a setting no fits code names, whose files state that they predict probabilities
    facts = dict(
        prediction_kind="probabilities",
        distance_kind="kl",
        loss_kind="cross-entropy",
        alternative_generalizer="tempered",
    )
    runs, prediction, target = _probability_runs(6, {"setting": "coin", **facts})
    got = inputs.context_loss(runs).values  # (strategy, split, sequence, position)
    chosen = np.take_along_axis(prediction, target[None, ..., None], axis=-1)[..., 0]
    per_step = -np.log(chosen)  # (Q, S, B, P), brute force
    for t in range(6):
        expected = per_step[..., :t].mean(-1) if t else 0.0
        np.testing.assert_allclose(got[..., t], expected, rtol=1e-12)


def test_context_loss_needs_a_context_of_predictions():
    runs, _, _ = _probability_runs(1, {"setting": "classification"})
    with pytest.raises(RiclError, match="need a context of predictions.*'classification'"):
        inputs.context_loss(runs)


def test_the_smooth_models_get_the_num_tasks_values_from_their_form(monkeypatch):
    """The num_tasks values reach the model where the form's offsets follow them, whatever
    the model's name, and only there."""
    behaviour = simulated_behaviour(num_checkpoints=8)
    for model in vocabulary.MODELS:
        settings = inputs.FitSettings(model=model, method="map", drop_early=False)
        kwargs = inputs.model_inputs(behaviour, settings).kwargs
        assert ("num_tasks" in kwargs) == vocabulary.form_of(model).smooth, model
    form = vocabulary.ModelForm(offsets=True, smooth=True)
    monkeypatch.setitem(vocabulary.MODEL_FAMILY, "plain-name", form)
    settings = inputs.FitSettings(model="plain-name", method="map", drop_early=False)
    got = inputs.model_inputs(behaviour, settings).kwargs["num_tasks"]
    np.testing.assert_array_equal(got, [2.0**k for k in range(1, 12)])
    assert got.dtype == np.float64

"""What every setting provides: the registry, the strategy dispatch, and properties every
setting's strategies share (float64 and float32, at scale)."""

import math

import pytest
import torch

from rational_icl.data import (
    SETTINGS,
    STRATEGIES,
    CategoricalSequence,
    Classification,
    LinearRegression,
    generator,
    load_specs,
    make_setting,
    register,
    setting_class,
)
from tests.data.settings import cases


def test_the_package_registers_a_setting_per_module_in_order():
    import pkgutil
    import sys

    import rational_icl.data.settings as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert all(f"{package.__name__}.{name}" in sys.modules for name in modules)
    assert list(SETTINGS) == ["categorical-sequence", "linear-regression", "classification"]
    assert {cls.__module__.rsplit(".", 1)[1] for cls in SETTINGS.values()} == modules - {
        "base",
        "closed_forms",
    }


def test_registry_refuses_a_second_setting_of_a_name_and_names_the_known_ones(coin_setting):
    assert setting_class("coin") is coin_setting
    with pytest.raises(ValueError, match="'coin' is registered twice"):
        register(type("Coin", (coin_setting,), {}))
    with pytest.raises(ValueError, match="strategy_sources must name"):
        register(type("Die", (coin_setting,), {"name": "die", "strategy_sources": {}}))
    # a setting's own strategies come after the shared three
    extra = {"name": "die", "strategies": ("memorizing", "constant")}
    with pytest.raises(ValueError, match="strategies must start with"):
        register(type("Die", (coin_setting,), extra))
    assert "die" not in SETTINGS
    with pytest.raises(ValueError, match="'poetry' is unknown; allowed: categorical-sequence, "):
        setting_class("poetry")


def test_make_setting_from_presets():
    names = [make_setting(spec.expand()[0]).name for spec in load_specs("tiny")]
    assert names == ["categorical-sequence", "linear-regression", "classification"]
    regression = make_setting(load_specs("tiny-regression")[0].expand()[0])
    assert regression.noise_variance == pytest.approx(4 / 256)
    assert math.isclose(
        make_setting(load_specs("tiny-classification")[0]).within_class_variance, 0.5
    )


# ---------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("make", [cases.categorical, cases.regression, cases.classification])
def test_memorizing_with_one_task_returns_that_task(make):
    setting, tasks, batch = make(3, num_tasks=1)
    prediction = setting.strategy_prediction(batch, tasks, "memorizing")
    if setting.name == "categorical-sequence":
        expected = tasks.tasks[0].expand_as(prediction)
    elif setting.name == "linear-regression":
        expected = (batch.x @ tasks.tasks[0])[..., None]
    else:
        expected = torch.nn.functional.one_hot(tasks.labels[[0]], 2).double().expand_as(prediction)
    assert torch.allclose(prediction, expected, atol=1e-12)


@pytest.mark.parametrize("make", [cases.categorical, cases.regression])
def test_generalizing_at_position_zero_equals_constant(make):
    setting, tasks, batch = make(4)
    prediction = setting.strategy_predictions(batch, tasks)  # (Q, B, P, O)
    generalizing, constant = prediction[1, :, 0], prediction[2, :, 0]
    assert torch.allclose(generalizing, constant, atol=1e-12)


def test_predictions_are_distributions():
    for make in (cases.categorical, cases.classification):
        setting, tasks, batch = make(5)
        prediction = setting.strategy_predictions(batch, tasks)
        assert torch.allclose(prediction.sum(-1), torch.ones(()).double(), atol=1e-12)
        assert (prediction >= 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_at_large_num_tasks_and_context(dtype):
    num_tasks, length = 65536, 512
    gen = generator(7, "large")
    categorical = CategoricalSequence(num_dims=8, context_length=length)
    tasks = categorical.sample_tasks(num_tasks, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = categorical.sample_batch(tasks, 2, gen)
    assert torch.isfinite(categorical.strategy_predictions(batch, tasks)).all()

    regression = LinearRegression(num_dims=8, context_length=length, noise_variance=8 / 256)
    tasks = regression.sample_tasks(num_tasks, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = regression.sample_batch(tasks, 1, gen)
    batch.x, batch.y = batch.x.to(dtype), batch.y.to(dtype)
    assert torch.isfinite(regression.strategy_predictions(batch, tasks)).all()

    classification = Classification(num_dims=8, context_length=length, within_class_variance=0.5)
    tasks = classification.sample_tasks(num_tasks, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = classification.sample_batch(tasks, 4, gen)
    assert torch.isfinite(classification.strategy_predictions(batch, tasks)).all()


def test_unknown_strategy_is_rejected():
    setting, tasks, batch = cases.categorical(0)
    with pytest.raises(ValueError, match="allowed: memorizing"):
        setting.strategy_prediction(batch, tasks, "oracle")
    assert STRATEGIES == ("memorizing", "generalizing", "constant")

"""The strategy part of a run's predictions file: schema, and recomputation from the file."""

import numpy as np
import pytest
import torch

from rational_icl.data import (
    STRATEGIES,
    CategoricalBatch,
    ClassificationBatch,
    RegressionBatch,
    TaskSet,
    make_setting,
    spec_from_dict,
)
from rational_icl.errors import RiclError
from rational_icl.training import strategy_dataset
from rational_icl.training.loop import train

SMALL = {"num_tasks": [4], "evaluation": {"num_sequences": 5, "num_loss_sequences": 50}}


def _dataset(setting, **extra):
    spec = spec_from_dict(
        {"setting": setting, "num_dims": 4, "context_length": 6, **SMALL, **extra}
    )
    return spec, strategy_dataset(spec.runs()[0])


def test_categorical_file_has_the_schema_and_recomputes():
    spec, ds = _dataset("categorical-sequence")
    assert ds.strategy_prediction.dims == ("strategy", "split", "sequence", "position", "outcome")
    assert list(ds.strategy.values) == list(STRATEGIES) and list(ds.split.values) == ["id", "ood"]
    assert ds.sizes["position"] == 6 and ds.sizes["outcome"] == 4 and ds.sizes["task"] == 4
    for key in ("setting", "num_dims", "num_tasks", "context_length", "spec", "created", "seed"):
        assert key in ds.attrs
    assert not any(v is None or isinstance(v, dict) for v in ds.attrs.values())
    assert (ds.strategy_complexity.sel(strategy="memorizing") > 0).all()
    # Recompute every strategy prediction from the file alone.
    setting = make_setting(spec)
    tasks = TaskSet(torch.from_numpy(ds.training_tasks.values))
    tokens = torch.from_numpy(ds.tokens.sel(split="id").values)
    batch = CategoricalBatch(tokens, torch.zeros(5, dtype=torch.long))
    again = setting.strategy_predictions(batch, tasks).numpy()
    np.testing.assert_allclose(again, ds.strategy_prediction.sel(split="id").values, atol=1e-12)
    np.testing.assert_array_equal(ds.target.values, ds.tokens.values)
    # the strategies' evaluation loss: KL(true task || prediction), averaged over positions
    theta = ds.sequence_task.values[None, :, :, None, :]  # (1, split, S, 1, K)
    kl = (theta * (np.log(theta) - np.log(ds.strategy_prediction.values))).sum(-1)
    np.testing.assert_allclose(ds.strategy_evaluation_loss, kl.mean((-1, -2)), rtol=1e-5)


def test_regression_file_recomputes_and_targets_are_y():
    spec, ds = _dataset("linear-regression")
    assert list(ds.outcome.values) == ["y"] and ds.attrs["noise_variance"] == 4 / 256
    setting = make_setting(spec)
    tasks = TaskSet(torch.from_numpy(ds.training_tasks.values))
    x, y = (torch.from_numpy(ds[v].sel(split="ood").values) for v in ("x", "y"))
    again = setting.strategy_predictions(RegressionBatch(x, y, torch.zeros(5)), tasks)
    np.testing.assert_allclose(again.numpy(), ds.strategy_prediction.sel(split="ood"), atol=1e-12)
    # ood sequences come from fresh tasks, not the training tasks
    fresh = ds.sequence_task.sel(split="ood").values
    assert not np.isin(fresh, ds.training_tasks.values).any()
    squared = (ds.y.values[None] - ds.strategy_prediction.values[..., 0]) ** 2  # (Q, split, S, P)
    np.testing.assert_allclose(
        ds.strategy_evaluation_loss, squared.mean((-1, -2)) / (2 * 4 / 256), rtol=1e-5
    )


def test_classification_file_has_three_splits_and_recomputes():
    spec, ds = _dataset("classification")
    assert list(ds.split.values) == ["id", "ood", "iwl"] and ds.sizes["position"] == 1
    # classification adds its context-conditioned memorizing strategy after the shared three
    assert list(ds.strategy.values) == [*STRATEGIES, "contextual"]
    assert np.isfinite(ds.strategy_loss.values).all()
    assert ds.strategy_loss_se.sel(strategy="contextual") > 0
    assert (ds.strategy_complexity.sel(strategy="contextual") > 0).all()
    setting = make_setting(spec)
    tasks = TaskSet(
        torch.from_numpy(ds.training_tasks.values), torch.from_numpy(ds.training_task_labels.values)
    )
    split = ds.sel(split="iwl")
    batch = ClassificationBatch(
        torch.from_numpy(split.context_items.values),
        torch.from_numpy(split.context_labels.values),
        torch.from_numpy(split.query_item.values),
        torch.from_numpy(split.target.values[:, 0]),
        torch.zeros(5, 5, dtype=torch.long),
        torch.zeros(5, dtype=torch.long),
    )
    again = setting.strategy_predictions(batch, tasks)
    np.testing.assert_allclose(again.numpy(), split.strategy_prediction.values, atol=1e-12)
    label = ds.target.values[None, :, :, 0, None, None]  # (1, split, S, 1, 1)
    probability = np.take_along_axis(ds.strategy_prediction.values, label, axis=-1)
    np.testing.assert_allclose(
        ds.strategy_evaluation_loss, -np.log(probability).mean((-1, -2, -3)), rtol=1e-5
    )


def test_same_spec_same_file_contents():
    _, first = _dataset("categorical-sequence")
    _, second = _dataset("categorical-sequence")
    assert first.drop_attrs().identical(second.drop_attrs())


def test_the_files_of_your_own_model_name_and_describe_it_and_ricl_train_refuses_it(tmp_path):
    model = {"kind": "external", "name": "gpt-neox", "description": "GPT-NeoX, 32 wide"}
    spec, ds = _dataset("categorical-sequence", model=model)
    assert ds.attrs["run_name"] == "categorical-sequence_K4_T6_D4_ext-gpt-neox_seed1"
    assert ds.attrs["model_kind"] == "external" and ds.attrs["model_name"] == "gpt-neox"
    assert ds.attrs["model_description"] == "GPT-NeoX, 32 wide"
    _, ours = _dataset("categorical-sequence")
    assert ours.attrs["model_kind"] == "transformer" and "model_name" not in ours.attrs
    with pytest.raises(RiclError) as info:
        train(spec, tmp_path, progress=False)
    assert str(info.value) == (
        'spec model.kind = "external" (gpt-neox) is your own model: train it yourself and '
        "record it (docs/byo-model.md, ricl record); ricl train trains ours "
        '(kind = "transformer")'
    )
    assert not any(tmp_path.iterdir())

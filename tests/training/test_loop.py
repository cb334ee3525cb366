import numpy as np
import pytest
import torch
import xarray as xr

from rational_icl.data import Run, spec_from_dict
from rational_icl.errors import RiclError
from rational_icl.training import loop
from rational_icl.training.checkpoint import load_state, state_path
from rational_icl.training.ensemble import EnsembleTrainer
from rational_icl.training.loop import is_finished, run_path, train
from rational_icl.training.predictions import strategy_dataset


def _spec(setting="categorical-sequence", **training):
    return spec_from_dict(
        {
            "setting": setting,
            "num_dims": 4,
            "context_length": 6,
            "num_tasks": [2, 8],
            "model": {"num_layers": 1, "hidden_size": 8, "position_encoding": "learned"},
            "training": {
                "batch_size": 8,
                "learning_rate": 3e-3,
                "max_steps": 30,
                "num_checkpoints": 3,
                **training,
            },
            "evaluation": {"num_sequences": 4, "num_loss_sequences": 20},
        }
    )


def _open(path) -> xr.Dataset:
    with xr.open_dataset(path) as ds:
        return ds.load()


def _brute_force_loss(ds: xr.Dataset) -> np.ndarray:
    """Mean per-prediction loss of each checkpoint and split, from the file alone."""
    p = ds["transformer_prediction"].values.astype(np.float64)  # (C, split, S, P, O)
    setting = ds.attrs["setting"]
    if setting == "categorical-sequence":
        theta = ds["sequence_task"].values[None, :, :, None, :]  # (1, split, S, 1, K)
        loss = (theta * (np.log(theta) - np.log(p))).sum(-1)
    elif setting == "linear-regression":
        loss = (ds["y"].values - p[..., 0]) ** 2 / (2 * ds.attrs["noise_variance"])
    else:
        label = ds["target"].values[None, ..., None]  # (1, split, S, 1, 1)
        loss = -np.log(np.take_along_axis(p, label, axis=-1))[..., 0]
    return loss.mean(axis=(2, 3))


@pytest.mark.parametrize("setting", ["categorical-sequence", "linear-regression", "classification"])
def test_file_follows_the_schema_and_round_trips(setting, tmp_path):
    spec = _spec(setting).expand()[0]
    paths = train(spec, tmp_path, progress=False)
    assert [p.name for p in paths] == [f"{Run(spec, d).name}.nc" for d in (2, 8)]
    ds = _open(paths[1])
    prediction = ds["transformer_prediction"]
    assert prediction.dims == ("checkpoint", "split", "sequence", "position", "outcome")
    assert ds["transformer_loss"].dims == ("checkpoint", "split")
    assert ds["train_loss"].dims == ("step",)
    assert ds["checkpoint"].values.tolist() == [20, 25, 30]
    assert ds["checkpoint"].dtype == np.int64 and ds["step"].values[-1] == 30
    assert prediction.sizes["split"] == (3 if setting == "classification" else 2)
    if setting != "linear-regression":
        np.testing.assert_allclose(prediction.sum("outcome"), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ds["transformer_loss"].values, _brute_force_loss(ds), rtol=1e-6)
    # the strategy part is what `ricl data` writes, untouched
    expected = strategy_dataset(Run(spec, 8))
    for name in ("strategy_prediction", "target", "strategy_loss", "training_tasks"):
        xr.testing.assert_identical(ds[name], expected[name])
    assert all(value is not None and not isinstance(value, dict) for value in ds.attrs.values())
    assert is_finished(Run(spec, 8), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".state", *(p.name for p in paths)]
    )


def test_a_killed_run_resumes_to_the_same_file_bitwise(tmp_path, monkeypatch):
    spec = _spec().expand()[0]
    uninterrupted = train(spec, tmp_path / "a", progress=False)

    calls = []
    real_save_state = loop.save_state

    def save_then_die(state, path):
        calls.append(state["step"])
        if len(calls) == 2:  # killed after writing checkpoint 25's files, before its state
            raise KeyboardInterrupt
        real_save_state(state, path)

    monkeypatch.setattr(loop, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path / "b", progress=False)
    monkeypatch.setattr(loop, "save_state", real_save_state)
    killed = tmp_path / "b" / uninterrupted[0].name
    assert _open(killed)["checkpoint"].values.tolist() == [20, 25]
    assert load_state(state_path(tmp_path / "b", spec, [2, 8]))["step"] == 20

    resumed = train(spec, tmp_path / "b", progress=False)
    for a, b in zip(uninterrupted, resumed, strict=True):
        ds_a, ds_b = _open(a), _open(b)
        ds_a.attrs.pop("created"), ds_b.attrs.pop("created")
        xr.testing.assert_identical(ds_a, ds_b)


def test_finished_runs_are_skipped_unless_forced(tmp_path):
    spec = _spec(max_steps=20, num_checkpoints=1).expand()[0]
    paths = train(spec, tmp_path, progress=False)
    created = _open(paths[0]).attrs["created"]
    mtime = paths[0].stat().st_mtime_ns
    assert train(spec, tmp_path, progress=False) == []
    assert paths[0].stat().st_mtime_ns == mtime
    assert train(spec, tmp_path, force=True, progress=False) == paths
    assert _open(paths[0]).attrs["created"] >= created
    # a changed spec is not "finished": its files would be retrained, not silently kept
    longer = _spec(max_steps=21, num_checkpoints=1).expand()[0]
    assert not is_finished(Run(longer, 2), tmp_path)


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    spec = _spec().expand()[0]
    real_step = EnsembleTrainer.train_step

    def diverge_after_22(self):
        loss = real_step(self)
        return loss * float("nan") if self.step > 22 else loss

    monkeypatch.setattr(EnsembleTrainer, "train_step", diverge_after_22)
    with pytest.raises(RiclError, match=r"diverged at step 23: .*\(step 20\) is kept") as err:
        train(spec, tmp_path, progress=False)
    assert "\n" not in str(err.value)
    ds = _open(run_path(Run(spec, 2), tmp_path))
    assert ds["checkpoint"].values.tolist() == [20]
    assert np.isfinite(ds["transformer_prediction"]).all()
    assert load_state(state_path(tmp_path, spec, [2, 8]))["step"] == 20


def test_a_file_with_predictions_but_no_state_is_not_overwritten(tmp_path):
    spec = _spec().expand()[0]
    paths = train(spec, tmp_path, progress=False)
    state_path(tmp_path, spec, [2, 8]).unlink()
    longer = _spec(max_steps=40).expand()[0]
    with pytest.raises(RiclError, match="no checkpoint state"):
        train(longer, tmp_path, progress=False)
    assert _open(paths[0])["checkpoint"].values[-1] == 30


def test_bf16_precision_trains_with_finite_predictions(tmp_path):
    spec = _spec(precision="bf16", max_steps=20, num_checkpoints=1).expand()[0]
    (path, _) = train(spec, tmp_path, progress=False)
    assert torch.isfinite(torch.from_numpy(_open(path)["transformer_prediction"].values)).all()


def test_the_strategy_part_written_by_ricl_data_is_reused(tmp_path):
    spec = _spec(max_steps=20, num_checkpoints=1).expand()[0]
    run = Run(spec, 2)
    written = strategy_dataset(run)
    written.attrs["marker"] = "from ricl data"
    written.to_netcdf(run_path(run, tmp_path))
    train(spec, tmp_path, progress=False)
    ds = _open(run_path(run, tmp_path))
    assert ds.attrs["marker"] == "from ricl data"
    assert ds["checkpoint"].values.tolist() == [20]


def test_a_diverged_run_is_flagged_and_warned_about(tmp_path, caplog):
    # learning rate 10: final losses of hundreds of nats against the constant's 0.24-0.39
    caplog.set_level("WARNING", logger="rational_icl")  # the CLI prints them on stderr
    paths = train(_spec(learning_rate=10.0).expand()[0], tmp_path / "bad", progress=False)
    messages = [record.getMessage() for record in caplog.records]
    for path in paths:
        ds = _open(path)
        assert ds.attrs["diverged"] == 1
        final = float(ds["transformer_loss"].sel(split="id").isel(checkpoint=-1))
        assert final > 10 * float(ds["strategy_loss"].sel(strategy="constant"))
        (line,) = [message for message in messages if str(path) in message]
        assert line.startswith(f"warning: run {str(path)!r} diverged: its final transformer_loss")
        assert line.endswith("try a lower training.learning_rate")
    caplog.clear()
    paths = train(_spec().expand()[0], tmp_path / "good", progress=False)
    assert all(_open(path).attrs["diverged"] == 0 for path in paths)
    assert "diverged" not in caplog.text

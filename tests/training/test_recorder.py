import copy

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from rational_icl.data import Run, Tokens, spec_from_dict
from rational_icl.errors import RiclError
from rational_icl.io import write_netcdf
from rational_icl.modeling.model import EnsembleTransformer, TransformerConfig
from rational_icl.training.checkpoint import load_state, state_path
from rational_icl.training.loop import train
from rational_icl.training.predictions import strategy_dataset
from rational_icl.training.recorder import (
    Recorder,
    RecordHook,
    ensemble_member,
    fingerprint,
    read_out,
)
from rational_icl.training.tasks_dataset import TaskStream, read_out_loss


def _spec(setting="categorical-sequence"):
    (spec,) = spec_from_dict(
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
            },
            "evaluation": {"num_sequences": 4, "num_loss_sequences": 20},
        }
    ).expand()
    return spec


def _open(path) -> xr.Dataset:
    with xr.open_dataset(path) as ds:
        return ds.load()


def _strategy_file(spec, num_tasks, folder):
    path = folder / f"{Run(spec, num_tasks).name}.nc"
    folder.mkdir(exist_ok=True)
    write_netcdf(strategy_dataset(Run(spec, num_tasks)), path)
    return path


@pytest.mark.parametrize("setting", ["categorical-sequence", "linear-regression", "classification"])
def test_our_transformer_recorded_equals_what_training_recorded(setting, tmp_path):
    spec = _spec(setting)
    trained = train(spec, tmp_path / "ours", progress=False)
    state = load_state(state_path(tmp_path / "ours", spec, [2, 8]))
    assert state["step"] == 30
    model = EnsembleTransformer(TransformerConfig.from_spec(spec, num_members=2))
    model.load_state_dict(state["model"])
    for member, (num_tasks, path) in enumerate(zip([2, 8], trained, strict=True)):
        mine = _strategy_file(spec, num_tasks, tmp_path / "mine")
        recorder = Recorder(mine)
        assert recorder.checkpoint_steps == [20, 25, 30]
        assert recorder.record_checkpoint(ensemble_member(model, member), 30, train_loss=0.5)
        ours, recorded = _open(path), _open(mine)
        np.testing.assert_allclose(
            recorded["transformer_prediction"].values[0],
            ours["transformer_prediction"].sel(checkpoint=30).values,
            rtol=1e-6,
            atol=1e-7,
        )
        np.testing.assert_allclose(
            recorded["transformer_loss"].values[0],
            ours["transformer_loss"].sel(checkpoint=30).values,
            rtol=1e-6,
        )
        assert recorded.attrs["diverged"] == ours.attrs["diverged"]
        # the recorder adds the parameters' fingerprint a resumed recording is checked against
        assert set(ours.data_vars) == set(recorded.data_vars) - {"model_fingerprint"}
        assert recorded.attrs["recorded_model"] == ours.attrs["recorded_model"]
        assert recorded["train_loss"].values.tolist() == [0.5]


def test_recording_is_idempotent_resumable_and_refuses_an_earlier_step(tmp_path):
    spec = _spec()
    path = _strategy_file(spec, 2, tmp_path)

    def constant_logits(tokens: Tokens) -> torch.Tensor:
        return torch.zeros(*tokens.symbols.shape, 4)  # (S, L, O): uniform probabilities

    recorder = Recorder(path)
    recorder.log(10, 1.5)
    assert recorder.record_checkpoint(constant_logits, 20, train_loss=1.25)
    assert not recorder.record_checkpoint(constant_logits, 20)  # the same step: kept
    resumed = Recorder(path)  # a new process: continues after the file's last checkpoint
    assert resumed.last_checkpoint == 20
    resumed.log(15, 9.0)  # before the last logged step: a resumed loop repeating steps
    with pytest.raises(RiclError, match="already ends at step 20") as err:
        resumed.record_checkpoint(constant_logits, 10)
    assert "\n" not in str(err.value)
    assert resumed.record_checkpoint(constant_logits, 30)
    ds = _open(path)
    assert ds["checkpoint"].values.tolist() == [20, 30]
    assert ds["step"].values.tolist() == [10, 20]
    assert ds["train_loss"].values.tolist() == [1.5, 1.25]
    np.testing.assert_allclose(ds["transformer_prediction"].values, 0.25)
    assert ds.attrs["diverged"] in (0, 1)


def test_read_out_accepts_every_token_or_predictions_and_refuses_other_shapes():
    from rational_icl.data import LinearRegression

    layout = LinearRegression.token_layout(4, 6, "paired")  # L = 11 tokens, P = 6
    every_token = torch.arange(11.0).expand(3, 11)  # (S, L) without O
    assert read_out(every_token, layout, 3)[0, :, 0].tolist() == [0, 2, 4, 6, 8, 10]
    assert read_out(torch.ones(3, 6, 1), layout, 3).shape == (3, 6, 1)
    with pytest.raises(RiclError, match=r"read-out is \(3, 6, 1\)"):
        read_out(torch.ones(3, 5, 1), layout, 3)
    with pytest.raises(RiclError, match="not a tensor"):
        read_out({"logits": 1}, layout, 3)


def test_a_missing_or_foreign_file_is_one_line(tmp_path):
    with pytest.raises(RiclError, match="does not exist"):
        Recorder(tmp_path / "missing.nc")
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(foreign)
    with pytest.raises(RiclError, match="not a predictions file"):
        Recorder(foreign)


def test_the_hook_records_at_the_spec_checkpoints_with_mean_losses_and_resumes(tmp_path):
    spec = _spec()
    path = _strategy_file(spec, 8, tmp_path)
    model = EnsembleTransformer(TransformerConfig.from_spec(spec), seeds=[0])
    member = ensemble_member(model)
    hook = RecordHook(path)
    written = [step for step in range(1, 26) if hook(step, member, train_loss=float(step))]
    assert written == [20, 25]
    resumed = RecordHook(path)  # a loop resumed from its state at step 25 (untrained here)
    resumed.begin(member, 25)
    assert [step for step in range(26, 31) if resumed(step, member, 2.0)] == [30]
    ds = _open(path)
    assert ds["checkpoint"].values.tolist() == [20, 25, 30]
    assert ds["step"].values.tolist() == list(range(1, 31))  # log interval 1 at 30 steps
    assert ds["train_loss"].values[[0, 24, 29]].tolist() == [1.0, 25.0, 2.0]
    assert ds.attrs["diverged"] in (0, 1)


def test_start_over_leaves_the_strategy_part(tmp_path):
    spec = _spec()
    path = _strategy_file(spec, 2, tmp_path)
    recorder = Recorder(path)
    recorder.record_checkpoint(lambda tokens: torch.zeros(*tokens.symbols.shape, 4), 20, 1.0)
    recorder.start_over()
    assert Recorder(path).last_checkpoint is None
    assert "transformer_prediction" not in _open(path)


class _Bigram(nn.Module):
    """The smallest model of the recorder's contract: logits from the current symbol."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(5, 4)  # K + 1 symbols in, K = 4 outcomes out

    def forward(self, tokens):
        return self.embed(tokens.symbols)  # (S, L, O), every token predicted


def _plain_loop(run, path, seed, start, saved, stop=None):
    """A hand-written loop with the hook: it resumes from ``saved[start]`` (step 0: fresh),
    saves its state where the hook recorded, and is killed after step ``stop``."""
    model = _Bigram(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    if start:
        model.load_state_dict(saved[start][0])
        optimizer.load_state_dict(saved[start][1])
    hook = RecordHook(path)
    hook.begin(model, start)
    for step, batch in enumerate(TaskStream(run, start_step=start, batched=True), start=start + 1):
        outputs = model(Tokens(None, batch["symbols"]))
        loss = read_out_loss(outputs, batch["targets"], "probabilities")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if hook(step, model, loss.item()):
            saved[step] = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
        if step == stop:
            return  # killed


def test_a_killed_plain_loop_resumed_from_its_saved_state_equals_an_uninterrupted_one(tmp_path):
    spec = _spec()
    run = Run(spec, 8)
    whole = _strategy_file(spec, 8, tmp_path / "whole")
    _plain_loop(run, whole, seed=3, start=0, saved={})
    expected = _open(whole)
    assert expected["checkpoint"].values.tolist() == [20, 25, 30]
    # killed at step 27, resumed from the state saved at 25; killed at step 25 after the file
    # was written but before the state was saved, resumed from 20 (the file rewinds to 20)
    for kill, lost in [(27, None), (25, 25)]:
        path = _strategy_file(spec, 8, tmp_path / f"killed{kill}")
        saved = {}
        _plain_loop(run, path, seed=3, start=0, saved=saved, stop=kill)
        saved.pop(lost, None)
        _plain_loop(run, path, seed=3, start=max(saved), saved=saved)
        resumed = _open(path)
        for name in ("transformer_prediction", "transformer_loss", "train_loss", "step"):
            np.testing.assert_array_equal(resumed[name].values, expected[name].values)
        np.testing.assert_array_equal(
            resumed["model_fingerprint"].values, expected["model_fingerprint"].values
        )


def test_a_restart_that_does_not_continue_the_file_is_refused_in_one_line(tmp_path):
    spec = _spec()
    run = Run(spec, 8)
    path = _strategy_file(spec, 8, tmp_path)
    saved = {}
    _plain_loop(run, path, seed=3, start=0, saved=saved, stop=27)
    before = _open(path)
    name = repr(str(path))
    start_over = (
        "or drop its checkpoints with Recorder(path).start_over() (ricl record --start-over)"
    )
    with pytest.raises(RiclError) as info:  # a fresh model, as a plain rerun gives
        _plain_loop(run, path, seed=3, start=0, saved={})
    assert str(info.value) == (
        f"{name} already holds checkpoints up to step 25, but the model starts from step 0: "
        "resume the model from its own saved state at a recorded step "
        f"(trainer.train(resume_from_checkpoint=True)), {start_over}"
    )
    with pytest.raises(RiclError) as info:  # another model's state at step 25
        other = _Bigram(4)
        RecordHook(path).begin(other, 25)
    assert str(info.value) == (
        f"cannot continue {name} from step 25: the model's parameters are not those recorded "
        "at step 25 (they differ); resume the model from its own saved state at a recorded "
        f"step, {start_over}"
    )
    with pytest.raises(RiclError, match="from step 22: it holds no checkpoint there .its last: 25"):
        RecordHook(path).begin(_Bigram(3), 22)
    with pytest.raises(RiclError, match="call hook.begin.model, step. with the model restored"):
        RecordHook(path)(26, _Bigram(3), 1.0)  # no begin: not continued blindly
    assert _open(path).identical(before)  # nothing lost
    model = _Bigram(3)
    model.load_state_dict(saved[25][0])
    assert fingerprint(model) == int(before["model_fingerprint"].values[-1])


def test_one_file_holds_one_model(tmp_path):
    spec = _spec()
    path = _strategy_file(spec, 8, tmp_path)
    Recorder(path).record_checkpoint(_Bigram(3), 20)
    ours = ensemble_member(EnsembleTransformer(TransformerConfig.from_spec(spec), seeds=[0]))
    with pytest.raises(RiclError) as info:
        Recorder(path).record_checkpoint(ours, 25)
    assert str(info.value) == (
        f"cannot record EnsembleTransformer into {str(path)!r}: its checkpoints (up to step 20) "
        "are of _Bigram, and one run file holds one model; record into another folder, or drop "
        "its checkpoints with Recorder(path).start_over() (ricl record --start-over)"
    )
    assert _open(path).attrs["recorded_model"] == "_Bigram"

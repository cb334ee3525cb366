"""The HF integration: a tiny GPT-NeoX trained with the HF Trainer and recorded by the
callback gives files ``ricl fit`` reads like ours."""

import importlib.util

import numpy as np
import pytest
import torch
import xarray as xr

transformers = pytest.importorskip("transformers")

from rational_icl.cli.main import main  # noqa: E402
from rational_icl.data import Run, Tokens, spec_from_dict  # noqa: E402
from rational_icl.errors import RiclError  # noqa: E402
from rational_icl.io import write_netcdf  # noqa: E402
from rational_icl.training.convergence import convergence  # noqa: E402
from rational_icl.training.hf import (  # noqa: E402
    HFReadOut,
    RecordCallback,
    training_arguments,
)
from rational_icl.training.loop import run_path  # noqa: E402
from rational_icl.training.predictions import strategy_dataset  # noqa: E402
from rational_icl.training.tasks_dataset import TaskStream  # noqa: E402

pytestmark = pytest.mark.slow

NUM_TASKS = [2, 4, 16, 64, 256]


def _spec(setting):
    extra = {"num_dims": 4, "context_length": 8}
    if setting == "linear-regression":
        extra = {"num_dims": 2, "context_length": 6}
    (spec,) = spec_from_dict(
        {
            "setting": setting,
            **extra,
            "num_tasks": NUM_TASKS,
            "model": {"regression_tokens": "paired"} if setting == "linear-regression" else {},
            "training": {
                "batch_size": 16,
                "learning_rate": 3e-3,
                "warmup_steps": 10,
                "max_steps": 150,
                "num_checkpoints": 8,
            },
            "evaluation": {"num_sequences": 16, "num_loss_sequences": 200},
        }
    ).expand()
    return spec


def _backbone(run: Run):
    lay = TaskStream(run).read_out.layout
    config = transformers.GPTNeoXConfig(
        vocab_size=max(lay.symbols, lay.num_outcomes, 1),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=lay.sequence_length,
    )
    torch.manual_seed(run.num_tasks)
    if lay.features:  # features in, a read-out of the hidden states
        return transformers.GPTNeoXModel(config)
    return transformers.GPTNeoXForCausalLM(config)  # symbols in, the LM head's logits out


def _train_with_trainer(spec, runs_dir, tmp_path):
    paths = []
    for num_tasks in NUM_TASKS:
        run = Run(spec, num_tasks)
        path = run_path(run, runs_dir)
        write_netcdf(strategy_dataset(run), path)  # what `ricl data` writes
        model = HFReadOut(_backbone(run), run)
        trainer = transformers.Trainer(
            model=model,
            args=training_arguments(run, tmp_path / "hf", use_cpu=True),
            train_dataset=TaskStream(run),
            callbacks=[RecordCallback(path)],
        )
        trainer.train()
        paths.append(path)
    return paths


@pytest.mark.parametrize("setting", ["categorical-sequence", "linear-regression"])
def test_a_gpt_neox_trained_by_the_trainer_is_recorded_and_fitted(setting, tmp_path, capsys):
    torch.set_num_threads(1)
    spec = _spec(setting)
    runs = tmp_path / "runs"
    paths = _train_with_trainer(spec, runs, tmp_path)
    with xr.open_dataset(paths[-1]) as ds:
        ds = ds.load()
    assert ds["checkpoint"].values.tolist() == [20, 31, 45, 61, 79, 101, 124, 150]
    assert ds["transformer_prediction"].dims == (
        "checkpoint",
        "split",
        "sequence",
        "position",
        "outcome",
    )
    assert ds["transformer_prediction"].dtype == np.float32
    assert ds.attrs["diverged"] == 0
    assert np.isfinite(ds["train_loss"].values).all() and ds["step"].size == 150
    if setting == "categorical-sequence":
        sums = ds["transformer_prediction"].sum("outcome").values
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    loss = ds["transformer_loss"].sel(split="id").values
    assert loss[-1] < loss[0]  # it learned
    report = convergence(paths)
    assert np.isfinite(report["best_ratio"].values).all()
    code = main(
        [str(runs_arg) for runs_arg in ("fit", runs, "-o", tmp_path / "fit.nc")]
        + [
            "--method",
            "map",
            "--draws",
            "100",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "held out" in out


def test_the_read_out_takes_tokens_for_the_recorder_and_keywords_for_the_trainer():
    run = Run(_spec("categorical-sequence"), 4)
    model = HFReadOut(_backbone(run), run)
    example = next(iter(TaskStream(run, batched=True)))  # symbols (16, 8), targets (16, 8)
    outputs = model(Tokens(None, example["symbols"]))
    assert outputs.shape == (16, 8, 4)
    trained = model(symbols=example["symbols"], targets=example["targets"])
    torch.testing.assert_close(trained["outputs"], outputs)
    assert model.take_train_loss() == pytest.approx(trained["loss"].item())
    assert model.take_train_loss() is None


FACTORY = """
import transformers
from rational_icl.training.hf import HFReadOut


def build(run):
    config = transformers.GPTNeoXConfig(
        vocab_size=5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=8,
    )
    return HFReadOut(transformers.GPTNeoXForCausalLM(config), run)
"""


def _small_run() -> Run:
    """One categorical run of 30 steps, recorded at 20, 25 and 30."""
    (spec,) = spec_from_dict(
        {
            "setting": "categorical-sequence",
            "num_dims": 4,
            "context_length": 8,
            "num_tasks": [4],
            "training": {"batch_size": 8, "max_steps": 30, "num_checkpoints": 3},
            "evaluation": {"num_sequences": 8, "num_loss_sequences": 50},
        }
    ).expand()
    return Run(spec, 4)


def test_ricl_record_reads_the_trainers_saved_checkpoints_as_the_callback_recorded(
    tmp_path, capsys
):
    torch.set_num_threads(1)
    run = _small_run()
    spec = run.spec
    (tmp_path / "factory.py").write_text(FACTORY)
    folder = tmp_path / "callback"
    write_netcdf(strategy_dataset(run), run_path(run, folder))
    module_spec = importlib.util.spec_from_file_location("factory", tmp_path / "factory.py")
    factory = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(factory)
    torch.manual_seed(0)
    trainer = transformers.Trainer(
        model=factory.build(run),
        args=training_arguments(
            run,
            tmp_path / "ckpt" / run.name,
            use_cpu=True,
            save_strategy="steps",
            save_steps=5,
            save_only_model=True,
        ),
        train_dataset=TaskStream(run),
        callbacks=[RecordCallback(run_path(run, folder))],
    )
    trainer.train()
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(spec.to_toml())
    argv = ["record", spec_file, "-o", tmp_path / "saved", "--checkpoints", tmp_path / "ckpt"]
    code = main([str(a) for a in [*argv, "--factory", f"{tmp_path / 'factory.py'}:build"]])
    _, err = capsys.readouterr()
    assert code == 0, err
    with (
        xr.open_dataset(run_path(run, folder)) as ours,
        xr.open_dataset(run_path(run, tmp_path / "saved")) as saved,
    ):
        assert saved["checkpoint"].values.tolist() == [5, 10, 15, 20, 25, 30]
        assert ours["checkpoint"].values.tolist() == [20, 25, 30]
        np.testing.assert_allclose(
            saved["transformer_prediction"].sel(checkpoint=[20, 25, 30]).values,
            ours["transformer_prediction"].values,
            rtol=1e-5,
            atol=1e-7,
        )


def test_the_read_out_of_classification_embeds_features_and_labels():
    (spec,) = spec_from_dict(
        {"setting": "classification", "num_dims": 4, "context_length": 5, "num_tasks": [8]}
    ).expand()
    run = Run(spec, 8)
    model = HFReadOut(_backbone(run), run)  # a GPTNeoXModel: features in
    assert model.symbols_in is not None and model.read_out is not None
    example = next(iter(TaskStream(run, batched=True, num_steps=1)))
    outputs = model(Tokens(example["features"][:3], example["symbols"][:3]))
    assert outputs.shape == (3, 1, 2)  # one prediction, at the query, of 2 label logits
    assert model(**example)["loss"].item() == pytest.approx(np.log(2), abs=0.2)


class _Killed(Exception):
    pass


class _Kill(transformers.TrainerCallback):
    """Kills the training after step ``step``'s callbacks (before the Trainer saves)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Killed


def _trainer_run(run, path, output_dir, kill=None, resume=False):
    model = HFReadOut(_backbone(run), run)
    callbacks = [RecordCallback(path)] + ([_Kill(kill)] if kill else [])
    trainer = transformers.Trainer(
        model=model,
        args=training_arguments(run, output_dir, use_cpu=True),
        train_dataset=TaskStream(run),
        callbacks=callbacks,
    )
    try:
        trainer.train(resume_from_checkpoint=resume or None)
    except _Killed:
        pass


def test_a_killed_trainer_resumed_from_its_checkpoint_equals_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    run = _small_run()
    whole = run_path(run, tmp_path / "whole")
    write_netcdf(strategy_dataset(run), whole)
    _trainer_run(run, whole, tmp_path / "hf-whole")
    with xr.open_dataset(whole) as ds:
        expected = ds.load()
    assert expected["checkpoint"].values.tolist() == [20, 25, 30]
    assert expected.attrs["recorded_model"] == "HFReadOut(GPTNeoXForCausalLM)"
    # killed at step 27 (resumes from the state saved at 25), and at step 25 after the file
    # was written but before the Trainer saved (resumes from 20: the file rewinds to 20)
    for kill in (27, 25):
        path = run_path(run, tmp_path / f"killed{kill}")
        write_netcdf(strategy_dataset(run), path)
        _trainer_run(run, path, tmp_path / f"hf{kill}", kill=kill)
        with pytest.raises(RiclError) as info:  # a plain rerun: a fresh model at step 0
            _trainer_run(run, path, tmp_path / f"hf{kill}")
        assert str(info.value).startswith(
            f"{str(path)!r} already holds checkpoints up to step 25, but the model starts from "
            "step 0: resume the model from its own saved state at a recorded step "
            "(trainer.train(resume_from_checkpoint=True)), or drop its checkpoints with "
            "Recorder(path).start_over() (ricl record --start-over)"
        )
        _trainer_run(run, path, tmp_path / f"hf{kill}", resume=True)
        with xr.open_dataset(path) as resumed:
            for name in ("transformer_prediction", "transformer_loss", "train_loss", "step"):
                np.testing.assert_array_equal(resumed[name].values, expected[name].values)

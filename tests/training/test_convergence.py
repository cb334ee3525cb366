import numpy as np
import pytest
import xarray as xr

from rational_icl.data import spec_from_dict
from rational_icl.errors import RiclError
from rational_icl.io import write_netcdf
from rational_icl.training.convergence import (
    convergence,
    summary_line,
    unconverged,
    warning_line,
)
from rational_icl.training.loop import train

# Per num_tasks: L_M, L_G, and the transformer's id and ood loss at its last checkpoint.
_CASES = {
    2: (1.0, 2.0, 1.2, 2.5),  # id 1.2x the better (M): fine
    16: (1.5, 2.0, 2.5, 2.6),  # id 2.5 / max(1.5, 2.0) = 1.25x the worse: fine
    128: (1.9, 2.0, 2.1, 2.7),  # id 2.1 / 1.9 = 1.105x; ood 2.7 / 2.0 = 1.35x L_G: fails
}


def _write_run(path, num_tasks, l_m, l_g, loss_id, loss_ood):
    """A minimal predictions file: two checkpoints, the last one holding the given losses."""
    ds = xr.Dataset(
        {
            "transformer_loss": (
                ("checkpoint", "split"),
                np.array([[9.0, 9.0], [loss_id, loss_ood]]),
            ),
            "strategy_loss": (("strategy",), np.array([l_m, l_g, 5.0])),
        },
        coords={
            "checkpoint": np.array([10, 40], dtype=np.int64),
            "split": ["id", "ood"],
            "strategy": ["memorizing", "generalizing", "constant"],
        },
        attrs={"num_tasks": num_tasks},
    )
    write_netcdf(ds, path)
    return path


@pytest.fixture
def files(tmp_path):
    # written in an unsorted order: the report sorts by num_tasks
    return [_write_run(tmp_path / f"D{d}.nc", d, *_CASES[d]) for d in (128, 2, 16)]


def test_ratios_match_a_hand_computation(files):
    report = convergence(files)
    assert report["num_tasks"].values.tolist() == [2, 16, 128]
    assert report["last_checkpoint"].values.tolist() == [40, 40, 40]
    best = report["best_ratio"].sel(split="id").values
    np.testing.assert_allclose(best, [1.2 / 1.0, 2.5 / 1.5, 2.1 / 1.9], rtol=1e-12)
    np.testing.assert_allclose(
        report["generalizing_ratio"].sel(split="ood").values, [2.5 / 2, 2.6 / 2, 2.7 / 2]
    )
    np.testing.assert_allclose(
        report["worst_ratio"].sel(split="id").values, [1.2 / 2, 2.5 / 2, 2.1 / 2]
    )


def test_unconverged_applies_each_rule_to_its_num_tasks(files):
    report = convergence(files)
    # D=16 is 1.67x its better strategy but only 1.25x its worse: an intermediate D passes;
    # D=128 passes on id but its ood loss is 1.35x L_G
    assert unconverged(report) == [128]
    assert unconverged(report, tolerance=1.4) == []
    assert unconverged(report, tolerance=1.1) == [2, 16, 128]


def test_summary_and_warning_lines(files):
    report = convergence(files)
    line = summary_line(report, "demo")
    assert line.startswith("convergence demo (step 40): ")
    assert "D=2 1.20x, D=16 1.67x, D=128 1.11x" in line
    assert line.endswith("D=128 loss / G's on the split: id 1.05x, ood 1.35x")
    warning = warning_line(report, "demo")
    assert warning.startswith("WARNING: demo: the transformers for num_tasks 128 did not")
    assert warning_line(report, "demo", tolerance=1.4) is None


def test_a_missing_loss_fails_and_a_file_without_losses_is_refused(tmp_path, files):
    nan_run = _write_run(tmp_path / "D2.nc", 2, 1.0, 2.0, float("nan"), 2.0)
    assert unconverged(convergence([nan_run, *files[::2]])) == [2, 128]
    bare = tmp_path / "bare.nc"
    write_netcdf(xr.Dataset({"strategy_loss": ("strategy", [1.0])}, attrs={"num_tasks": 2}), bare)
    with pytest.raises(RiclError, match="has no transformer_loss"):
        convergence([bare])
    with pytest.raises(RiclError, match="cannot be read"):
        convergence([tmp_path / "missing.nc"])


def test_each_split_is_compared_with_g_on_its_own_sequences(tmp_path, files):
    # an iwl-like split where G itself loses 3.0 nats: a transformer at 3.3 is 1.1x G there,
    # though 1.65x the id L_G (2.0) that files without strategy_evaluation_loss fall back to
    path = _write_run(tmp_path / "D128.nc", 128, 1.9, 2.0, 2.1, 3.3)
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    evaluation_loss = [[1.8, 4.0], [2.2, 3.0], [5.0, 5.0]]  # (strategy, split)
    write_netcdf(ds.assign(strategy_evaluation_loss=(("strategy", "split"), evaluation_loss)), path)
    report = convergence([path, *files[1:]])
    ratio = report["generalizing_ratio"].sel(num_tasks=128).values
    np.testing.assert_allclose(ratio, [2.1 / 2.2, 3.3 / 3.0], rtol=1e-12)
    assert unconverged(report) == []
    fallback = _write_run(tmp_path / "old.nc", 128, 1.9, 2.0, 2.1, 3.3)
    assert unconverged(convergence([fallback, *files[1:]])) == [128]


def test_the_warning_fires_for_an_untrained_run(tmp_path):
    # two optimizer steps from a 0.02-std initialisation: the transformer still predicts
    # nearly the prior mean, far from both strategies at every num_tasks
    spec = spec_from_dict(
        {
            "setting": "linear-regression",
            "num_dims": 4,
            "context_length": 8,
            "num_tasks": [2, 8, 64],
            "model": {"num_layers": 1, "hidden_size": 8, "position_encoding": "learned"},
            "training": {"batch_size": 8, "max_steps": 2, "num_checkpoints": 1},
            "evaluation": {"num_sequences": 16, "num_loss_sequences": 200},
        }
    ).expand()[0]
    report = convergence(train(spec, tmp_path, progress=False))
    assert (report["best_ratio"].sel(split="id") > 2).all()
    assert unconverged(report) == [2, 8, 64]
    assert "num_tasks 2, 8, 64 did not reach" in warning_line(report, "untrained")

"""open_runs: combining run files lazily, and one-line errors naming the file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import config_dims, open_runs


def _random_run(make_run, num_tasks, *, num_checkpoints=3, positions=4, outcomes=3, seed=0, **kw):
    rng = np.random.default_rng([seed, num_tasks, positions, outcomes])
    shape = (2, 5, positions, outcomes)
    strategies = rng.dirichlet(np.ones(outcomes), size=(3, *shape[:-1]))
    transformer = rng.dirichlet(np.ones(outcomes), size=(num_checkpoints, *shape[:-1]))
    return make_run(num_tasks, transformer, strategies, **kw)


def _write(folder, ds, name):
    folder.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(folder / name)
    return folder / name


@pytest.fixture
def two_runs(tmp_path, make_run):
    """A valid folder of two runs (D = 2 and 8), plus non-run files that must be ignored."""
    for d in (8, 2):
        _write(tmp_path / "sweep", _random_run(make_run, d), f"run_D{d}.nc")
    _write(tmp_path / "sweep" / "fits", xr.Dataset({"alpha": ("draw", [0.5])}), "fit.nc")
    other = xr.Dataset({"x": ("t", [1.0, 2.0])})
    other.to_netcdf(tmp_path / "sweep" / "classic.nc", format="NETCDF3_CLASSIC")  # not HDF5
    return tmp_path / "sweep"


def test_open_runs_combines_along_num_tasks_lazily(two_runs, make_run):
    runs = open_runs(two_runs)
    assert runs["num_tasks"].values.tolist() == [2, 8]
    assert runs["transformer_prediction"].dims == (
        "num_tasks",
        "checkpoint",
        "split",
        "sequence",
        "position",
        "outcome",
    )
    assert runs["strategy_loss"].dims == ("num_tasks", "strategy")
    assert runs["transformer_prediction"].chunks is not None  # dask-backed, nothing loaded
    assert config_dims(runs) == ()
    assert "train_loss" not in runs and "step" not in runs.dims
    assert runs["source_file"].values[0].endswith("run_D2.nc")
    assert runs.attrs["setting"] == "categorical-sequence"
    assert runs.attrs["mlp_expansion_factor"] == 4.0  # not varying: stays an attribute
    assert "num_tasks" not in runs.attrs
    expected = _random_run(make_run, 2)["transformer_prediction"].values
    np.testing.assert_array_equal(runs["transformer_prediction"].sel(num_tasks=2).values, expected)


@pytest.mark.slow
def test_a_folder_can_be_opened_again_while_an_earlier_opening_is_alive(two_runs):
    # netCDF4-python segfaulted here (open, compute, drop a second opening, open again: a
    # known libnetcdf bug with two handles on one file); in a subprocess so a crash fails
    # this test rather than killing the test session
    code = f"""
from rational_icl.fits import load_behaviour, open_runs
folder = {str(two_runs)!r}
kept = open_runs(folder)
for _ in range(3):
    load_behaviour(folder)
    open_runs(folder).transformer_loss.compute()
    kept = [kept, open_runs(folder)]
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_open_runs_config_grid_pads_and_fills_missing_cells(tmp_path, make_run):
    folder = tmp_path / "grid"
    _write(folder, _random_run(make_run, 2, positions=4), "a.nc")
    _write(folder, _random_run(make_run, 8, positions=4), "b.nc")
    _write(folder, _random_run(make_run, 2, positions=6), "c.nc")  # no D = 8 at T = 6
    runs = open_runs(folder)
    assert config_dims(runs) == ("context_length",)
    assert runs["transformer_prediction"].dims[:2] == ("num_tasks", "context_length")
    assert runs.sizes["position"] == 6
    short = runs["transformer_prediction"].sel(num_tasks=2, context_length=4).values
    assert np.isnan(short[:, :, :, 4:]).all() and not np.isnan(short[:, :, :, :4]).any()
    assert np.isnan(runs["transformer_prediction"].sel(num_tasks=8, context_length=6).values).all()
    assert runs["source_file"].sel(num_tasks=8, context_length=6).item() == ""
    assert "context_length" not in runs.attrs


def _mutations():
    """(name, how to break the second file, words the message must contain)."""

    def drop(var):
        return lambda ds: ds.drop_vars(var)

    def with_nan(var):
        def mutate(ds):
            ds[var] = ds[var].copy(data=ds[var].values.astype(float))
            ds[var].values.flat[0] = np.nan
            return ds

        return mutate

    return [
        ("no transformer", drop("transformer_prediction"), "no transformer_prediction"),
        ("missing loss", drop("strategy_loss"), "missing variable(s) strategy_loss"),
        ("wrong dims", lambda ds: ds.rename_dims(position="pos"), "has dims"),
        ("nan prediction", with_nan("transformer_prediction"), "contains NaN"),
        ("nan loss", with_nan("strategy_loss"), "contains NaN"),
        ("one checkpoint", lambda ds: ds.isel(checkpoint=[0]), "single checkpoint"),
        ("setting", lambda ds: ds.assign_attrs(setting="classification"), "mixed settings"),
        (
            "checkpoints",
            lambda ds: ds.assign_coords(checkpoint=ds.checkpoint + 1),
            "checkpoint values differ",
        ),
        ("duplicate", lambda ds: ds.assign_attrs(num_tasks=2), "are the same run"),
        (
            "other hidden size",
            lambda ds: ds.assign_attrs(num_tasks=2, hidden_size=7),
            "they differ in hidden_size=7 vs",
        ),
        ("strategy", lambda ds: ds.isel(strategy=[0, 2]), "lacks generalizing"),
        ("attribute", lambda ds: ds.drop_attrs(deep=False), "missing global attribute"),
        ("unsorted", lambda ds: ds.isel(checkpoint=[1, 0, 2]), "not increasing"),
    ]


@pytest.mark.parametrize(
    ("mutate", "words"), [m[1:] for m in _mutations()], ids=[m[0] for m in _mutations()]
)
def test_open_runs_rejects_bad_file_naming_it(tmp_path, make_run, mutate, words):
    folder = tmp_path / "sweep"
    _write(folder, _random_run(make_run, 2), "good_D2.nc")
    bad = _random_run(make_run, 8)
    bad = bad.assign_attrs(setting="categorical-sequence")
    _write(folder, mutate(bad), "bad_D8.nc")
    with pytest.raises(RiclError) as info:
        open_runs(folder)
    message = str(info.value)
    assert "\n" not in message
    assert words in message
    assert "bad_D8.nc" in message


def test_training_seeds_stack_as_replicates(tmp_path, make_run):
    folder = tmp_path / "seeds"
    folder.mkdir()
    for seed in (1, 2):
        for d in (2, 8):
            run = _random_run(make_run, d).assign_attrs(seed=seed)
            _write(folder, run, f"run_D{d}_seed{seed}.nc")
    runs = open_runs(folder)
    assert "seed" in config_dims(runs) and runs.seed.values.tolist() == [1, 2]
    assert runs.transformer_prediction.dims[:2] == ("num_tasks", "seed")
    assert runs.source_file.sel(num_tasks=8, seed=2).item().endswith("run_D8_seed2.nc")


def test_open_runs_errors_for_folders(tmp_path, make_run):
    with pytest.raises(RiclError, match="does not exist"):
        open_runs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RiclError, match="no run files in .*empty"):
        open_runs(tmp_path / "empty")
    _write(tmp_path / "one", _random_run(make_run, 4), "only_D4.nc")
    with pytest.raises(RiclError, match=r"num_tasks=4 \(e\.g\. .*only_D4\.nc.*at least 2"):
        open_runs(tmp_path / "one")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "broken.nc").write_text("not netcdf")
    with pytest.raises(RiclError, match="broken.nc.*cannot be read"):
        open_runs(tmp_path / "junk")


def test_open_runs_can_skip_the_nan_scan(tmp_path, make_run):
    folder = tmp_path / "sweep"
    _write(folder, _random_run(make_run, 2), "a.nc")
    bad = _random_run(make_run, 8)
    bad["transformer_prediction"][0, 0, 0, 0, 0] = np.nan
    _write(folder, bad, "b.nc")
    runs = open_runs(folder, check_values=False)
    assert np.isnan(runs["transformer_prediction"].sel(num_tasks=8).values).sum() == 1

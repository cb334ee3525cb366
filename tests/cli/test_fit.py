"""``ricl fit`` and ``ricl compare``: fits written and ranked, one-line errors."""

import argparse
import re

import numpy as np
import pytest
import xarray as xr

from rational_icl.cli import fit as fit_command
from rational_icl.cli.main import main
from rational_icl.errors import RiclError
from rational_icl.fits import diagnostics, inputs, parameters
from rational_icl.fits.simulate import simulate_runs
from rational_icl.fits.tree import read_fit

NUM_TASKS = [2, 4, 8, 16, 32, 64, 128, 256]
# The cheapest fit, for the tests whose subject is a check or a warning, not the model: the
# default model's drift and its law-free reference are fitted and tested elsewhere.
CHEAP_FIT = ["--model", "paper", "--no-law-free"]


def _data_file(num_tasks: int, rng) -> xr.Dataset:
    """A small `ricl data`-like categorical file (random strategy predictions)."""
    strategy = rng.dirichlet(np.ones(4), size=(3, 2, 4, 8))  # (strategy, split, seq, pos, K)
    return xr.Dataset(
        {
            "strategy_prediction": (
                ("strategy", "split", "sequence", "position", "outcome"),
                strategy,
            ),
            "target": (("split", "sequence", "position"), rng.integers(4, size=(2, 4, 8))),
            "sequence_task": (("split", "sequence", "outcome"), rng.dirichlet(np.ones(4), (2, 4))),
            "strategy_loss": ("strategy", [0.2 - 0.15 * (2 / num_tasks) ** 0.8, 0.2, 0.5]),
            "strategy_complexity": ("strategy", [1500.0 + 256 * num_tasks, 1200.0, 600.0]),
        },
        coords={"strategy": ["memorizing", "generalizing", "constant"], "split": ["id", "ood"]},
        attrs={
            "setting": "categorical-sequence",
            "num_dims": 4,
            "num_tasks": num_tasks,
            "context_length": 8,
            "mlp_expansion_factor": 4.0,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "max_steps": 4000,
            "seed": 1,
        },
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for num_tasks in NUM_TASKS:
        _data_file(num_tasks, rng).to_netcdf(data / f"categorical-sequence_D{num_tasks}.nc")
    runs = tmp_path_factory.mktemp("runs")
    simulate_runs(data, runs, 0.5, 0.3, 3.0, checkpoints=20, noise=0.05, seed=1)
    return data, runs


def _ricl(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_choices_match_the_fits_module():
    assert fit_command.ABLATIONS == parameters.ABLATIONS
    assert fit_command.POOLINGS == ("auto", *parameters.POOLINGS)
    assert fit_command.OBSERVATIONS == inputs.OBSERVATIONS
    assert fit_command.METHODS == inputs.METHODS
    assert fit_command.MASS_MATRICES == inputs.MASS_MATRICES
    assert fit_command.MODELS == parameters.MODELS
    assert fit_command.DEFAULT_MODEL in parameters.MODELS
    assert fit_command.MEASURES == ("auto", *inputs.MEASURE_VARIABLES)  # the variables' names


@pytest.mark.slow
def test_fit_writes_a_fit_and_compare_ranks_fits(folders, tmp_path, capsys):
    _, runs = folders
    full, ablated = tmp_path / "full.nc", tmp_path / "unit-gamma.nc"
    # the paper's law, whose parameters the simulated runs were drawn from
    common = ["--method", "map", "--chains", "1", "--draws", "200", "--model", "paper"]
    common += ["--no-drop-early"]  # every checkpoint, as the runs were simulated
    code, out, err = _ricl(capsys, "fit", runs, "-o", full, *common)
    assert code == 0, err
    assert "held out" in out and "alpha" in out and f"wrote {full}" in out
    tree = read_fit(full)
    assert tree.attrs["ablation"] == "none"
    assert (tree.attrs["centred"], tree.attrs["mass_matrix"]) == (0, "adapted")
    assert abs(float(tree.point_estimate.beta) - 0.3) < 0.03
    code, out, err = _ricl(capsys, "fit", runs, "-o", ablated, "--ablation", "unit-gamma", *common)
    assert code == 0, err
    code, out, err = _ricl(capsys, "compare", ablated, full)
    assert code == 0, err
    header, *rows, note = out.splitlines()
    assert [line.split()[0] for line in rows] == ["full", "unit-gamma"]
    # each fit's held-out skills beside its ELPD, read from the fit
    assert "law_free_skill_id" in header and "what the law adds" in note
    numbers = [float(v) for v in rows[0].split() if re.fullmatch(r"[-+]?\d*\.\d+", v)]
    assert min(abs(v - tree.attrs["law_free_skill_id"]) for v in numbers) < 1e-5


@pytest.mark.slow
def test_nuts_prints_diagnostic_warnings(folders, tmp_path, capsys):
    _, runs = folders
    out_file = tmp_path / "fit.nc"
    # the paper's model: the drift model's cells each pull on their own drift, and with 100
    # draws 29 of its 192 cells had Pareto k above 0.5 on an AMD EPYC (so no LOO there)
    argv = ["--chains", "1", "--warmup", "100", "--draws", "100", "--sampler-seed", "2"]
    argv += ["--model", "paper", "--no-drop-early"]
    code, out, err = _ricl(capsys, "fit", runs, "-o", out_file, *argv)
    assert code == 0, err
    assert "r_hat" in out and "ess_bulk" in out  # the summary table
    assert "bulk ESS" in out and "< 400" in out  # 100 draws cannot reach 400
    assert "PSIS-LOO: elpd_loo" in out and "not reported" not in out  # NUTS: LOO stands
    assert read_fit(out_file).sample_stats.diverging.dims == ("chain", "draw")


@pytest.fixture(scope="module")
def unidentified_runs(tmp_path_factory):
    """Issue 15's symptom, small: two num_tasks values (one fitted) and the early checkpoints
    dropped leave alpha, beta and gamma barely identified; the Laplace draws of the MAP fit
    then land where the fitted cells are extremely unlikely (p_loo about 100 for 5
    parameters; in the millions with the finite-difference Hessian of earlier versions,
    which halved the two smallest curvatures)."""
    data = tmp_path_factory.mktemp("data2")
    rng = np.random.default_rng(0)
    for num_tasks in (2, 4):
        _data_file(num_tasks, rng).to_netcdf(data / f"categorical-sequence_D{num_tasks}.nc")
    runs = tmp_path_factory.mktemp("runs2")
    return simulate_runs(data, runs, 0.5, 0.3, 3.0, checkpoints=30, noise=0.02, seed=1)


@pytest.mark.slow
def test_unreliable_loo_is_a_warning_not_a_number(unidentified_runs, tmp_path, capsys):
    common = ["--method", "map", "--chains", "1", "--draws", "400", "--drop-early"]
    common += ["--model", "paper"]
    full, ablated = tmp_path / "full.nc", tmp_path / "unit-gamma.nc"
    code, out, err = _ricl(capsys, "fit", unidentified_runs, "-o", full, *common)
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if "PSIS-LOO" in line]
    assert line.startswith("warning: PSIS-LOO not reported: ") and "--method nuts" in line
    assert "elpd" not in out and "p_loo " not in out and "Pareto" not in err
    tree = read_fit(full)
    # the meaningless number the line replaces: p_loo far above 3 x the 5 parameters
    assert diagnostics.loo(tree).p > 5 * diagnostics.P_LOO_FACTOR * 5
    argv = [unidentified_runs, "-o", ablated, "--ablation", "unit-gamma", *common]
    assert _ricl(capsys, "fit", *argv)[0] == 0
    code, out, err = _ricl(capsys, "compare", full, ablated)
    assert code == 1 and "elpd" not in out
    (line,) = err.strip().splitlines()
    assert line.startswith("ricl compare: error: fewer than two fits have a reliable PSIS-LOO")
    assert "full: PSIS-LOO not reported" in line


def _single_num_tasks(folders, tmp_path):
    _, runs = folders
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.nc").write_bytes(sorted(runs.glob("*.nc"))[0].read_bytes())
    return one


def _other_behaviour(folders, tmp_path):
    """A behaviour file measured from fewer runs than the folder holds."""
    from rational_icl.fits import load_behaviour
    from rational_icl.io import write_netcdf

    fewer = _single_num_tasks(folders, tmp_path)
    (fewer / "b.nc").write_bytes(sorted(folders[1].glob("*.nc"))[1].read_bytes())
    return (
        write_netcdf(load_behaviour(fewer), tmp_path / "behaviour.nc") or tmp_path / "behaviour.nc"
    )


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda f, t: [t / "absent", "-o", t / "fit.nc"], "does not exist"),
        (lambda f, t: [f[0], "-o", t / "fit.nc"], "categorical-sequence_D"),  # untrained file
        (lambda f, t: [_single_num_tasks(f, t), "-o", t / "fit.nc"], "num_tasks"),
        (
            lambda f, t: [f[1], "-o", t / "fit.nc", "--strategies", "memorizing,constant"],
            "strategies must be",
        ),
        (
            lambda f, t: [
                f[1],
                "-o",
                t / "fit.nc",
                "--strategies",
                "memorizing,generalizing,constant",
            ],
            "need --observation outputs",
        ),
        (lambda f, t: [f[1], "-o", t / "fit.txt"], "must end in .nc"),
        (lambda f, t: [f[1], "-o", t], "is a folder"),
        (lambda f, t: [f[1], "-o", t / "fit.nc", "--chains", "0"], "--chains must be at least 1"),
        (
            lambda f, t: [f[1], "-o", t / "fit.nc", "--model", "transition"],
            "--model 'transition' was removed; the default anchored-offsets-drift replaces it "
            "(leave out --model), or choose one of paper, anchored-offsets, "
            "anchored-offsets-drift, anchored-smooth-offsets, anchored-smooth-offsets-drift",
        ),
        (
            lambda f, t: [
                f[1],
                "-o",
                t / "fit.nc",
                "--model",
                "anchored",
                "--observation",
                "outputs",
            ],
            "--model 'anchored' was removed; the default anchored-offsets replaces it",
        ),
        (
            lambda f, t: [f[1], "-o", t / "fit.nc", "--model", "best"],
            "--model must be one of paper, anchored-offsets, anchored-offsets-drift, "
            "anchored-smooth-offsets, anchored-smooth-offsets-drift; got 'best'",
        ),
        # the runs are read and measured before these are known: seconds each, slow tier
        pytest.param(
            lambda f, t: [f[1], "-o", t / "fit.nc", "--pooling", "partial"],
            "several configurations",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            lambda f, t: [f[1], "-o", t / "fit.nc", "--splits", "id,iwl"],
            "allowed are id, ood",
            marks=pytest.mark.slow,
        ),
        (lambda f, t: [f[1], "-o", t / "fit.nc", "--behaviour", t / "none.nc"], "is not a file"),
        (
            lambda f, t: [f[1], "-o", t / "fit.nc", "--transition-level", "1"],
            "--transition-level 1: allowed: a weight strictly between 0 and 1",
        ),
        pytest.param(
            lambda f, t: [f[1], "-o", t / "fit.nc", "--behaviour", _other_behaviour(f, t)],
            "(its num_tasks values differ)",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_errors_are_one_line(folders, tmp_path, capsys, make_args, message):
    code, out, err = _ricl(capsys, "fit", *make_args(folders, tmp_path))
    assert code != 0
    # (the warnings about these random runs, written as they are read, come before it)
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("ricl fit: error: ")
    assert message in lines[0]
    assert not (tmp_path / "fit.nc").exists()


def test_existing_fit_is_kept_without_force(folders, tmp_path, capsys):
    out_file = tmp_path / "fit.nc"
    out_file.write_text("keep me")
    code, _, err = _ricl(capsys, "fit", folders[1], "-o", out_file, "--method", "map")
    assert code == 1 and "--force" in err
    assert out_file.read_text() == "keep me"


def test_compare_errors_are_one_line(tmp_path, capsys):
    code, _, err = _ricl(capsys, "compare", tmp_path / "a.nc", tmp_path / "b.nc")
    assert code == 1
    assert err.strip() == f"ricl compare: error: fit file {str(tmp_path / 'a.nc')!r} does not exist"


@pytest.mark.slow
def test_fit_on_the_id_split_prints_both_evaluations(folders, tmp_path, capsys):
    _, runs = folders
    out = tmp_path / "fit.nc"
    argv = ["fit", runs, "-o", out, "--method", "map", "--splits", "id", "--drop-early"]
    code, stdout, _ = _ricl(capsys, *argv)
    assert code == 0
    assert (
        "observed the barycentric weight on memorizing (against generalizing) in splits id"
        in stdout
    )
    assert "authors' evaluation (id split, checkpoints from step" in stdout
    assert "oracle (sees held-out cells" in stdout and "no-skill" not in stdout
    assert "held-out design authors" in stdout and "persistence" in stdout
    assert re.search(r"skill = 1 - RMSE\(model\) / RMSE\(best baseline.*\): id [+-]\d", stdout)
    assert re.search(r"what the law adds = .*: id [+-]\d.*; ood [+-]\d", stdout)
    tree = read_fit(out)
    # the unfitted split is predicted by the law-free reference too, with the fitted one's noise
    assert np.isfinite(tree.attrs["law_free_skill_ood"])
    mask = tree.constant_data.fit_mask
    assert not bool(mask.sel(split="ood").any()) and bool(mask.sel(split="id").any())
    assert tree.attrs["fitted_splits"] == "id" and tree.attrs["measure"] == "barycentric"
    assert np.isfinite(tree.attrs["heldout_correlation_ood"])  # scored though not fitted


def test_compare_names_a_folder_and_a_non_netcdf_file_in_one_line(tmp_path, capsys):
    folder, text = tmp_path / "fits", tmp_path / "x.nc"
    folder.mkdir()
    text.write_text("not netCDF\n")
    code, _, err = _ricl(capsys, "compare", folder, text)
    assert code == 1
    assert (
        err.strip()
        == f"ricl compare: error: fit file {str(folder)!r} is a folder; give the fit's .nc file"
    )
    code, _, err = _ricl(capsys, "compare", text, tmp_path / "y.nc")
    assert code == 1
    assert err.strip() == f"ricl compare: error: {text}: not a fit file (not a netCDF file)"


def test_a_text_file_among_the_runs_is_one_line(folders, tmp_path, capsys):
    _, runs = folders
    mixed = tmp_path / "runs"
    mixed.mkdir()
    for path in sorted(runs.glob("*.nc")):
        (mixed / path.name).write_bytes(path.read_bytes())
    (mixed / "x.nc").write_text("not netCDF\n")
    code, _, err = _ricl(capsys, "fit", mixed, "-o", tmp_path / "fit.nc", "--method", "map")
    assert code == 1
    path = str(mixed / "x.nc")
    assert err.strip() == f"ricl fit: error: file {path!r} cannot be read: not a netCDF file"


@pytest.mark.slow
def test_fit_warns_about_a_diverged_run(folders, tmp_path, capsys):
    _, runs = folders
    copied = tmp_path / "runs"
    copied.mkdir()
    # the fixture's losses are made up: give every run a final loss it could have learned
    # (the memorizing strategy's), and one of them twice the constant strategy's
    for i, path in enumerate(sorted(runs.glob("*.nc"))):
        ds = xr.load_dataset(path)
        constant = float(ds.strategy_loss.sel(strategy="constant"))
        learned = float(ds.strategy_loss.sel(strategy="memorizing"))
        ds["transformer_loss"][-1] = 2 * constant if i == 3 else learned
        ds.to_netcdf(copied / path.name)
        if i == 3:
            diverged, bound = copied / path.name, constant
    argv = ["--method", "map", "--chains", "1", "--draws", "50", *CHEAP_FIT]
    code, out, err = _ricl(capsys, "fit", copied, "-o", tmp_path / "fit.nc", *argv)
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if "diverged" in line]  # warnings: stderr
    assert line.startswith(f"warning: run {str(diverged)!r} diverged: its final transformer_loss")
    assert f"constant strategy's {bound:.3g}" in line


def test_centred_and_laplace_mass_matrix_reach_the_fit_settings(tmp_path):
    parser = argparse.ArgumentParser()
    fit_command.add_parser(parser.add_subparsers())
    argv = ["fit", str(tmp_path), "-o", str(tmp_path / "f.nc"), "--pooling", "partial"]
    default = fit_command.fit_settings(parser.parse_args(argv))
    assert (default.centred, default.mass_matrix) == (False, "adapted")
    chosen = fit_command.fit_settings(
        parser.parse_args([*argv, "--centred", "--mass-matrix", "laplace"])
    )
    assert (chosen.centred, chosen.mass_matrix) == (True, "laplace")


# ---------------------------------------------------------------------------- issue 24


@pytest.mark.slow
def test_too_few_draws_for_loo_still_write_the_fit(folders, tmp_path, capsys):
    # item 4: --draws 2 / --pointwise-draws 3 crashed in PSIS-LOO after sampling, losing it
    out_file = tmp_path / "fit.nc"
    argv = ["--chains", "1", "--warmup", "20", "--draws", "2", "--pointwise-draws", "3"]
    argv += CHEAP_FIT
    code, out, err = _ricl(capsys, "fit", folders[1], "-o", out_file, *argv)
    assert code == 0, err
    assert "Traceback" not in err and "Mean of empty slice" not in err  # item 12
    warned = [line for line in out.splitlines() if line.startswith("warning:") and "draws" in line]
    assert len(warned) == 1 and out_file.exists()


def test_fit_refuses_runs_a_live_command_is_writing(folders, tmp_path, capsys):
    # item 6: `ricl fit` read runs while `ricl train` held the folder's lock
    import json
    import os
    import socket

    from rational_icl.io import LOCK_NAME

    runs = tmp_path / "runs"
    runs.mkdir()
    for path in sorted(folders[1].glob("*.nc")):
        (runs / path.name).write_bytes(path.read_bytes())
    holder = {"command": "ricl train", "host": socket.gethostname(), "pid": os.getpid()}
    (runs / LOCK_NAME).write_text(json.dumps(holder))
    code, out, err = _ricl(capsys, "fit", runs, "-o", tmp_path / "fit.nc")
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "is being written by `ricl train`" in err and not (tmp_path / "fit.nc").exists()


@pytest.mark.slow
def test_unfinished_runs_are_warned_about_and_recorded(folders, tmp_path, capsys):
    # item 6: runs stopped at step 1632 of 3000 were fitted silently
    runs = tmp_path / "runs"
    runs.mkdir()
    paths = sorted(folders[1].glob("*.nc"))
    for path in paths:
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        ds.isel(checkpoint=slice(0, -3)).to_netcdf(runs / path.name)  # a killed ensemble
    out_file = tmp_path / "fit.nc"
    argv = ["--method", "map", "--chains", "1", "--draws", "50", *CHEAP_FIT]
    code, out, err = _ricl(capsys, "fit", runs, "-o", out_file, *argv)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning: unfinished run")]
    assert len(warned) == 1 and f"{paths[0].name} (step 2912 of 4000)" in warned[0]
    assert paths[-1].name in read_fit(out_file).attrs["unfinished_runs"]


@pytest.mark.slow
def test_files_of_other_runs_are_refused_in_fit_compare_and_report(folders, tmp_path, capsys):
    # item 5: seed 1 and seed 2 fits were ranked together, and --behaviour of other runs used
    from rational_icl.fits import load_behaviour
    from rational_icl.io import write_netcdf

    other = tmp_path / "seed2"
    other.mkdir()
    for path in sorted(folders[1].glob("*.nc")):
        with xr.open_dataset(path) as ds:
            ds.load().assign_attrs(seed=2).to_netcdf(other / path.name)
    common = ["--method", "map", "--chains", "1", "--draws", "50", *CHEAP_FIT]
    fits = [tmp_path / "a.nc", tmp_path / "b.nc"]
    for runs, out_file in zip((folders[1], other), fits, strict=True):
        code, _, err = _ricl(capsys, "fit", runs, "-o", out_file, *common)
        assert code == 0, err
    behaviour_b = write_netcdf(load_behaviour(other), tmp_path / "behaviour_b.nc")
    refusals = [
        ("fit", folders[1], "-o", tmp_path / "c.nc", "--behaviour", behaviour_b, *common),
        ("compare", *fits),
        ("report", folders[1], fits[1], "-o", tmp_path / "rep"),
    ]
    for argv in refusals:
        code, out, err = _ricl(capsys, *argv)
        lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
        assert code != 0 and len(lines) == 1, err
        assert "was made from other runs than" in lines[0]
    assert not (tmp_path / "c.nc").exists() and not (tmp_path / "rep").exists()


def test_a_run_file_declaring_a_huge_dimension_is_one_line(folders, tmp_path, capsys):
    # Issue 35, item 1: a 28 KB file declaring sequence = 2^34 was a MemoryError traceback.
    import shutil

    import netCDF4

    _, runs = folders
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    with netCDF4.Dataset(copy / "huge.nc", "w") as nc:
        nc.createDimension("sequence", 2**40)
        nc.createVariable("sequence", "i8", ("sequence",), chunksizes=(1024,))
    out = tmp_path / "fit.nc"
    code, _, err = _ricl(capsys, "fit", copy, "-o", out, "--method", "map", "--model", "paper")
    (line,) = err.strip().splitlines()
    assert code == 1 and line.startswith(
        f"ricl fit: error: file {str(copy / 'huge.nc')!r} declares sequence = 1099511627776 "
    )
    assert line.endswith("allowed: files whose variables fit in memory") and not out.exists()


def test_a_fit_file_another_fit_is_writing_is_refused(folders, tmp_path, capsys):
    # Issue 35, item 9: two `ricl fit -o same.nc` started together both wrote it; the
    # second replaced the first without --force.
    import json
    import os
    import socket

    from rational_icl.fits.inputs import FitSettings
    from rational_icl.pipeline import fit_runs

    _, runs = folders
    out = tmp_path / "fit.nc"
    out.write_text("the first fit")
    holder = {"command": "ricl fit", "host": socket.gethostname(), "pid": os.getppid()}
    (tmp_path / ".fit.nc.ricl-lock").write_text(json.dumps(holder))
    code, _, err = _ricl(capsys, "fit", runs, "-o", out, "--force", "--method", "map")
    (line,) = err.strip().splitlines()
    assert code == 1 and line.startswith(f"ricl fit: error: output {str(out)!r} is in use by ")
    assert out.read_text() == "the first fit"
    (tmp_path / ".fit.nc.ricl-lock").unlink()
    # the existence check is made again once the lock is held (the first fit's file)
    with pytest.raises(RiclError, match="exists \\(use --force to overwrite\\)"):
        fit_runs(runs, out, FitSettings(model="paper", drop_early=False, method="map"), force=False)
    assert out.read_text() == "the first fit" and not (tmp_path / ".fit.nc.ricl-lock").exists()


def test_every_door_fits_the_same_default(monkeypatch):
    """FitSettings(), ``ricl fit`` and ``ricl run`` with no options build one FitSettings:
    the default model, the paper's early-checkpoint rule, every split."""
    from rational_icl.cli import run as run_command
    from rational_icl.cli.main import build_parser
    from rational_icl.vocabulary import DEFAULT_MODEL

    monkeypatch.setattr("os.isatty", lambda fd: False)  # progress bars: the terminal's choice
    parser = build_parser()
    fit_door = fit_command.fit_settings(parser.parse_args(["fit", "runs", "-o", "fit.nc"]))
    run_args = parser.parse_args(["run", "-o", "out"])
    run_args.model = fit_command.model_or_default(run_args)  # as run_command.run does
    run_door = run_command._fit_settings(run_args)
    assert fit_door == inputs.FitSettings() == run_door
    assert (fit_door.model, fit_door.drop_early, fit_door.splits) == (DEFAULT_MODEL, True, None)
    outputs = parser.parse_args(["fit", "runs", "-o", "fit.nc", "--observation", "outputs"])
    assert fit_command.fit_settings(outputs) == inputs.FitSettings(observation="outputs")


def test_run_offsets_line_names_the_spread_and_the_runs_furthest_from_the_law():
    offsets = xr.Dataset(
        {
            "run_offset": ("num_tasks", [0.1, -2.0, 0.5, 1.5]),
            "offset_scale": ("statistic", [1.45, 0.55, 1.0]),  # in no particular order
        },
        coords={"num_tasks": [2, 8, 32, 128], "statistic": ["high", "low", "median"]},
    )
    line = fit_command.run_offsets_line(offsets)
    assert "offset_scale 1.00 [0.55, 1.45]" in line
    assert line.endswith("num_tasks=8 -2.00, num_tasks=128 +1.50, num_tasks=32 +0.50\n")
    assert fit_command.run_offsets_line(None) == ""

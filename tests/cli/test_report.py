"""`ricl report`: runs folders, behaviour and fit files in; index.html out; one-line errors."""

from __future__ import annotations

import pytest

from rational_icl.cli.main import main
from rational_icl.fits import simulate_runs
from tests.specs import SMALL_CATEGORICAL as SPEC

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Simulated runs and a MAP fit of them, made with the ricl commands."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "tiny.toml").write_text(SPEC)
    assert main(["data", str(root / "tiny.toml"), "--out", str(root / "data")]) == 0
    runs = simulate_runs(root / "data", root / "runs", seed=2)
    fit = root / "fit.nc"
    command = ["fit", str(runs), "-o", str(fit), "--method", "map", "--chains", "2"]
    assert main([*command, "--draws", "50"]) == 0
    return runs, fit


def test_report_from_runs_and_fit(sweep, tmp_path, capsys):
    runs, fit = sweep
    out = tmp_path / "report"
    assert main(["report", str(runs), str(fit), "-o", str(out), "--title", "tiny"]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")
    page = (out / "index.html").read_text()
    assert "<title>tiny</title>" in page and "held-out correlation (id)" in page
    assert (out / "figures" / "07_log_odds.png").is_file()
    assert (out / "tables" / "parameters.csv").is_file()


def test_report_from_a_fit_alone_skips_the_loss_figure(sweep, tmp_path):
    _, fit = sweep
    assert main(["report", str(fit), "-o", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "not drawn, needs the runs folder" in page
    assert (tmp_path / "figures" / "01_weight_map.png").is_file()


def test_report_from_runs_alone(sweep, tmp_path):
    runs, _ = sweep
    assert main(["report", str(runs), "-o", str(tmp_path)]) == 0
    assert "not drawn, needs a fit" in (tmp_path / "index.html").read_text()


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda runs, fit, tmp: [str(tmp / "missing.nc")], "does not exist"),
        (lambda runs, fit, tmp: [str(runs), str(runs)], "at most one runs folder"),
        (lambda runs, fit, tmp: [str(fit), str(fit)], "given twice"),
        (lambda runs, fit, tmp: [str(tmp / "not.nc")], "cannot be read as netCDF"),
    ],
)
def test_report_errors_are_one_line(sweep, tmp_path, capsys, make_args, message):
    runs, fit = sweep
    (tmp_path / "not.nc").write_text("plain text")
    code = main(["report", *make_args(runs, fit, tmp_path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("ricl report: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out" / "index.html").exists()


def test_report_out_must_be_a_folder(sweep, tmp_path, capsys):
    runs, _ = sweep
    (tmp_path / "file").write_text("")
    assert main(["report", str(runs), "-o", str(tmp_path / "file")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_report_refuses_runs_a_live_command_is_writing(tmp_path, capsys):
    # Issue 24, item 6: runs were read while `ricl train` held the folder's lock.
    import json
    import os
    import socket

    from rational_icl.io import LOCK_NAME

    runs = tmp_path / "runs"
    runs.mkdir()
    holder = {"command": "ricl train", "host": socket.gethostname(), "pid": os.getpid()}
    (runs / LOCK_NAME).write_text(json.dumps(holder))
    assert main(["report", str(runs), "-o", str(tmp_path / "rep")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is being written by `ricl train`" in err[0]
    assert not (tmp_path / "rep").exists()


def _fit_of(runs, fit, tmp_path, change):
    """A copy of ``fit`` that records the identity of ``runs`` changed by ``change`` (a
    function of one run dataset): the fit those runs would have given."""
    import shutil

    import xarray as xr

    from rational_icl.fits.runs import open_runs
    from rational_icl.fits.tree import read_fit, write_fit

    other = tmp_path / "other-runs"
    shutil.copytree(runs, other)
    for path in other.glob("*.nc"):
        ds = xr.load_dataset(path)
        change(ds).to_netcdf(path)
    tree = read_fit(fit)
    tree.attrs["runs_identity"] = open_runs(other).attrs["runs_identity"]
    return write_fit(tree, tmp_path / "other-fit.nc")


def _other_weight_decay(ds):
    ds.attrs["spec"] = ds.attrs["spec"].replace("weight_decay = 0.0", "weight_decay = 0.1")
    ds.attrs["weight_decay"] = 0.1
    return ds


def _unfinished(ds):
    return ds.isel(checkpoint=slice(0, -1))


@pytest.mark.parametrize("change", [_other_weight_decay, _unfinished])
def test_report_refuses_a_fit_of_other_runs(sweep, tmp_path, capsys, change):
    # Issue 35, items 2 and 3: a fit of runs with another weight_decay made a mixed report
    # (rc 0); one of the same runs before they finished was a KeyError: 80 traceback.
    runs, fit = sweep
    other = _fit_of(runs, fit, tmp_path, change)
    code = main(["report", str(runs), str(other), "-o", str(tmp_path / "out")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert line.startswith(f"ricl report: error: fit {str(other)!r} was made from other runs ")
    assert "another spec, or other checkpoints" in line
    assert not (tmp_path / "out").exists()


def test_a_report_folder_reused_keeps_no_table_of_the_earlier_report(sweep, tmp_path, capsys):
    # Issue 35, item 14: comparison.csv and models.csv of a two-fit report stayed beside a
    # one-fit report written into the same folder.
    import shutil

    runs, fit = sweep
    second = tmp_path / "second" / fit.name
    second.parent.mkdir()
    shutil.copy(fit, second)
    out = tmp_path / "report"
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["report", str(runs), str(fit), str(second), "-o", str(out)]) == 0
    assert {"comparison.csv", "models.csv"} <= {p.name for p in (out / "tables").iterdir()}
    assert main(["report", str(runs), str(fit), "-o", str(out)]) == 0
    tables = {p.name for p in (out / "tables").iterdir()}
    assert "comparison.csv" not in tables and "models.csv" not in tables
    assert "parameters.csv" in tables and (out / "notes.txt").read_text() == "mine"
    capsys.readouterr()

"""`ricl data`: files written, kept, and one-line errors with exit code 2."""

import subprocess
import sys

import xarray as xr

from rational_icl.cli.main import main

SPEC = """
setting = "categorical-sequence"
num_dims = 4
context_length = 8
num_tasks = [2, 8]
[evaluation]
num_sequences = 4
num_loss_sequences = 20
"""


def test_writes_one_file_per_run_and_keeps_existing(tmp_path, capsys):
    spec = tmp_path / "small.toml"
    spec.write_text(SPEC)
    out = tmp_path / "runs"
    assert main(["data", str(spec), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("*.nc"))
    assert files == [
        "categorical-sequence_K4_T8_D2_mlp4_seed1.nc",
        "categorical-sequence_K4_T8_D8_mlp4_seed1.nc",
    ]
    with xr.open_dataset(out / files[0]) as ds:
        assert ds.attrs["num_tasks"] == 2 and "strategy_prediction" in ds
        created = ds.attrs["created"]
    before = (out / files[0]).stat().st_mtime_ns
    assert main(["data", str(spec), "--out", str(out)]) == 0
    assert "exists, kept" in capsys.readouterr().out
    assert (out / files[0]).stat().st_mtime_ns == before
    assert main(["data", str(spec), "--out", str(out), "--force"]) == 0
    with xr.open_dataset(out / files[0]) as ds:
        assert ds.attrs["created"] >= created
    assert not list(out.glob(".*.tmp"))


def test_bad_spec_is_one_line_exit_2_and_writes_nothing(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace("num_tasks = [2, 8]", "num_tasks = [2, 0]"))
    out = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "rational_icl.cli.main", "data", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ricl data: error: spec key 'num_tasks': value 0 is out of range; allowed: integers >= 1"
    ]
    assert not out.exists()


def test_out_is_a_file(tmp_path, capsys):
    spec = tmp_path / "small.toml"
    spec.write_text(SPEC)
    (tmp_path / "taken").write_text("")
    assert main(["data", str(spec), "--out", str(tmp_path / "taken")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_version_and_help():
    result = subprocess.run(
        [sys.executable, "-m", "rational_icl.cli.main", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("ricl ")


def test_files_get_the_umask_mode(tmp_path):
    import os

    spec = tmp_path / "small.toml"
    spec.write_text(SPEC)
    old = os.umask(0o022)
    try:
        assert main(["data", str(spec), "--out", str(tmp_path / "runs")]) == 0
    finally:
        os.umask(old)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "runs").glob("*.nc")}
    assert modes == {0o644}

"""`ricl data`: files written, kept, and one-line errors with exit code 2."""

import os
import subprocess
import sys

import pytest
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


def _refused(tmp_path, capsys, text, *extra, out="runs"):
    """``ricl data`` of a spec text: (exit code, the one stderr line); asserts one line."""
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    code = main(["data", str(spec), "--out", str(tmp_path / out), *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return code, lines[0]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (  # issue 35, item 1: an array of 7.28 TiB in the spec's own check
            "[evaluation]",
            "[training]\nnum_checkpoints = 1000000000000\n[evaluation]",
            "spec key 'training.num_checkpoints': value 1000000000000 is more than max_steps "
            "100000; allowed: integers from 1 to max_steps",
        ),
        (  # issue 35, item 1: ran until killed
            "num_loss_sequences = 20",
            "num_loss_sequences = 1000000000000000",
            "spec key 'evaluation.num_loss_sequences': value 1000000000000000 is out of "
            "range; allowed: integers from 2 to 100000000",
        ),
        (  # issue 35, item 4: NaN files, rc 0
            "num_dims = 4",
            "num_dims = 4\nprior = 1e-310",
            "spec key 'prior': value 1e-310 is out of range; allowed: numbers >= 1e-300 "
            "(Dirichlet concentration)",
        ),
        (  # issue 35, item 6: a wrapped checkpoint schedule, rc 0
            "[evaluation]",
            "[training]\nmax_steps = 9223372036854775807\n[evaluation]",
            "spec key 'training.max_steps': value 9223372036854775807 is out of range; "
            "allowed: integers from 1 to 9007199254740992",
        ),
        (  # a number key's type error said "allowed: strings"
            "num_dims = 4",
            'num_dims = 4\nwithin_class_variance = "x"',
            "spec key 'within_class_variance': value 'x' has the wrong type; allowed: numbers",
        ),
    ],
)
def test_a_spec_of_impossible_sizes_is_refused_in_one_line(tmp_path, capsys, old, new, message):
    code, line = _refused(tmp_path, capsys, SPEC.replace(old, new))
    assert code == 2 and line.startswith(f"ricl data: error: {message}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("num_dims = 4", "num_dims = 1099511627776", "num_dims = 1099511627776 (at its default 8"),
        ("[evaluation]", "[training]\nbatch_size = 1000000000000\n[evaluation]", "batch_size"),
    ],
)
def test_the_memory_refusal_names_the_key_that_drives_it(tmp_path, capsys, old, new, key):
    # Issue 35, item 12: num_dims = 2^40 said "lower num_sequences", batch_size = 1e12 said
    # "lower context_length".
    code, line = _refused(tmp_path, capsys, SPEC.replace(old, new))
    name = key.split(" ")[0]
    assert code == 1 and f"mostly for {key}" in line and f"lower {name} or pass " in line
    assert not (tmp_path / "runs").exists()


def test_an_out_folder_that_is_not_utf8_is_one_line(tmp_path, capsys):
    # Issue 35, item 13: a UnicodeEncodeError traceback.
    code, line = _refused(tmp_path, capsys, SPEC, out=os.fsdecode(b"bad\xffname"))
    assert code == 1 and "is not valid UTF-8; allowed: UTF-8 file and folder names" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


def test_an_out_folder_of_another_specs_runs_is_refused(tmp_path, capsys):
    # Issue 35, item 16: spec B's `ricl data` into spec A's runs was rc 0.
    spec = tmp_path / "a.toml"
    spec.write_text(SPEC)
    assert main(["data", str(spec), "--out", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    other = SPEC.replace("[evaluation]", "[training]\nweight_decay = 0.1\n[evaluation]")
    for extra in ([], ["--force"]):
        code, line = _refused(tmp_path, capsys, other, *extra)
        assert code == 1 and line.startswith(
            f"ricl data: error: --out {str(tmp_path / 'runs')!r} holds runs of another spec: "
        )
        assert "has training.weight_decay = 0.0 where this spec has 0.1; give another --out" in (
            line
        )
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == before
    subset = SPEC.replace("num_tasks = [2, 8]", "num_tasks = [8]")  # the same experiment
    spec.write_text(subset)
    assert main(["data", str(spec), "--out", str(tmp_path / "runs")]) == 0

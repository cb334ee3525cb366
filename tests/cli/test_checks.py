"""Refusals before any work (issue 14, items 2, 3, 7): outputs that cannot be written and
devices that cannot be used give one line, a non-zero exit and nothing on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from rational_icl.cli.main import main
from tests.specs import SMALL_CATEGORICAL

# /sys is a kernel file system: nobody, root included, can create a file in it, so it
# stands in for a read-only folder in a container where the tests run as root.
UNWRITABLE = Path("/sys/ricl-test-out")
needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /sys")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL_CATEGORICAL)
    return path


@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("keep me")
    return path


def _refused(capsys, command: str, *argv) -> str:
    """Run ``ricl command ...``; assert it failed in one line and return that line."""
    code = main([command, *map(str, argv)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0 and len(lines) == 1, captured.err
    assert lines[0].startswith(f"ricl {command}: error: ")
    return lines[0]


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_fit_refuses_an_output_under_a_file_before_fitting(afile, tmp_path, capsys):
    # the runs folder does not exist either: the output is checked first, before any work
    line = _refused(capsys, "fit", tmp_path / "no-runs", "-o", afile / "x.nc")
    assert f"-o {str(afile / 'x.nc')!r}: {str(afile)!r} is a file, not a folder" in line
    assert afile.read_text() == "keep me"


@needs_linux
def test_fit_refuses_an_unwritable_output_before_fitting(tmp_path, capsys):
    line = _refused(capsys, "fit", tmp_path / "no-runs", "-o", UNWRITABLE / "fit.nc")
    assert "cannot write to folder '/sys'" in line


def test_run_refuses_bad_fit_options_before_the_first_stage(spec, tmp_path, capsys):
    job = tmp_path / "job"
    for option, value, message in [
        ("--draws", "0", "--draws must be at least 1; got 0"),
        ("--chains", "-1", "--chains must be at least 1; got -1"),
        ("--warmup", "-5", "--warmup must be at least 0; got -5"),
    ]:
        assert message in _refused(capsys, "run", spec, "-o", job, option, value)
    assert not job.exists()


def test_run_refuses_an_output_under_a_file(spec, afile, capsys):
    line = _refused(capsys, "run", spec, "-o", afile / "sub")
    assert f"-o {str(afile / 'sub')!r} is a file, not a folder (its part {str(afile)!r}" in line
    assert afile.read_text() == "keep me"


@needs_linux
def test_run_refuses_an_unwritable_output(spec, capsys):
    line = _refused(capsys, "run", spec, "-o", UNWRITABLE / "job")
    assert "cannot write to folder '/sys'" in line


@pytest.mark.parametrize("command", ["data", "train"])
def test_data_and_train_refuse_an_out_folder_that_is_or_is_under_a_file(
    command, spec, afile, capsys
):
    line = _refused(capsys, command, spec, "--out", afile)
    assert line.endswith(f"--out {str(afile)!r} is a file, not a folder")
    line = _refused(capsys, command, spec, "--out", afile / "sub")
    assert f"cannot write to output folder {str(afile / 'sub')!r}: Not a directory" in line
    assert afile.read_text() == "keep me"


@needs_linux
@pytest.mark.parametrize("command", ["data", "train"])
def test_data_and_train_refuse_an_unwritable_out_folder(command, spec, capsys):
    line = _refused(capsys, command, spec, "--out", UNWRITABLE)
    assert f"cannot write to output folder {str(UNWRITABLE)!r}" in line


@pytest.mark.parametrize("command", ["data", "train", "run"])
def test_an_unknown_device_is_refused_before_any_output(command, spec, tmp_path, capsys):
    out = tmp_path / "out"
    option = "-o" if command == "run" else "--out"
    line = _refused(capsys, command, spec, option, out, "--device", "foo")
    assert line.endswith("--device 'foo' is not a torch device; allowed: cpu, cuda, cuda:N")
    assert not out.exists()


@no_cuda
@pytest.mark.parametrize("command", ["data", "train", "run"])
def test_cuda_without_a_gpu_is_refused_before_any_output(command, spec, tmp_path, capsys):
    out = tmp_path / "out"
    option = "-o" if command == "run" else "--out"
    line = _refused(capsys, command, spec, option, out, "--device", "cuda")
    assert "--device 'cuda': CUDA is not available on this machine; use cpu" in line
    assert not out.exists()


def test_sweep_refuses_an_unknown_device_before_starting_a_cluster(spec, tmp_path, capsys):
    out = tmp_path / "out"
    line = _refused(capsys, "sweep", spec, "-o", out, "--device", "foo")
    assert "--device 'foo' is not a torch device" in line
    assert not out.exists()


def test_check_device_accepts_the_cpu_and_names_the_cuda_count():
    from rational_icl.cli.checks import check_device
    from rational_icl.errors import RiclError

    assert check_device("cpu") == "cpu"
    assert check_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert check_device("cuda:3", probe=False) == "cuda:3"  # a remote worker's device
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert check_device("cuda:0") == "cuda:0"
        with pytest.raises(RiclError, match=f"this machine has {count} CUDA device"):
            check_device(f"cuda:{count}")


@pytest.mark.parametrize(
    ("line", "key"),
    [("num_tasks = [2, 8, 32, 128]", "num_tasks = [1000000000]"), ("context_length = 8", "")],
)
def test_a_spec_too_large_for_memory_is_refused_before_any_work(line, key, tmp_path, capsys):
    text = SMALL_CATEGORICAL.replace(line, key or "context_length = 1000000000")
    spec = tmp_path / "huge.toml"
    spec.write_text(text)
    name = "num_tasks = [1000000000]" if key else "context_length = 1000000000"
    for command, option in [("data", "--out"), ("train", "--out"), ("run", "-o")]:
        out = tmp_path / command
        refusal = _refused(capsys, command, spec, option, out)
        assert f"mostly for {name} (" in refusal and "this machine has " in refusal
        assert refusal.endswith("or pass --ignore-memory-check")
        assert not out.exists()


def test_the_memory_check_can_be_overridden(spec, tmp_path, capsys, monkeypatch):
    import os

    # a machine of 1 MB: the small spec's 23 MB estimate does not fit
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 256 if name == "SC_PHYS_PAGES" else real(name))
    out = tmp_path / "out"
    refusal = _refused(capsys, "data", spec, "--out", out)
    assert "needs about 0.0227 GB" in refusal and "this machine has 0.00105 GB" in refusal
    assert not out.exists()
    assert main(["data", str(spec), "--out", str(out), "--ignore-memory-check"]) == 0
    assert len(list(out.glob("*.nc"))) == 4


def test_a_seed_past_64_bits_is_refused_in_one_line(tmp_path, capsys):
    # Issue 24, item 12: --seed 99999999999999999999999 was an OverflowError traceback.
    output = tmp_path / "fit.nc"
    line = _refused(capsys, "fit", tmp_path / "runs", "-o", output, "--sampler-seed", "9" * 23)
    assert "--sampler-seed must be an integer from 0 to 9223372036854775807" in line
    assert not output.exists()


def test_renamed_options_say_their_new_name_in_one_line(tmp_path, capsys):
    """Issue 37, item 5: one meaning per option name. ricl record's --model (a factory) is
    --factory, since --model names the rational model in ricl fit and ricl run; ricl fit's
    --seed (the sampler's) is --sampler-seed, since seed elsewhere is a training seed."""
    line = _refused(
        capsys,
        "record",
        "tiny-categorical",
        "-o",
        tmp_path,
        "--model",
        "m:build",
        "--checkpoints",
        tmp_path,
    )
    assert line == (
        "ricl record: error: --model was renamed --factory (--model names the rational model "
        "in ricl fit); use --factory"
    )
    line = _refused(capsys, "fit", tmp_path, "-o", tmp_path / "fit.nc", "--seed", "3")
    assert line.endswith(
        "--seed was renamed --sampler-seed (a seed elsewhere is a training "
        "seed); use --sampler-seed"
    )
    assert not any(tmp_path.iterdir())


def test_every_writing_command_takes_o_and_out():
    """-o and --out name the output of every command that writes."""
    from rational_icl.cli.main import build_parser

    subparsers = build_parser()._subparsers._group_actions[0].choices
    for command in ("data", "train", "record", "sweep", "fit", "report", "run"):
        options = {s for a in subparsers[command]._actions for s in a.option_strings}
        assert {"-o", "--out"} <= options, command

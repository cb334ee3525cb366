"""``--threads`` on every command that computes: one option, one check, one helper."""

from __future__ import annotations

import os

import pytest
import torch

from rational_icl.cli.main import build_parser, main
from rational_icl.pipeline import THREAD_VARIABLES, configure_jax, limit_threads

pytestmark = pytest.mark.slow


def _commands(tmp_path):
    runs, fit = str(tmp_path / "runs"), str(tmp_path / "fit.nc")
    return {
        "data": ["data", "tiny-categorical", "--out", runs],
        "train": ["train", "tiny-categorical", "--out", runs],
        "fit": ["fit", runs, "-o", fit],
        "report": ["report", fit, "-o", str(tmp_path / "report")],
        "compare": ["compare", fit, str(tmp_path / "other.nc")],
        "run": ["run", "tiny-categorical", "-o", str(tmp_path / "job")],
    }


@pytest.mark.parametrize("command", ["data", "train", "fit", "report", "compare", "run"])
def test_every_computing_command_takes_threads_and_refuses_fewer_than_one(
    command, tmp_path, capsys
):
    argv = _commands(tmp_path)[command]
    assert build_parser().parse_args([*argv, "--threads", "2"]).threads == 2
    assert build_parser().parse_args(argv).threads is None
    (tmp_path / "runs").mkdir()
    assert main([*argv, "--threads", "0"]) == 1
    out, err = capsys.readouterr()
    assert err == f"ricl {command}: error: --threads 0: allowed: integers >= 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written


def test_limit_threads_sets_torch_the_thread_variables_and_xla(monkeypatch):
    for name in (*THREAD_VARIABLES, "XLA_FLAGS"):
        monkeypatch.setenv(name, "")  # restored after the test
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    before = torch.get_num_threads()
    try:
        limit_threads(1)
        assert torch.get_num_threads() == 1
        assert [os.environ[name] for name in THREAD_VARIABLES] == ["1", "1", "1"]
        assert os.environ["XLA_FLAGS"] == (
            "--xla_force_host_platform_device_count=4 --xla_cpu_multi_thread_eigen=false "
            "intra_op_parallelism_threads=1"
        )
        limit_threads(1)  # once only
        assert os.environ["XLA_FLAGS"].count("multi_thread_eigen") == 1
        limit_threads(None)  # not given: nothing changes
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_configure_jax_gives_no_more_devices_than_threads(monkeypatch):
    calls = []
    monkeypatch.setattr("numpyro.set_host_device_count", calls.append)
    monkeypatch.setattr("numpyro.enable_x64", lambda: None)
    monkeypatch.setattr("rational_icl.pipeline.limit_threads", lambda threads: None)
    configure_jax(4, threads=2)
    configure_jax(4, threads=8)
    configure_jax(4)
    assert calls == [2, 4, 4]

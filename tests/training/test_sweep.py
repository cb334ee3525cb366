"""Sweeps on Dask: same files as the serial path, separate-process clusters, a killed worker,
a failing unit retried and reported, and the output-folder lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rational_icl.cli.main import main
from rational_icl.data import load_specs
from rational_icl.errors import RiclError
from rational_icl.fits.runs import open_runs
from rational_icl.training.loop import train
from rational_icl.training.sweep import (
    LOCK_NAME,
    format_summary,
    run_sweep,
    sweep_lock,
    work_units,
)

pytestmark = pytest.mark.slow

SPEC = """
setting = "categorical-sequence"
num_dims = 4
context_length = 8
num_tasks = [2, 8]
[model]
num_layers = 1
hidden_size = 16
position_encoding = "learned"
mlp_expansion_factor = [1, 2]
[training]
batch_size = 8
max_steps = 40
num_checkpoints = 3
[evaluation]
num_sequences = 4
num_loss_sequences = 20
"""
DASK = Path(sys.executable).parent / "dask"
TIMEOUT = 60  # seconds: bound for anything that waits on a process


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Thread workers (processes=False) set torch threads to 1 in this process: undo it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "small.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def serial(spec_file, tmp_path_factory) -> Path:
    """The reference: the spec trained in this process with ``train``, one unit after another."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the workers, so the numbers match bit for bit
    out = tmp_path_factory.mktemp("serial")
    try:
        train(load_specs(spec_file)[0], out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def _assert_same_runs(folder: Path, reference: Path, names=None) -> None:
    names = names or sorted(p.name for p in reference.glob("*.nc"))
    assert sorted(p.name for p in folder.glob("*.nc")) == sorted(names)
    assert not list(folder.rglob("*.tmp")), "a temporary file was left behind"
    for name in names:
        with xr.open_dataset(folder / name) as got, xr.open_dataset(reference / name) as want:
            # assert_equal compares values, dims and coords, not attrs (`created` differs)
            xr.testing.assert_equal(got, want)
            assert got.attrs["spec"] == want.attrs["spec"]


def test_local_cluster_gives_the_serial_files_and_a_lazy_sweep(spec_file, serial, tmp_path):
    specs = load_specs(spec_file)
    out = tmp_path / "sweep"
    lines = []
    outcomes = run_sweep(specs, out, workers=2, processes=False, log=lines.append)
    assert [o.status for o in outcomes] == ["done", "done"]
    assert [o.unit for o in outcomes] == [u.name for u in work_units(specs)]
    assert len(lines) == 2 and not (out / LOCK_NAME).exists()
    _assert_same_runs(out, serial)

    again = run_sweep(specs, out, workers=2, processes=False, log=lines.append)
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert format_summary(again).splitlines()[-1] == "done 0, resumed 0, skipped 2, failed 0"

    sweep = open_runs(out)  # a sweep folder reads like any runs folder
    assert dict(sweep.sizes) | {"num_tasks": 2, "mlp_expansion_factor": 2} == dict(sweep.sizes)
    assert sweep["transformer_prediction"].chunks is not None  # dask-backed, not loaded
    with xr.open_dataset(serial / "categorical-sequence_K4_T8_D8_mlp2_H16_learned_seed1.nc") as one:
        got = sweep["transformer_prediction"].sel(num_tasks=8, mlp_expansion_factor=2.0)
        np.testing.assert_array_equal(got.values, one["transformer_prediction"].values)


# ---------------------------------------------------------------------------- real processes


class _ProcessCluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, stopped on close."""

    def __init__(self, folder: Path, num_workers: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = folder / "scheduler.json"
        self.processes = [self._start(folder, "scheduler", "--host", "127.0.0.1", "--port", "0")]
        self.address = self._wait_for_scheduler()
        self.workers = [
            self._start(
                folder,
                "worker",
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--death-timeout",
                str(TIMEOUT),
            )
            for _ in range(num_workers)
        ]

    def _start(self, folder: Path, role: str, *options: str) -> subprocess.Popen:
        log = open(folder / f"{role}-{len(getattr(self, 'processes', []))}.log", "wb")  # noqa: SIM115
        command = [str(DASK), role, "--scheduler-file", str(self.scheduler_file), "--no-dashboard"]
        # cwd elsewhere: the sweep must hand workers an absolute output path
        return subprocess.Popen([*command, *options], cwd=folder, stdout=log, stderr=log)

    def _wait_for_scheduler(self) -> str:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.scheduler_file.exists():
                try:
                    return json.loads(self.scheduler_file.read_text())["address"]
                except (ValueError, KeyError):
                    pass  # still being written
            assert self.processes[0].poll() is None, "dask scheduler exited"
            time.sleep(0.1)
        raise TimeoutError("dask scheduler did not start")

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> pid, once every worker has joined."""
        from distributed import Client

        with Client(self.address, timeout=f"{TIMEOUT}s") as client:
            client.wait_for_workers(len(self.workers), timeout=TIMEOUT)
            return client.run(os.getpid)

    def worker_running(self, unit_name: str) -> str | None:
        """Address of the worker whose running task trains ``unit_name``."""
        from distributed import Client

        with Client(self.address, timeout=f"{TIMEOUT}s") as client:
            processing = client.processing()
        return next(
            (a for a, keys in processing.items() if any(unit_name in k for k in keys)), None
        )

    def close(self) -> None:
        # SIGKILL: nothing of theirs needs saving, and a graceful close waits for timeouts
        for process in [*self.workers, *self.processes]:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=TIMEOUT)


@pytest.fixture
def process_cluster(tmp_path):
    cluster = _ProcessCluster(tmp_path / "cluster", num_workers=2)
    yield cluster
    cluster.close()


def test_scheduler_address_via_cli_retries_and_reports_a_failing_unit(
    spec_file, serial, process_cluster, tmp_path, capsys
):
    out = tmp_path / "sweep"
    units = work_units(load_specs(spec_file))
    # Fault injection: a damaged checkpoint state makes the mlp2 unit raise on every attempt.
    bad = units[1].name
    (out / ".state").mkdir(parents=True)
    (out / ".state" / f"{bad}.pt").write_bytes(b"not a torch file")
    argv = ["sweep", str(spec_file), "-o", str(out), "--scheduler", process_cluster.address]

    assert main([*argv, "--retries", "1"]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert error.startswith("ricl sweep: error: 1 of 2 work unit(s) failed after 2 attempt(s)")
    assert error.endswith(bad) and "\n" not in error
    table = captured.out.splitlines()
    assert any(line.startswith(bad) and line.split()[1:3] == ["failed", "2"] for line in table)
    assert f"failed: {bad}: RiclError: checkpoint state" in captured.out
    assert "done 1, resumed 0, skipped 0, failed 1" in captured.out
    _assert_same_runs(out, serial, [f"{r.name}.nc" for r in units[0].runs])

    (out / ".state" / f"{bad}.pt").unlink()  # the fix; the rerun only trains what is missing
    assert main(argv) == 0
    assert "done 1, resumed 0, skipped 1, failed 0" in capsys.readouterr().out
    _assert_same_runs(out, serial)


def test_a_worker_killed_mid_unit_is_rerun_and_resumes(
    spec_file, serial, process_cluster, tmp_path
):
    spec = load_specs(spec_file)[0]
    units = work_units(spec)
    out = tmp_path / "sweep"
    pids = process_cluster.worker_pids()
    result = {}

    def sweep():
        result["outcomes"] = run_sweep(spec, out, scheduler=process_cluster.address, log=print)

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    # Kill a worker right after its unit saved its first checkpoint state (step 20 of 40).
    deadline = time.monotonic() + TIMEOUT
    while not (states := list((out / ".state").glob("*.pt"))):
        assert time.monotonic() < deadline and thread.is_alive(), "no unit reached a checkpoint"
        time.sleep(0.02)
    victim = process_cluster.worker_running(states[0].stem)
    assert victim is not None, "the unit finished before its worker could be killed"
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(timeout=2 * TIMEOUT)
    assert not thread.is_alive(), "the sweep did not finish after a worker died"

    outcomes = result["outcomes"]
    assert [o.unit for o in outcomes] == [u.name for u in units]
    assert all(o.status in ("done", "resumed") for o in outcomes)
    assert any(o.status == "resumed" for o in outcomes)  # the lost unit continued from its state
    _assert_same_runs(out, serial)  # nothing duplicated, nothing corrupt, same numbers


# ---------------------------------------------------------------------------- the lock


def test_a_second_sweep_on_a_locked_folder_refuses_naming_the_holder(spec_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    with sweep_lock(out):
        assert main(["sweep", str(spec_file), "-o", str(out)]) == 1
        error = capsys.readouterr().err.strip()
        assert "\n" not in error
        assert error.startswith(f"ricl sweep: error: output folder {str(out)!r} is in use by ")
        assert f"(host {socket.gethostname()}, pid {os.getpid()}, since " in error
        assert not list(out.glob("*.nc"))
    assert not (out / LOCK_NAME).exists()


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    lock = tmp_path / LOCK_NAME
    holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "earlier"}
    lock.write_text(json.dumps(holder))
    with sweep_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # the same pid on another host cannot be checked, so it is not stale
    lock.write_text(json.dumps({**holder, "host": "elsewhere"}))
    with pytest.raises(RiclError, match="host elsewhere, pid"):
        with sweep_lock(tmp_path):
            pass
    assert lock.exists()


def test_grids_whose_runs_share_a_file_name_are_refused(spec_file):
    specs = load_specs(spec_file)
    with pytest.raises(RiclError, match=r"two work units would write the same run file"):
        work_units(specs + specs)
    # Run names encode every model field that differs from the defaults: no clash here.
    path = spec_file.parent / "hidden.toml"
    path.write_text(SPEC.replace("hidden_size = 16", "hidden_size = [16, 32]"))
    assert len(work_units(load_specs(path))) == 4

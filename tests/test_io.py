"""Atomic writes: a killed writer's temporary file is removed by the next write of the same
target; a live writer's, another host's and unrelated files are left alone. The folder
lock: one writer per folder, and a stale lock is taken over by exactly one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from rational_icl import io
from rational_icl.cli.main import main
from rational_icl.errors import RiclError
from rational_icl.io import LOCK_NAME, folder_lock, load_netcdf, write_netcdf
from tests.specs import SMALL_CATEGORICAL

# A writer killed with SIGKILL inside atomic_path, after its temporary file exists.
_KILLED_WRITER = """
import os, signal, sys
from rational_icl.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a file")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return int(done.stdout)


def test_the_next_write_removes_a_killed_writers_temporary_only(tmp_path):
    target = tmp_path / "fit.nc"
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], timeout=60)
    assert killed.returncode == -9
    (debris,) = tmp_path.glob(".fit.nc.*.tmp")
    assert not target.exists()
    host, dead = socket.gethostname(), _dead_pid()
    kept = [
        tmp_path / f".fit.nc.{host}-{os.getppid()}-livewrit.tmp",  # a live writer
        tmp_path / f".fit.nc.elsewhere-{dead}-otherhst.tmp",  # another host: cannot tell
        tmp_path / ".fit.nc.oldstyle.tmp",  # not this pattern
        tmp_path / f".other.nc.{host}-{dead}-otherfil.tmp",  # another target
    ]
    for path in kept:
        path.write_bytes(b"")
    (tmp_path / f".fit.nc.{host}-{dead}-deadwrit.tmp").write_bytes(b"")
    dataset = xr.Dataset({"x": ("i", np.arange(3.0))})
    write_netcdf(dataset, target)
    xr.testing.assert_identical(load_netcdf(target), dataset)
    assert not debris.exists()
    assert sorted(tmp_path.glob(".*.tmp")) == sorted(kept)


# ---------------------------------------------------------------------------- folder lock

# Waits until a common start time, tries the folder's lock, holds it for a second.
_CONTENDER = """
import sys, time
from rational_icl.errors import RiclError
from rational_icl.io import folder_lock
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    with folder_lock(sys.argv[1], "contender"):
        print("took", flush=True)
        time.sleep(1.0)
except RiclError as err:
    print("refused", err, flush=True)
"""


def _stale_lock(folder) -> dict:
    holder = {"command": "ricl train", "host": socket.gethostname(), "pid": _dead_pid()}
    (folder / LOCK_NAME).write_text(json.dumps(holder | {"started": "earlier"}))
    return holder | {"started": "earlier"}


def test_only_one_of_many_processes_takes_over_a_stale_lock(tmp_path):
    _stale_lock(tmp_path)
    start = time.time() + 4.0  # after every interpreter has imported the package
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", _CONTENDER, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(6)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in contenders]
    took = [out for out in outputs if out.startswith("took")]
    assert len(took) == 1, outputs
    refused = [out for out in outputs if out.startswith("refused")]
    assert len(refused) == 5 and all("is in use by `contender`" in out for out in refused)
    assert not (tmp_path / LOCK_NAME).exists()  # the taker released it


def test_a_takeover_never_removes_a_lock_that_is_no_longer_the_stale_one(tmp_path):
    stale = _stale_lock(tmp_path)
    lock = tmp_path / LOCK_NAME
    with folder_lock(tmp_path, "ricl train") as path:  # took the stale lock over
        assert path == lock and json.loads(lock.read_text())["pid"] == os.getpid()
        # a second process that had read the same stale lock comes late: nothing removed
        assert not io._take_over(lock, stale, {"pid": 1})
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # a claim left by a killed taker is itself stale: the next takeover removes it
    stale = _stale_lock(tmp_path)
    claim = tmp_path / f"{LOCK_NAME}.takeover"
    claim.write_text(json.dumps(stale))
    with folder_lock(tmp_path, "ricl data"):
        assert json.loads(lock.read_text())["command"] == "ricl data"
    assert not claim.exists() and not lock.exists()
    # a live claim (another process taking over right now) means: refuse
    _stale_lock(tmp_path)
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    with pytest.raises(RiclError, match="is in use by `ricl train`"):
        with folder_lock(tmp_path, "ricl data"):
            pass


@pytest.mark.parametrize(
    ("command", "option"), [("train", "--out"), ("data", "--out"), ("run", "-o")]
)
def test_train_data_and_run_refuse_a_folder_another_command_holds(
    command, option, tmp_path, capsys
):
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL_CATEGORICAL)
    out = tmp_path / "out"
    with folder_lock(out, "ricl sweep"):
        code = main([command, str(spec), option, str(out), "--device", "cpu"])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert code == 1
        assert line.startswith(f"ricl {command}: error: output folder {str(out)!r} is in use ")
        assert f"by `ricl sweep` (host {socket.gethostname()}, pid {os.getpid()}, since " in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written

"""Atomic writes: a killed writer's temporary file is removed by the next write of the same
target; a live writer's, another host's and unrelated files are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import xarray as xr

from rational_icl.io import load_netcdf, write_netcdf

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

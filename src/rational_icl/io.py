"""Atomic file writes: a reader (or a killed writer) never sees a half-written file."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import xarray as xr

from rational_icl.errors import RiclError

# HDF5 (under netCDF-4) is not thread-safe: threads of one process (e.g. a threaded Dask
# worker pool) must not read or write netCDF files at the same time.
NETCDF_LOCK = threading.RLock()


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        prefix = f".{path.name}.{_HOST}-{os.getpid()}-"
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise RiclError(f"cannot write to folder {str(path.parent)!r}: {err.strerror}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_HOST = socket.gethostname().replace("/", "_")


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of earlier writes of ``path`` whose writer is dead.

    A temporary is ``.NAME.HOST-PID-XXXXXXXX.tmp``: only those of this host whose process no
    longer exists are removed (a killed writer's), never a live writer's, never another
    host's, never any other file.
    """
    start = f".{path.name}.{_HOST}-"
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        middle = tmp.name[len(start) : -len(".tmp")]
        pid = middle.split("-", 1)[0]
        if tmp.name.startswith(start) and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether a process of this host with this id exists."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_netcdf(dataset: xr.Dataset, path: str | Path) -> Path:
    """Write a dataset to netCDF-4 atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp, NETCDF_LOCK:
        dataset.to_netcdf(tmp)
    return Path(path)


def load_netcdf(path: str | Path) -> xr.Dataset:
    """Read a whole netCDF file into memory (and close it), safely across threads."""
    with NETCDF_LOCK:
        return xr.load_dataset(path)

"""Atomic file writes: a reader (or a killed writer) never sees a half-written file."""

from __future__ import annotations

import os
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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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

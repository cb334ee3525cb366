"""Every netCDF read and write of the package, atomic file writes (a reader, or a killed
writer, never sees a half-written file), the compressed netCDF-4 layout every stage writes,
the guard on the sizes a file declares, and the folder and output-file locks."""

from __future__ import annotations

import glob
import json
import math
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import xarray as xr

from rational_icl.errors import INTERRUPTED, RiclError, reading_error

# HDF5 (under netCDF-4) is not thread-safe: threads of one process (e.g. a threaded Dask
# worker pool) must not read or write netCDF files at the same time.
NETCDF_LOCK = threading.RLock()


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_file_name(path)
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
        if INTERRUPTED.is_set():  # a Ctrl-C that a callback swallowed: keep the old file
            raise KeyboardInterrupt
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_HOST = socket.gethostname().replace("/", "_")


def check_file_name(path: str | Path) -> None:
    """Refuse a file name that is not valid UTF-8 (bytes a shell passed through, kept by
    Python as surrogates): HDF5 and netCDF take UTF-8 names only."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise RiclError(
            f"file name {str(path)!r} is not valid UTF-8; allowed: UTF-8 file and folder names"
        ) from None


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


# Lossless zlib on byte-shuffled values: the shuffle puts the sign/exponent bytes of
# neighbouring values together, which is where floats compress; level 1 writes several
# times faster than 4-9 and the files are within 2% of theirs (runs are rewritten at every
# checkpoint during training).
COMPRESSION = {"zlib": True, "complevel": 1, "shuffle": True}
# Checkpoints per chunk: the dask chunk fits/runs.py reads, so each of its reads inflates
# exactly one chunk per variable (one checkpoint per chunk read 3x slower: 10x the chunks).
CHECKPOINTS_PER_CHUNK = 10
_CHUNK_BYTES = 4 * 2**20  # largest compressed chunk: a partial read inflates at most this
_MIN_COMPRESSED_BYTES = 4096  # smaller variables stay contiguous (a chunk index costs more)
_KEPT_ENCODING = ("dtype", "_FillValue", "scale_factor", "add_offset")


def compression_encoding(dataset: xr.Dataset) -> dict[str, dict]:
    """netCDF-4 encoding for ``to_netcdf``: every numeric variable of at least 4 KiB
    zlib-compressed and chunked, read back bit for bit.

    Chunks hold ``CHECKPOINTS_PER_CHUNK`` checkpoints (readers take ranges of them) and the
    whole of the other dims, split along the leading dims where a chunk would exceed 4 MiB.
    Encoding keys that change the stored values (dtype, fill value, packing) are kept from
    the variable's own encoding.
    """
    encoding = {}
    for name, variable in dataset.variables.items():
        if variable.dtype.kind not in "iuf" or variable.nbytes < _MIN_COMPRESSED_BYTES:
            continue
        kept = {k: v for k, v in variable.encoding.items() if k in _KEPT_ENCODING}
        encoding[str(name)] = kept | COMPRESSION | {"chunksizes": _chunks(variable)}
    return encoding


def _chunks(variable: xr.Variable) -> tuple[int, ...]:
    chunks = [
        min(size, CHECKPOINTS_PER_CHUNK) if dim == "checkpoint" else size
        for dim, size in variable.sizes.items()
    ]
    for i in range(len(chunks)):
        inner = variable.dtype.itemsize * math.prod(chunks[i + 1 :])
        if inner * chunks[i] <= _CHUNK_BYTES:
            break
        chunks[i] = max(1, _CHUNK_BYTES // inner)
    return tuple(chunks)


def write_netcdf(dataset: xr.Dataset, path: str | Path) -> Path:
    """Write a dataset to netCDF-4 atomically (temporary file, then rename), compressed
    losslessly (``compression_encoding``)."""
    with atomic_path(path) as tmp, NETCDF_LOCK:
        dataset.to_netcdf(tmp, encoding=compression_encoding(dataset))
    return Path(path)


def load_netcdf(path: str | Path) -> xr.Dataset:
    """Read a whole netCDF file into memory (and close it), safely across threads.

    libnetcdf (the default engine) reads whole files twice as fast as h5netcdf, and a file
    closed at once cannot collide with a lazy opening (``open_netcdf``). Errors are the
    engine's own, for the caller to name.
    """
    check_declared_size(path)
    with NETCDF_LOCK:
        return xr.load_dataset(path)


def open_netcdf(path: str | Path, *, chunks: dict | None = None) -> xr.Dataset:
    """Open a netCDF file lazily; with ``chunks`` (e.g. ``{}``) its variables are dask arrays.

    h5netcdf is tried first: libnetcdf crashes when a file is opened again while an earlier
    lazy opening of it is alive (e.g. the behaviour stage, then the fit); a file that is not
    HDF5 (netCDF-3, say) goes to whichever engine reads it. A file that cannot be read is a
    one-line RiclError naming it, as is one whose declared sizes exceed this machine's memory
    (``check_declared_size``).
    """
    check_declared_size(path)
    with NETCDF_LOCK:
        try:
            return xr.open_dataset(path, chunks=chunks, engine="h5netcdf")
        except (OSError, ValueError, RuntimeError, KeyError):
            pass  # a corrupt header ("Link iteration failed", a bad checksum): try libnetcdf
        try:
            return xr.open_dataset(path, chunks=chunks)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise RiclError(f"file {str(path)!r} cannot be read: {reading_error(err)}") from None


def read_netcdf(path: str | Path) -> xr.Dataset:
    """``load_netcdf``, with a file that cannot be read (not netCDF, a corrupt header or
    chunk) refused in one line naming it."""
    try:
        return load_netcdf(path)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise RiclError(f"file {str(path)!r} cannot be read: {reading_error(err)}") from None


def netcdf_groups(path: str | Path) -> list[str]:
    """The names of a netCDF-4 file's top-level groups (a fit has ``posterior``; a dataset
    has none), without reading any variable."""
    import netCDF4  # reads netCDF-3 too (no groups), which h5netcdf refuses

    with NETCDF_LOCK:
        try:
            with netCDF4.Dataset(path) as nc:
                return list(nc.groups)
        except (OSError, RuntimeError) as err:
            raise RiclError(
                f"file {str(path)!r} cannot be read as netCDF: {reading_error(err)}"
            ) from None


def write_datatree(tree: xr.DataTree, path: str | Path) -> Path:
    """Write a DataTree (a fit) atomically, every group compressed (``compression_encoding``)."""
    encoding = {
        node.path: compression_encoding(node.to_dataset(inherit=False)) for node in tree.subtree
    }
    with atomic_path(path) as tmp, NETCDF_LOCK:
        tree.to_netcdf(tmp, encoding=encoding)
    return Path(path)


def load_datatree(path: str | Path) -> xr.DataTree:
    """Read a whole DataTree file into memory (and close it), safely across threads; a file
    whose declared sizes exceed this machine's memory is refused (``check_declared_size``)."""
    check_declared_size(path)
    with NETCDF_LOCK:
        with xr.open_datatree(path) as tree:
            return tree.load()


# ---------------------------------------------------------------------------- declared sizes


def physical_memory() -> int:
    """Bytes of physical memory of this machine (what every memory refusal compares with)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_declared_size(path: str | Path, *, available: int | None = None) -> None:
    """Refuse a file whose header declares variables larger than this machine's memory.

    The one guard on the sizes files declare, run before xarray allocates anything: a
    file of a few KB can declare a dimension of 2^34 (xarray reads a coordinate whole when
    it opens the file, and a reader computes each variable). Only the header is read. A
    file that is not netCDF passes, for the reader to name.

    Raises
    ------
    RiclError
        One line naming the file, its largest variable and dimension, and both sizes.
    """
    check_file_name(path)
    declared = _declared_variables(Path(path))
    if not declared:
        return
    available = physical_memory() if available is None else available
    total = sum(nbytes for _, _, nbytes in declared)
    if total <= available:
        return
    name, sizes, nbytes = max(declared, key=lambda v: v[2])
    dim = max(sizes, key=sizes.get)
    raise RiclError(
        f"file {str(path)!r} declares {dim} = {sizes[dim]} (variable {name!r}, about "
        f"{nbytes / 1e9:.3g} GB); its variables need about {total / 1e9:.3g} GB and this "
        f"machine has {available / 1e9:.3g} GB; allowed: files whose variables fit in memory"
    )


def _declared_variables(path: Path) -> list[tuple[str, dict[str, int], int]]:
    """(name, {dim: size}, bytes) of every variable in every group, from the header alone;
    [] when the file cannot be read as netCDF-4 or netCDF-3."""
    with NETCDF_LOCK, _header(path) as f:
        return [] if f is None else _group_variables(f)


def netcdf_attributes(path: str | Path) -> dict | None:
    """The global attributes of a netCDF file, from its header alone; None when it cannot
    be read as netCDF-4 or netCDF-3."""
    with NETCDF_LOCK, _header(path) as f:
        if f is None:
            return None
        return (
            {name: f.getncattr(name) for name in f.ncattrs()} if _is_netcdf3(f) else dict(f.attrs)
        )


_HEADER_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError)


@contextmanager
def _header(path: str | Path):
    """The file opened for its header: h5netcdf for HDF5 (the engine of open_netcdf, so no
    second HDF5 library opens it), netCDF4 for netCDF-3; None when neither reads it."""
    import h5netcdf
    import h5py
    import netCDF4

    opened = None
    try:
        if h5py.is_hdf5(path):
            opened = h5netcdf.File(path, "r")
        else:
            opened = netCDF4.Dataset(path)
    except _HEADER_ERRORS:
        pass  # not netCDF, or a damaged header: the reader names the file
    try:
        yield opened
    finally:
        if opened is not None:
            opened.close()


def _is_netcdf3(f) -> bool:
    return hasattr(f, "ncattrs")


def _group_variables(group) -> list[tuple[str, dict[str, int], int]]:
    found = []
    for name, variable in group.variables.items():
        sizes = dict(zip(variable.dimensions, variable.shape, strict=True))
        itemsize = getattr(variable.dtype, "itemsize", 8)  # strings: a pointer each
        found.append((name, sizes, itemsize * math.prod(variable.shape)))
    for child in group.groups.values():
        found += _group_variables(child)
    return found


# ---------------------------------------------------------------------------- locks

LOCK_NAME = ".ricl-sweep.lock"  # one writer per folder: ricl sweep, train, data and run


def make_out_folder(out: str | Path) -> None:
    """Create the output folder of a stage (parents included) and refuse it, in one line,
    when it is a file or nothing can be written in it."""
    out = Path(out)
    check_file_name(out)  # before the folder is made: its files could not be written
    if out.exists() and not out.is_dir():
        raise RiclError(f"--out {str(out)!r} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise RiclError(f"cannot write to output folder {str(out)!r}: {err.strerror}") from None


@contextmanager
def folder_lock(folder: str | Path, command: str):
    """Hold ``FOLDER/.ricl-sweep.lock`` for the block; refuse if a live command holds it.

    The lock names its holder (command, host, pid, start time). A lock whose holder is a
    dead process of this host is stale and taken over; two processes that find the same
    stale lock cannot both take it (see ``_take_over``).

    Raises
    ------
    RiclError
        One line naming the holder and the lock file.
    """
    with _held(Path(folder) / LOCK_NAME, command, f"output folder {str(folder)!r}") as path:
        yield path


@contextmanager
def output_lock(path: str | Path, command: str):
    """Hold ``.NAME.ricl-lock`` beside the output file or folder ``path`` for the block: one
    writer per output, whatever the command (``ricl fit -o``, the behaviour file, a report
    folder). Refuses, as ``folder_lock`` does, if a live command holds it.
    """
    path = Path(path)
    check_file_name(path)
    lock = path.with_name(f".{path.name}.ricl-lock")
    with _held(lock, command, f"output {str(path)!r}"):
        yield path


@contextmanager
def _held(path: Path, command: str, what: str):
    """Take the lock file ``path`` for ``command`` (``what`` names the output in refusals);
    remove it after the block."""
    holder = {
        "command": command,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _take_lock(path, holder, what)
    try:
        yield path
    finally:
        if _read_lock(path) == holder:  # never remove a lock someone else took over
            path.unlink(missing_ok=True)


def check_no_live_writer(folder: str | Path, reader: str) -> None:
    """Refuse to read ``folder`` while a live command holds its lock (or its parent's, the
    folder of a ``ricl run``): its files are still being written."""
    for where in (Path(folder), Path(folder).parent):
        path = where / LOCK_NAME
        holder = _read_lock(path) if path.exists() else None
        if holder is not None and not _is_stale(holder):
            raise RiclError(
                f"{reader}: {str(folder)!r} is being written by `{holder.get('command')}` "
                f"(host {holder.get('host')}, pid {holder.get('pid')}, lock {str(path)!r}); "
                "wait for it to finish"
            )


def _take_lock(path: Path, holder: dict, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RiclError(
            f"cannot create output folder {str(path.parent)!r}: {err.strerror}"
        ) from None
    # Later passes follow a takeover, or wait out another process's: one that is taking a
    # stale lock over (its claim exists) or has just created the lock and not yet written
    # it (unreadable). Both last milliseconds; 50 passes of 20 ms bound the wait at 1 s.
    for _ in range(50):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = _read_lock(path)
            if current is not None and not _is_stale(current):
                raise RiclError(_refusal(path, current, what)) from None
            if current is None or not _take_over(path, current, holder):
                time.sleep(0.02)
            continue
        except OSError as err:
            raise RiclError(
                f"cannot write to output folder {str(path.parent)!r}: {err.strerror}"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(holder, f)
        return
    raise RiclError(_refusal(path, _read_lock(path), what))


def _take_over(path: Path, stale: dict, holder: dict) -> bool:
    """Remove the stale lock ``stale`` at ``path``, race-free; whether it was removed.

    Only the process that creates ``LOCK.takeover`` (O_EXCL) may remove the lock, and only
    after reading it again: a second process that saw the same stale lock either fails to
    create the claim or, once the first is done, reads the first's live lock and refuses.
    A claim left by a dead process is itself stale and removed.
    """
    claim = path.with_name(path.name + ".takeover")
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read_lock(claim)
            if other is not None and _is_stale(other) and _read_lock(claim) == other:
                claim.unlink(missing_ok=True)
                continue
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(holder, f)
        try:
            if _read_lock(path) == stale:
                path.unlink(missing_ok=True)
                return True
            return False
        finally:
            claim.unlink(missing_ok=True)
    return False


def _refusal(path: Path, holder: dict | None, what: str) -> str:
    if holder is None:
        return (
            f"{what} is locked by an unreadable lock file {str(path)!r}; if no ricl command "
            "is writing there, delete it"
        )
    command = holder.get("command", "ricl sweep")
    return (
        f"{what} is in use by `{command}` (host {holder.get('host')}, pid "
        f"{holder.get('pid')}, since {holder.get('started')}); wait for it to finish or, if "
        f"it is gone, delete {str(path)!r}"
    )


def _read_lock(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _is_stale(holder: dict) -> bool:
    """A holder is stale only when it is a process on this host that no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    return not _alive(holder["pid"]) if holder["pid"] != os.getpid() else False

"""Atomic writes: a killed writer's temporary file is removed by the next write of the same
target; a live writer's, another host's and unrelated files are left alone. The folder
lock: one writer per folder, and a stale lock is taken over by exactly one process.
Compressed netCDF writes: lossless, chunked per checkpoint, smaller than plain files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import netCDF4
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


@pytest.mark.slow
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


def _run_like(rng, num_checkpoints=6) -> xr.Dataset:
    """A predictions-like dataset: softmax probabilities over outcomes, tokens, a small
    variable and a string coordinate."""
    logits = rng.normal(size=(num_checkpoints, 2, 16, 32, 8)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return xr.Dataset(
        {
            "transformer_prediction": (
                ("checkpoint", "split", "sequence", "position", "outcome"),
                probs,
            ),
            "tokens": (("split", "sequence", "position"), rng.integers(0, 8, (2, 16, 32))),
            "transformer_loss": (("checkpoint", "split"), rng.random((num_checkpoints, 2))),
        },
        coords={"checkpoint": 20 * np.arange(1, num_checkpoints + 1), "split": ["id", "ood"]},
        attrs={"setting": "categorical-sequence"},
    )


def test_written_files_read_back_bit_for_bit(tmp_path):
    data = _run_like(np.random.default_rng(0))
    path = io.write_netcdf(data, tmp_path / "run.nc")
    back = io.load_netcdf(path)
    xr.testing.assert_identical(back, data)
    for name in data.variables:
        assert back[name].dtype == data[name].dtype
    # written again from what was read (the training loop's append): unchanged too
    xr.testing.assert_identical(io.load_netcdf(io.write_netcdf(back, tmp_path / "again.nc")), data)


def test_large_numeric_variables_are_compressed_ten_checkpoints_per_chunk(tmp_path):
    data = _run_like(np.random.default_rng(1), num_checkpoints=12)
    path = io.write_netcdf(data, tmp_path / "run.nc")
    with netCDF4.Dataset(path) as stored:
        prediction = stored["transformer_prediction"]
        assert prediction.filters()["zlib"] and prediction.filters()["shuffle"]
        assert prediction.chunking() == [10, 2, 16, 32, 8]  # as fits/runs.py reads them
        assert stored["tokens"].filters()["zlib"]
        assert stored["transformer_loss"].chunking() == "contiguous"  # 192 bytes: left alone


def test_compression_shrinks_redundant_values(tmp_path):
    data = _run_like(np.random.default_rng(2))
    # early checkpoints of a real run: near-uniform predictions with few distinct values
    data["transformer_prediction"][:] = np.float32(0.125)
    plain = tmp_path / "plain.nc"
    data.to_netcdf(plain)
    compressed = io.write_netcdf(data, tmp_path / "compressed.nc")
    assert compressed.stat().st_size < 0.2 * plain.stat().st_size


def test_chunks_stay_under_the_limit_along_the_leading_dims():
    big = xr.Variable(("chain", "draw", "cell"), np.zeros((4, 1000, 2000), np.float32))  # 32 MB
    chunks = io._chunks(big)
    assert chunks == (1, 524, 2000)  # 4 MiB // (2000 * 4 bytes) draws
    assert 4 * np.prod(chunks) <= 4 * 2**20
    small = xr.Variable(("checkpoint", "split"), np.zeros((40, 2)))
    assert io._chunks(small) == (10, 2)
    per_checkpoint = xr.Variable(("checkpoint", "sequence"), np.zeros((40, 2**18)))  # 2 MiB
    assert io._chunks(per_checkpoint) == (2, 2**18)


def test_encoding_keeps_the_stored_dtype_of_a_read_file(tmp_path):
    data = _run_like(np.random.default_rng(3))
    data["tokens"].encoding["dtype"] = "int16"  # as a file written elsewhere might have it
    encoding = io.compression_encoding(data)
    assert encoding["tokens"]["dtype"] == "int16"
    assert "transformer_loss" not in encoding  # below the size worth a chunk index
    assert "split" not in encoding  # strings are not compressed
    back = io.load_netcdf(io.write_netcdf(data, tmp_path / "run.nc"))
    np.testing.assert_array_equal(back.tokens.values, data.tokens.values)


def test_one_reader_opens_lazily_and_names_a_bad_file_in_one_line(tmp_path):
    data = _run_like(np.random.default_rng(1))
    path = io.write_netcdf(data, tmp_path / "run.nc")
    with io.open_netcdf(path, chunks={}) as lazy:
        assert lazy["transformer_prediction"].chunks is not None  # dask, nothing read yet
        np.testing.assert_array_equal(
            lazy["transformer_prediction"], data["transformer_prediction"]
        )
    text = tmp_path / "notes.nc"
    text.write_text("not netCDF\n")
    with pytest.raises(io.RiclError) as caught:
        io.open_netcdf(text)
    assert str(caught.value).startswith(f"file {str(text)!r} cannot be read: ")
    assert "\n" not in str(caught.value)
    with pytest.raises(io.RiclError, match="cannot be read as netCDF"):
        io.netcdf_groups(text)


def test_a_datatree_reads_back_bit_for_bit_and_lists_its_groups(tmp_path):
    rng = np.random.default_rng(2)
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset({"alpha": (("chain", "draw"), rng.random((2, 5)))}),
            "observed_data": xr.Dataset({"w": ("cell", rng.random(4000).astype(np.float32))}),
        }
    )
    tree.attrs["measure"] = "barycentric"
    path = io.write_datatree(tree, tmp_path / "fit.nc")
    back = io.load_datatree(path)
    xr.testing.assert_identical(back, tree)
    assert back["observed_data"]["w"].dtype == np.float32
    assert sorted(io.netcdf_groups(path)) == ["observed_data", "posterior"]
    assert (
        io.netcdf_groups(io.write_netcdf(xr.Dataset({"x": ("a", [1.0])}), tmp_path / "d.nc")) == []
    )


@pytest.mark.parametrize("offset", [0, 64, 200, 400, 800, 1200, 2000, 4000])
def test_a_bit_flipped_file_is_one_line_naming_it(tmp_path, offset):
    # Issue 24, item 9: a flipped header byte raised RuntimeError 'Link iteration failed'.
    path = write_netcdf(_run_like(np.random.default_rng(2)), tmp_path / "run.nc")
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    for read in (io.open_netcdf, io.read_netcdf):
        try:
            read(path)
        except RiclError as err:
            assert str(path) in str(err) and "\n" not in str(err)


def _huge_header(path, *, coordinate: bool, group: str | None = None):
    """A file of a few KB whose header declares ``sequence`` = 2^40 (nothing written)."""
    with netCDF4.Dataset(path, "w") as nc:
        where = nc.createGroup(group) if group else nc
        where.createDimension("sequence", 2**40)
        name = "sequence" if coordinate else "strategy_prediction"
        where.createVariable(name, "f8", ("sequence",), chunksizes=(1024,))
    return path


@pytest.mark.parametrize(
    ("coordinate", "group"), [(True, None), (False, None), (False, "posterior")]
)
def test_a_file_declaring_a_huge_dimension_is_refused_before_any_allocation(
    tmp_path, coordinate, group
):
    # Issue 35, item 1: a 28 KB file declaring sequence = 2^34 was a MemoryError traceback.
    path = _huge_header(tmp_path / "huge.nc", coordinate=coordinate, group=group)
    assert path.stat().st_size < 100_000
    readers = (io.open_netcdf, io.load_netcdf, io.read_netcdf, io.load_datatree)
    for read in readers:
        with pytest.raises(RiclError) as caught:
            read(path)
        message = str(caught.value)
        assert message.startswith(f"file {str(path)!r} declares sequence = 1099511627776 ")
        assert "allowed: files whose variables fit in memory" in message and "\n" not in message
    io.check_declared_size(tmp_path / "missing.nc")  # not netCDF: the reader names it


def test_a_file_name_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path):
    # Issue 35, item 13: --out $'bad\xffname' was a UnicodeEncodeError traceback.
    bad = tmp_path / os.fsdecode(b"bad\xffname")
    for write in (
        lambda: io.write_netcdf(xr.Dataset({"x": ("a", [1.0])}), bad / "run.nc"),
        lambda: io.make_out_folder(bad),
    ):
        with pytest.raises(RiclError, match=r"^file name .* is not valid UTF-8; allowed: UTF-8"):
            write()
    assert not list(tmp_path.iterdir())


def test_one_writer_per_output_file(tmp_path):
    # Issue 35, item 9: two `ricl fit -o same.nc` both wrote; the second silently replaced
    # the first. The output's lock names its live holder; it goes once the block ends.
    out = tmp_path / "fit.nc"
    lock = tmp_path / ".fit.nc.ricl-lock"
    lock.write_text(
        json.dumps({"command": "ricl fit", "host": socket.gethostname(), "pid": os.getppid()})
    )
    with pytest.raises(RiclError) as caught:
        with io.output_lock(out, "ricl fit"):
            pass
    assert str(caught.value).startswith(f"output {str(out)!r} is in use by `ricl fit` (host ")
    lock.unlink()
    with io.output_lock(out, "ricl fit"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_an_interrupt_a_callback_swallowed_keeps_the_old_file(tmp_path):
    # Issue 35, item 10: SIGINT during a fit's write was lost in JAX's gc callback and the
    # fit replaced the old file, exit 0. The flag the handler sets stops the rename.
    from rational_icl.errors import INTERRUPTED

    path = tmp_path / "fit.nc"
    path.write_text("old")
    INTERRUPTED.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            with io.atomic_path(path) as tmp:
                tmp.write_text("new")
    finally:
        INTERRUPTED.clear()
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]


def test_an_interrupt_anywhere_in_a_command_is_one_line(monkeypatch, capsys):
    # Issue 35, item 10: Ctrl-C while the commands were imported was a traceback (rc 130),
    # and one a callback swallowed ended in exit 0.
    from rational_icl.cli import main as entry
    from rational_icl.errors import INTERRUPTED

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "build_parser", interrupted)
    assert entry.main(["fit"]) == 130
    # the command is named before the parser is built (an option may refuse while parsing)
    assert capsys.readouterr().err == "ricl fit: interrupted; finished files are kept\n"
    monkeypatch.undo()

    def swallowed(args):
        INTERRUPTED.set()  # as the SIGINT handler does, before its exception was lost
        return 0

    monkeypatch.setattr("rational_icl.cli.compare.run", swallowed)
    assert entry.main(["compare", "x.nc"]) == 130
    assert capsys.readouterr().err == "ricl compare: interrupted; finished files are kept\n"
    # the flag is the command's: the process's next file write is not interrupted
    assert not INTERRUPTED.is_set()

"""Issue 24: run files that are well formed but wrong are refused in one line naming the
file (items 2, 6, 7, 8, 9, 12)."""

from __future__ import annotations

import numpy as np
import pytest

from rational_icl.errors import RiclError
from rational_icl.fits import open_runs
from rational_icl.fits.validate import check_memory
from tests.fits.test_runs import _random_run, _write


def _folder(tmp_path, make_run, mutate=lambda ds: ds, **kw):
    folder = tmp_path / "sweep"
    _write(folder, _random_run(make_run, 2), "good_D2.nc")
    _write(folder, mutate(_random_run(make_run, 8, **kw)), "bad_D8.nc")
    return folder


def _refused(folder) -> str:
    with pytest.raises(RiclError) as info:
        open_runs(folder)
    message = str(info.value)
    assert "\n" not in message and "bad_D8.nc" in message, message
    return message


def _set(var, change):
    def mutate(ds):
        values = ds[var].values.copy()
        ds[var] = ds[var].copy(data=change(values))
        return ds

    return mutate


def _first(value):
    def change(values):
        values.flat[0] = value
        return values

    return change


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_set("transformer_prediction", _first(np.inf)), "holds an infinite value"),
        (_set("transformer_prediction", lambda v: -v), "holds a negative probability"),
        (_set("transformer_prediction", lambda v: 3 * v), "do not sum to 1"),
        (_set("transformer_prediction", lambda v: (v > 0.5).astype(np.int64)), "dtype int64"),
        (_set("strategy_loss", _first(-0.5)), "strategy_loss [-0.5"),
        (_set("strategy_complexity", _first(1e300)), "strategy_complexity [1e+300"),
        (lambda ds: ds.assign_attrs(num_tasks="four"), "attribute num_tasks='four'"),
        (lambda ds: ds.assign_attrs(mlp_expansion_factor="x"), "mlp_expansion_factor='x'"),
    ],
    ids=["inf", "negative", "x3", "integer", "loss", "complexity", "num_tasks", "mlp"],
)
def test_bad_values_and_attribute_types_are_refused(tmp_path, make_run, mutate, words):
    assert words in _refused(_folder(tmp_path, make_run, mutate))


def test_runs_of_two_specs_in_one_folder_are_refused_naming_both(tmp_path, make_run):
    # item 2: hidden_size 16 and 32 were pooled as one experiment
    message = _refused(_folder(tmp_path, make_run, hidden_size=16))
    assert "good_D2.nc" in message and "hidden_size=16 vs 32" in message


def test_unfinished_runs_are_recorded(tmp_path, make_run):
    runs = open_runs(_folder(tmp_path, make_run))
    assert "bad_D8.nc (step 300 of 4000)" in runs.attrs["unfinished_runs"]


def test_declared_sizes_past_this_machines_memory_are_refused(tmp_path, make_run):
    folder = _folder(tmp_path, make_run)
    runs = [(p, _random_run(make_run, 2)) for p in sorted(folder.glob("*.nc"))]
    with pytest.raises(RiclError, match=r"need about .* GB of memory, this machine has"):
        check_memory(runs, available=1000)


def test_a_corrupt_chunk_is_one_line_naming_the_folder(tmp_path, make_run):
    folder = tmp_path / "sweep"
    _write(folder, _random_run(make_run, 2), "good_D2.nc")
    big = _random_run(make_run, 8, num_checkpoints=400)
    path = folder / "bad_D8.nc"
    from rational_icl.io import write_netcdf

    write_netcdf(big, path)  # compressed: a flipped byte breaks the zlib stream
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RiclError) as info:
        open_runs(folder)
    assert "\n" not in str(info.value) and "cannot be read" in str(info.value)

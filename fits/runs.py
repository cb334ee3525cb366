"""Read a folder of predictions files (docs/files.md §1) into one lazy, validated dataset.

A sweep is a folder of run files, one per trained transformer. ``open_runs`` finds every
``*.nc`` below the folder that holds ``strategy_prediction``, checks each one (one line per
problem, naming the file), and combines them along a new ``num_tasks`` dimension, and along
``mlp_expansion_factor``, ``context_length``, ``num_dims`` and ``seed`` where those vary
between files (a configuration grid; training seeds are replicates of one
configuration). Arrays stay lazy (dask), so a large sweep is not loaded into memory.

Nothing here imports torch: files are read with xarray only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import validate
from rational_icl.fits.identity import RUNS_IDENTITY, runs_identity
from rational_icl.io import open_netcdf
from rational_icl.vocabulary import CONFIG_DIMS, WEIGHT_STRATEGIES

# Configuration attributes that become dimensions when they differ between run files. The
# training seed is one of them: runs of several seeds are replicates, fitted together.
# (rational_icl.vocabulary.CONFIG_DIMS)

# The variables a fit needs, with their dims in canonical order.
REQUIRED_VARIABLES = {
    "strategy_prediction": ("strategy", "split", "sequence", "position", "outcome"),
    "transformer_prediction": ("checkpoint", "split", "sequence", "position", "outcome"),
    "transformer_loss": ("checkpoint", "split"),
    "strategy_loss": ("strategy",),
    "strategy_complexity": ("strategy",),
}
REQUIRED_STRATEGIES = WEIGHT_STRATEGIES
REQUIRED_ATTRIBUTES = ("setting", "num_tasks", "mlp_expansion_factor", "context_length", "num_dims")

# Training attributes that must agree between the runs of one sweep.
_SHARED_ATTRIBUTES = ("setting", "batch_size", "learning_rate", "warmup_steps", "max_steps")
# Spec grid fields that open_runs does not stack: runs differing only in these collide.
_UNSTACKED_GRID_ATTRIBUTES = (
    "num_layers",
    "hidden_size",
    "num_heads",
    "position_encoding",
)
# Dimensions of per-run data that cannot be stacked (their length is the run's D, or its log).
_RUN_ONLY_DIMS = ("task", "step")
# Checkpoints per dask chunk: bounds memory per task while keeping reads contiguous.
_CHECKPOINT_CHUNK = 10


def open_runs(folder: str | Path, *, check_values: bool = True) -> xr.Dataset:
    """Open every run file below ``folder`` as one lazy dataset.

    Parameters
    ----------
    folder : str or Path
        A folder searched recursively for ``*.nc`` files. Files without
        ``strategy_prediction`` (a ``fit.nc``, say) are ignored.
    check_values : bool, default True
        Also scan the prediction arrays for NaN (one lazy pass over the data). Small
        variables are always checked.

    Returns
    -------
    xr.Dataset
        Dims ``num_tasks``, ``checkpoint``, ``split``, ``sequence``, ``position``,
        ``outcome``, ``strategy`` (plus ``feature``/``context`` where the setting has them),
        and one dim per entry of ``CONFIG_DIMS`` that varies between files (see
        :func:`config_dims`). Every per-run variable gains those dims, e.g.
        ``transformer_prediction`` (num_tasks, [config...,] checkpoint, split, sequence,
        position, outcome) and ``strategy_loss`` (num_tasks, [config...,] strategy).
        Variables along ``task`` or ``step`` (training tasks, training loss) are dropped.
        Coordinate ``source_file`` names the file of each run. Where ``context_length`` or
        ``num_dims`` vary, shorter runs are padded with NaN along ``position``/``outcome``;
        a grid cell without a file is all NaN. Attributes are those equal in every file;
        non-varying configuration values stay scalar attributes.

    Raises
    ------
    RiclError
        One line naming the file and the problem: no run files, missing variables or
        attributes, wrong dims, NaN, a single checkpoint, a single num_tasks value, mixed
        settings, checkpoints that differ between runs, two files for the same run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RiclError(f"runs folder {str(folder)!r} does not exist or is not a folder")
    runs = [(path, ds) for path in sorted(folder.rglob("*.nc")) if (ds := _open(path)) is not None]
    if not runs:
        raise RiclError(
            f"no run files in {str(folder)!r}: no *.nc file below it holds strategy_prediction"
        )
    _check_before_reading(runs)
    runs = [(path, _checked(ds, path)) for path, ds in runs]
    if check_values:
        _check_no_nan(runs)
        validate.check_values(runs)
    _check_consistent(runs)
    validate.check_same_spec(runs)
    return _with_unfinished(_combine(runs), runs)


def _check_before_reading(runs: list[tuple[Path, xr.Dataset]]) -> None:
    """Attribute types and declared sizes, before any array is made from them."""
    for path, ds in runs:
        validate.check_attribute_types(ds, path)
    validate.check_memory(runs)


def _with_unfinished(combined: xr.Dataset, runs) -> xr.Dataset:
    """Attribute ``unfinished_runs``: 'FILE (step S of M)' of runs stopped before max_steps;
    and ``runs_identity``, which behaviour and fit files carry on (fits/identity.py)."""
    combined.attrs[RUNS_IDENTITY] = runs_identity([ds for _, ds in runs])
    found = validate.unfinished_runs(runs)
    if found:
        combined.attrs["unfinished_runs"] = "; ".join(
            f"{str(path)} (step {last} of {total})" for path, last, total in found
        )
    return combined


def config_dims(runs: xr.Dataset) -> tuple[str, ...]:
    """The configuration dims (of ``CONFIG_DIMS``) that ``runs`` varies along, in order."""
    return tuple(d for d in CONFIG_DIMS if d in runs.dims)


# ---------------------------------------------------------------------------- one file


def _open(path: Path) -> xr.Dataset | None:
    """The file as a lazy dataset, or None when it is not a run file."""
    ds = open_netcdf(path, chunks={})
    if "strategy_prediction" not in ds:
        ds.close()
        return None
    if "checkpoint" in ds.dims:
        ds = ds.chunk({"checkpoint": _CHECKPOINT_CHUNK})
    return ds


def _checked(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """Validate one run file; return it with required variables in canonical dim order."""
    name = str(path)
    missing = [v for v in REQUIRED_VARIABLES if v not in ds]
    if "transformer_prediction" in missing:
        raise RiclError(
            f"file {name!r} has strategy predictions but no transformer_prediction (a "
            "`ricl data` file, or a run not trained yet); train it or move it out of the folder"
        )
    if missing:
        raise RiclError(
            f"file {name!r} is missing variable(s) {', '.join(missing)}; a run file needs "
            f"{', '.join(REQUIRED_VARIABLES)}"
        )
    for var, dims in REQUIRED_VARIABLES.items():
        if set(ds[var].dims) != set(dims) or len(ds[var].dims) != len(dims):
            raise RiclError(
                f"file {name!r}: variable {var!r} has dims {ds[var].dims}; expected {dims}"
            )
        ds[var] = ds[var].transpose(*dims)
    missing_attrs = [a for a in REQUIRED_ATTRIBUTES if a not in ds.attrs]
    if missing_attrs:
        raise RiclError(f"file {name!r} is missing global attribute(s) {', '.join(missing_attrs)}")
    strategies = [str(s) for s in ds["strategy"].values] if "strategy" in ds.coords else []
    absent = [s for s in REQUIRED_STRATEGIES if s not in strategies]
    if absent:
        raise RiclError(
            f"file {name!r}: strategy coordinate {strategies} lacks {', '.join(absent)}"
        )
    if "checkpoint" not in ds.coords:
        raise RiclError(f"file {name!r}: dim 'checkpoint' has no coordinate (training steps)")
    steps = ds["checkpoint"].values
    if steps.size < 2:
        raise RiclError(
            f"file {name!r} has a single checkpoint (step {steps[0]}); a fit needs at least 2"
        )
    if np.any(np.diff(steps) <= 0):
        raise RiclError(f"file {name!r}: checkpoint steps are not increasing: {steps.tolist()}")
    for var in ("transformer_loss", "strategy_loss", "strategy_complexity"):
        if bool(ds[var].isnull().any()):
            raise RiclError(f"file {name!r}: variable {var!r} contains NaN")
    validate.check_small_values(ds, path)
    # Dims without a coordinate get 0..n-1, so runs of different lengths align by index.
    for dim in ("sequence", "position", "outcome", "feature", "context"):
        if dim in ds.dims and dim not in ds.coords:
            ds = ds.assign_coords({dim: np.arange(ds.sizes[dim])})
    return ds.drop_dims([d for d in _RUN_ONLY_DIMS if d in ds.dims])


def _check_no_nan(runs: list[tuple[Path, xr.Dataset]]) -> None:
    """One dask pass over every file's predictions, all files at once."""
    flags = [
        ds[var].isnull().any().data
        for _, ds in runs
        for var in REQUIRED_VARIABLES
        if ds[var].ndim > 2
    ]
    names = [(path, var) for path, ds in runs for var in REQUIRED_VARIABLES if ds[var].ndim > 2]
    computed = validate.read_all(path for path, _ in names)(*flags)
    for (path, var), has_nan in zip(names, computed, strict=True):
        if has_nan:
            raise RiclError(f"file {str(path)!r}: variable {var!r} contains NaN")


# ---------------------------------------------------------------------------- across files


def _check_consistent(runs: list[tuple[Path, xr.Dataset]]) -> None:
    first_path, first = runs[0]
    for path, ds in runs[1:]:
        for attr in _SHARED_ATTRIBUTES:
            a, b = first.attrs.get(attr), ds.attrs.get(attr)
            if not _same(a, b):
                problem = "mixed settings" if attr == "setting" else f"mixed {attr}"
                raise RiclError(
                    f"{problem}: file {str(path)!r} has {attr}={_plain(b)!r} but "
                    f"{str(first_path)!r} has {attr}={_plain(a)!r}"
                )
        for coord in ("checkpoint", "split", "strategy"):
            if not np.array_equal(first[coord].values, ds[coord].values):
                raise RiclError(
                    f"{coord} values differ between runs: file {str(path)!r} has "
                    f"{ds[coord].values.tolist()} but {str(first_path)!r} has "
                    f"{first[coord].values.tolist()}"
                )
        if ds.sizes["sequence"] != first.sizes["sequence"]:
            raise RiclError(
                f"file {str(path)!r} has {ds.sizes['sequence']} sequences but "
                f"{str(first_path)!r} has {first.sizes['sequence']}"
            )
    seen: dict[tuple, tuple[Path, xr.Dataset]] = {}
    for path, ds in runs:
        key = _run_key(ds)
        if key in seen:
            other_path, other = seen[key]
            labels = zip(("num_tasks", *CONFIG_DIMS), key, strict=True)
            differ = [
                f"{a}={_plain(other.attrs.get(a))!r} vs {_plain(ds.attrs.get(a))!r}"
                for a in _UNSTACKED_GRID_ATTRIBUTES
                if not _same(other.attrs.get(a), ds.attrs.get(a))
            ]
            why = (
                f"; they differ in {', '.join(differ)}, which is not stacked: put them in "
                "separate folders"
                if differ
                else ""
            )
            raise RiclError(
                f"files {str(other_path)!r} and {str(path)!r} are the same run "
                f"({', '.join(f'{k}={v}' for k, v in labels)}){why}"
            )
        seen[key] = (path, ds)
    values = sorted({int(ds.attrs["num_tasks"]) for _, ds in runs})
    if len(values) < 2:
        raise RiclError(
            f"all {len(runs)} run file(s) have num_tasks={values[0]} (e.g. "
            f"{str(first_path)!r}); a fit needs at least 2 num_tasks values"
        )


def _run_key(ds: xr.Dataset) -> tuple:
    return (int(ds.attrs["num_tasks"]), *(_scalar(ds.attrs.get(d)) for d in CONFIG_DIMS))


def _scalar(value):
    return np.asarray(value).item()


def _plain(value):
    """An attribute as a plain Python value, for messages."""
    return None if value is None else np.asarray(value).tolist()


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(np.asarray(a), np.asarray(b))


def _combine(runs: list[tuple[Path, xr.Dataset]]) -> xr.Dataset:
    """Stack runs along ``run``, then unstack into num_tasks (x varying config dims)."""
    keys = [_run_key(ds) for _, ds in runs]
    varying = [d for i, d in enumerate(CONFIG_DIMS) if len({k[i + 1] for k in keys}) > 1]
    stacked = []
    for (path, ds), key in zip(runs, keys, strict=True):
        labels = dict(zip(("num_tasks", *CONFIG_DIMS), key, strict=True))
        coords = {"source_file": ("run", [str(path)])}
        coords |= {dim: ("run", [labels[dim]]) for dim in ("num_tasks", *varying)}
        stacked.append(ds.expand_dims("run").assign_coords(coords))
    combined = xr.concat(
        stacked,
        dim="run",
        data_vars="all",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    if varying:
        combined = combined.set_index(run=["num_tasks", *varying]).unstack("run")
    else:
        combined = combined.swap_dims(run="num_tasks")
    combined = combined.sortby(["num_tasks", *varying])
    grid = ("num_tasks", *varying)
    for var in combined.data_vars:
        combined[var] = combined[var].transpose(*grid, ...)
    # A grid cell without a file has no source: "" rather than NaN, so the coord stays text.
    source = combined["source_file"].fillna("").astype(str).transpose(*grid)
    combined = combined.assign_coords(source_file=source)
    for attr in ("num_tasks", "created", *varying):
        combined.attrs.pop(attr, None)
    return combined

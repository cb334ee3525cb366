"""Checks of run files beyond their layout (``fits/runs.py`` checks that): attribute types,
prediction values, declared sizes against this machine's memory, runs of different
specs in one folder, and unfinished runs. Each refusal is a one-line RiclError naming the
file.

Nothing here imports torch: files are read with xarray only.
"""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.io import physical_memory

# Attributes that must be numbers (they become coordinates, or select runs).
_NUMERIC_ATTRIBUTES = ("num_tasks", "mlp_expansion_factor", "context_length", "num_dims")
_INTEGER_ATTRIBUTES = ("num_tasks", "context_length", "num_dims")
# Model and training attributes that runs of one folder share: a folder holding two values
# is two specs' runs. (``seed`` is left to runs.py; the CONFIG_DIMS stack as a grid.)
SAME_SPEC_ATTRIBUTES = (
    "num_layers",
    "hidden_size",
    "num_heads",
    "position_encoding",
    "regression_tokens",
    "weight_decay",
    "lr_schedule",
    "num_checkpoints",
    "grad_clip",
    "precision",
    "noise_variance",
    "within_class_variance",
    "prior",
)
# Probabilities may be off by float32 rounding, not more.
_SUM_TOLERANCE = 1e-3
# K_Q in bits above this is not a description length (a crafted 1e300 overflows SciPy).
MAX_COMPLEXITY_BITS = 1e12


def check_attribute_types(ds: xr.Dataset, path: Path) -> None:
    """Refuse a configuration attribute that is not a number (e.g. num_tasks = "four")."""
    for name in _NUMERIC_ATTRIBUTES:
        if name not in ds.attrs:
            continue  # runs.py names missing attributes
        value = np.asarray(ds.attrs[name])
        if value.ndim != 0 or value.dtype.kind not in "iuf" or not np.isfinite(value):
            kind = "an integer" if name in _INTEGER_ATTRIBUTES else "a number"
            raise RiclError(
                f"file {str(path)!r}: attribute {name}={_plain(ds.attrs[name])!r} is not a "
                f"finite number; allowed: {kind}"
            )
        if name in _INTEGER_ATTRIBUTES and (value != np.round(value) or value < 1):
            raise RiclError(
                f"file {str(path)!r}: attribute {name}={_plain(value)!r} is not a positive integer"
            )


def check_small_values(ds: xr.Dataset, path: Path) -> None:
    """Refuse strategy losses and complexities no setting can produce."""
    loss = np.asarray(ds["strategy_loss"].values, dtype=float)
    if not np.all(np.isfinite(loss)) or np.any(loss < 0):
        raise RiclError(
            f"file {str(path)!r}: strategy_loss {loss.tolist()} has a negative or infinite "
            "value; allowed: finite losses >= 0 (nats)"
        )
    complexity = np.asarray(ds["strategy_complexity"].values, dtype=float)
    if not np.all((complexity > 0) & (complexity <= MAX_COMPLEXITY_BITS)):
        raise RiclError(
            f"file {str(path)!r}: strategy_complexity {complexity.tolist()} is out of range; "
            f"allowed: 0 < K <= {MAX_COMPLEXITY_BITS:g} bits"
        )


def value_checks(ds: xr.Dataset) -> dict[str, object]:
    """Lazy flags (dask) of bad prediction values, by the problem each names.

    Infinite values anywhere; for probabilities, also negative entries and rows that do not
    sum to 1. Non-float predictions are refused at once (they are never written so).
    """
    flags = {}
    probabilities = ds.attrs.get("prediction_kind", "probabilities") == "probabilities" and (
        ds.attrs.get("setting") != "linear-regression"
    )
    for var in ("transformer_prediction", "strategy_prediction"):
        values = ds[var]
        if values.dtype.kind != "f":
            flags[f"{var} has dtype {values.dtype}; allowed: floating point"] = True
            continue
        flags[f"{var} holds an infinite value"] = np.isinf(values).any().data
        if probabilities:
            total = values.sum("outcome")
            flags[f"{var} holds a negative probability"] = (values < 0).any().data
            flags[f"{var} holds probabilities that do not sum to 1 over outcome"] = (
                ((abs(total - 1) > _SUM_TOLERANCE) & total.notnull()).any().data
            )
    return flags


def check_values(runs: list[tuple[Path, xr.Dataset]]) -> None:
    """One dask pass over every file's value flags; the first bad one is refused."""
    named = [
        (path, problem, flag) for path, ds in runs for problem, flag in value_checks(ds).items()
    ]
    results = read_all(path for path, _, _ in named)(*(flag for _, _, flag in named))
    for (path, problem, _), bad in zip(named, results, strict=True):
        if bool(bad):
            raise RiclError(f"file {str(path)!r}: variable {problem}")


def read_all(paths):
    """``dask.compute`` whose read errors (a corrupt chunk) become one line naming the
    files the computation reads."""
    names = sorted({str(p) for p in paths})

    def compute(*flags):
        try:
            return dask.compute(*flags)
        except (OSError, RuntimeError) as err:
            where = (
                names[0]
                if len(names) == 1
                else f"one of {len(names)} files in {str(Path(names[0]).parent)!r}"
            )
            raise RiclError(
                f"file {where!r} cannot be read (corrupt?): {_first_line(err)}"
            ) from None

    return compute


def check_memory(runs: list[tuple[Path, xr.Dataset]], *, available: int | None = None) -> None:
    """Refuse files whose declared sizes need more memory than this machine has.

    A fit holds, per run, one coordinate per dim (int64), the strategies' predictions and
    one checkpoint chunk of the transformer's (both float64 after the behaviour measures),
    times a few temporaries; the estimate is a lower bound, like the spec's.
    """
    if available is None:
        available = physical_memory()
    total, largest = 0, (0, None, None)
    for path, ds in runs:
        sizes = dict(ds.sizes)
        sizes["checkpoint"] = min(sizes.get("checkpoint", 1), 10)
        per_file = 8 * sum(sizes.values())
        for var in ("strategy_prediction", "transformer_prediction"):
            if var in ds:
                per_file += 3 * 8 * int(np.prod([sizes[d] for d in ds[var].dims], dtype=float))
        total += per_file
        if per_file > largest[0]:
            dim = max(sizes, key=sizes.get)
            largest = (per_file, path, (dim, sizes[dim]))
    if total > available:
        _, path, (dim, size) = largest
        raise RiclError(
            f"the run files need about {total / 1e9:.3g} GB of memory, this machine has "
            f"{available / 1e9:.3g} GB; largest: file {str(path)!r} with {dim} = {size}"
        )


def check_same_spec(runs: list[tuple[Path, xr.Dataset]]) -> None:
    """Refuse a folder whose runs differ in an attribute that is neither a configuration
    dim nor seed: two specs' runs would be fitted as one (issue 24, item 2)."""
    first_path, first = runs[0]
    for path, ds in runs[1:]:
        for attr in SAME_SPEC_ATTRIBUTES:
            a, b = first.attrs.get(attr), ds.attrs.get(attr)
            if not _same(a, b):
                raise RiclError(
                    f"files {str(first_path)!r} and {str(path)!r} come from different specs: "
                    f"{attr}={_plain(a)!r} vs {_plain(b)!r}, which is not a grid dimension; "
                    "put each spec's runs in its own folder"
                )


def unfinished_runs(runs: list[tuple[Path, xr.Dataset]]) -> list[tuple[Path, int, int]]:
    """(file, last checkpoint step, max_steps) of every run that stopped before max_steps."""
    found = []
    for path, ds in runs:
        max_steps = ds.attrs.get("max_steps")
        if max_steps is None or "checkpoint" not in ds.coords:
            continue
        last = int(ds["checkpoint"].values[-1])
        if last < int(np.asarray(max_steps)):
            found.append((path, last, int(np.asarray(max_steps))))
    return found


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(np.asarray(a), np.asarray(b))


def _plain(value):
    return None if value is None else np.asarray(value).tolist()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

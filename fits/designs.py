"""Held-out designs: which cells a fit leaves out, to be predicted and scored.

Numpy and xarray only (no JAX), so the command line can check a design before it trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError

# Which cells a fit leaves out to be predicted (held_out_cells_of): the authors' last 20% of
# checkpoints and num_tasks values; the checkpoints after a fraction F of max_steps
# (forecast:F); every other num_tasks value (num-tasks); every run of one training seed
# (seed:S).
HELD_OUT_DESIGNS = ("authors", "forecast:F", "num-tasks", "seed:S")


@dataclass(frozen=True)
class HeldOutDesign:
    """A parsed held-out design: its kind and its number (F of forecast, S of seed)."""

    kind: str
    value: float | int | None = None


def held_out_design(text: str) -> HeldOutDesign:
    """Parse ``authors``, ``forecast:F`` (0 < F < 1), ``num-tasks`` or ``seed:S``."""
    kind, _, value = str(text).partition(":")
    allowed = f"allowed: {', '.join(HELD_OUT_DESIGNS)}"
    if kind in ("authors", "num-tasks") and not value:
        return HeldOutDesign(kind)
    try:
        if kind == "forecast" and 0.0 < float(value) < 1.0:
            return HeldOutDesign(kind, float(value))
        if kind == "seed" and int(value) >= 0:
            return HeldOutDesign(kind, int(value))
    except ValueError:
        pass
    hint = {"forecast": " with 0 < F < 1", "seed": " with S a training seed of the runs"}
    raise RiclError(f"held-out design {text!r} is not valid; {allowed}{hint.get(kind, '')}")


def held_out_cells_of(behaviour: xr.Dataset, design: str, fraction: float = 0.8):
    """True for the cells a fit with this held-out ``design`` leaves out to predict.

    ``authors``: :func:`held_out_cells` with ``fraction``; ``forecast:F``: every checkpoint
    after F x max_steps (the runs' ``max_steps`` attribute, else the last checkpoint);
    ``num-tasks``: the 2nd, 4th, ... num_tasks values in increasing order, entirely;
    ``seed:S``: every cell of training seed S (runs with a ``seed`` dim). Dims: a subset of
    (num_tasks, checkpoint, seed); attribute ``design``.
    """
    parsed = held_out_design(design)
    num_tasks, checkpoint = behaviour.num_tasks.values, behaviour.checkpoint.values
    if parsed.kind == "authors":
        held_out = held_out_cells(num_tasks, checkpoint, fraction)
    elif parsed.kind == "forecast":
        held_out = _forecast_cells(checkpoint, parsed.value, behaviour.attrs.get("max_steps"))
    elif parsed.kind == "num-tasks":
        rank = np.argsort(np.argsort(num_tasks))
        held_out = xr.DataArray(rank % 2 == 1, dims="num_tasks", coords={"num_tasks": num_tasks})
    else:
        held_out = _seed_cells(behaviour, parsed.value)
    return held_out.rename("held_out").assign_attrs(
        long_name="cell not used to fit", design=str(design)
    )


def _forecast_cells(checkpoint: np.ndarray, fraction: float, max_steps) -> xr.DataArray:
    last = float(max_steps) if max_steps is not None else float(checkpoint.max())
    held_out = checkpoint > fraction * last
    if held_out.all() or not held_out.any():
        raise RiclError(
            f"held-out design forecast:{fraction:g} leaves "
            f"{'no checkpoint to fit' if held_out.all() else 'no checkpoint to predict'} "
            f"(checkpoints {checkpoint.min()}-{checkpoint.max()}, max_steps {last:g}); "
            "choose F between them"
        )
    return xr.DataArray(held_out, dims="checkpoint", coords={"checkpoint": checkpoint})


def _seed_cells(behaviour: xr.Dataset, seed: int) -> xr.DataArray:
    if "seed" not in behaviour.dims:
        raise RiclError(
            f"held-out design seed:{seed} needs runs of several training seeds "
            "(seed = [1, 2, 3] in the spec, or ricl run --seeds 3); these runs have one"
        )
    seeds = behaviour.seed.values
    if seed not in seeds:
        raise RiclError(
            f"held-out design seed:{seed}: the runs' seeds are {', '.join(map(str, seeds))}"
        )
    return xr.DataArray(seeds == seed, dims="seed", coords={"seed": seeds})


def held_out_cells(num_tasks, checkpoint, fraction: float = 0.8) -> xr.DataArray:
    """True for the cells not used to fit: all but the first ``fraction`` of the checkpoints
    and the first ``fraction`` of the num_tasks values (both sorted increasing).

    The number fitted along each axis is ``round(fraction * n)``, at least 1 and, when
    ``fraction < 1``, at most n - 1, so some cells are always held out.
    """
    num_tasks, checkpoint = np.asarray(num_tasks), np.asarray(checkpoint)
    fitted_tasks = np.argsort(np.argsort(num_tasks)) < _num_fitted(len(num_tasks), fraction)
    fitted_steps = np.argsort(np.argsort(checkpoint)) < _num_fitted(len(checkpoint), fraction)
    held_out = ~(fitted_tasks[:, None] & fitted_steps[None, :])
    return xr.DataArray(
        held_out,
        dims=("num_tasks", "checkpoint"),
        coords={"num_tasks": num_tasks, "checkpoint": checkpoint},
        name="held_out",
        attrs={"long_name": "cell not used to fit", "fraction_fitted": fraction},
    )


def _num_fitted(n: int, fraction: float) -> int:
    if fraction >= 1.0:
        return n
    return int(min(max(round(fraction * n), 1), n - 1))

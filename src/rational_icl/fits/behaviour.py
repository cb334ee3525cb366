"""Behaviour measures: how close the transformer is to each Bayesian strategy (SCHEMA.md §2).

For every checkpoint, num_tasks and split (and configuration, where the sweep has a grid):

- ``distance``: the transformer's distance to each strategy, averaged over the evaluation
  sequences and positions. Probabilities (categorical, classification): symmetrized KL
  0.5·(KL(p‖q) + KL(q‖p)) = 0.5·Σ_o (p − q)(log p − log q), in nats. Regression: mean
  squared error of the predicted means.
- ``relative_distance``: the observed weight on memorizing, (r + 1)/2 with
  r = clip((d_TG − d_TM)/d_MG, −1, 1): 1 when the transformer is M, 0 when it is G.
- ``interpolation_distance`` / ``interpolation_weight``: the distance to the best mixture
  h = w·M + (1 − w)·G, w ∈ [0, 1], and that w. Closed form for MSE; for KL a safeguarded
  Newton search on the convex 1-D objective, all cells at once, inside each dask block.

Everything is xarray arithmetic on (possibly dask-backed) arrays: nothing is loaded until
``.compute()``, and no Python loop runs over cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits.runs import config_dims, open_runs

# Floor inside logs: a predicted probability of exactly 0 costs a large but finite amount.
LOG_FLOOR = 1e-12
# Dims a distance averages (outcome is summed for KL, averaged for MSE).
PREDICTION_DIMS = ("sequence", "position", "outcome")
_DISTANCE_KINDS = {
    "categorical-sequence": "kl",
    "classification": "kl",
    "linear-regression": "mse",
}
_NEWTON_STEPS = 30
_NEWTON_TOLERANCE = 1e-10


def load_behaviour(folder: str | Path) -> xr.Dataset:
    """``behaviour(open_runs(folder))``, computed (loaded into memory; it is small)."""
    # close the files here: a close left to the garbage collector can land inside a later
    # netCDF open and crash HDF5
    with open_runs(folder) as runs:
        return behaviour(runs).compute()


def behaviour(runs: xr.Dataset) -> xr.Dataset:
    """The behaviour dataset of a sweep (lazy when ``runs`` is dask-backed).

    Parameters
    ----------
    runs : xr.Dataset
        As returned by :func:`rational_icl.fits.open_runs`.

    Returns
    -------
    xr.Dataset
        With ``G`` = (num_tasks, *config dims*) where config dims are those of
        :func:`rational_icl.fits.config_dims`:

        - ``distance`` (strategy, *G*, checkpoint, split)
        - ``relative_distance``, ``interpolation_distance``, ``interpolation_weight``,
          ``transformer_loss`` (*G*, checkpoint, split)
        - ``strategy_distance`` (*G*, split): d_MG, the distance between M and G
        - ``strategy_loss``, ``strategy_loss_se``, ``strategy_complexity`` (strategy, *G*)

        Coordinates ``strategy``, ``num_tasks``, ``checkpoint``, ``split``, ``source_file``
        and the config dims; attributes those of ``runs`` plus ``distance_measure``.
    """
    kind = distance_kind(runs.attrs.get("setting"))
    grid = ("num_tasks", *config_dims(runs))
    transformer = runs["transformer_prediction"].astype("float64")
    strategies = runs["strategy_prediction"].astype("float64")
    memorizing = strategies.sel(strategy="memorizing", drop=True)
    generalizing = strategies.sel(strategy="generalizing", drop=True)

    distance = prediction_distance(transformer, strategies, kind)
    strategy_distance = prediction_distance(memorizing, generalizing, kind)
    relative = relative_distance(
        distance.sel(strategy="memorizing", drop=True),
        distance.sel(strategy="generalizing", drop=True),
        strategy_distance,
    )
    mixture_distance, mixture_weight = best_mixture(transformer, memorizing, generalizing, kind)

    cell = (*grid, "checkpoint", "split")
    unit = "nats" if kind == "kl" else "squared units of y"
    measure = "symmetrized KL divergence" if kind == "kl" else "mean squared error"
    out = xr.Dataset(
        {
            "distance": _described(
                distance.transpose("strategy", *cell),
                "distance to strategy",
                unit,
                f"{measure} between the transformer's and the strategy's predictions, "
                "averaged over evaluation sequences and positions",
            ),
            "relative_distance": _described(
                relative.transpose(*cell),
                "observed weight on memorizing",
                "1",
                "(r + 1)/2 with r = clip((d_TG - d_TM)/d_MG, -1, 1): 1 at the memorizing "
                "strategy, 0 at the generalizing strategy",
            ),
            "interpolation_distance": _described(
                mixture_distance.transpose(*cell),
                "distance to the best memorizing-generalizing mixture",
                unit,
                f"min over w in [0, 1] of the {measure} between the transformer and "
                "w*memorizing + (1 - w)*generalizing",
            ),
            "interpolation_weight": _described(
                mixture_weight.transpose(*cell),
                "weight on memorizing of the best mixture",
                "1",
                "the w in [0, 1] that attains interpolation_distance (NaN when M equals G)",
            ),
            "strategy_distance": _described(
                strategy_distance.transpose(*grid, "split"),
                "distance between memorizing and generalizing",
                unit,
                f"{measure} between the memorizing and generalizing predictions (d_MG)",
            ),
            "transformer_loss": _carried(runs["transformer_loss"].transpose(*cell), "nats"),
            "strategy_loss": _carried(runs["strategy_loss"].transpose("strategy", *grid), "nats"),
            "strategy_complexity": _carried(
                runs["strategy_complexity"].transpose("strategy", *grid), "bits"
            ),
        },
        attrs={**runs.attrs, "distance_measure": measure},
    )
    if "strategy_loss_se" in runs:
        out["strategy_loss_se"] = _carried(
            runs["strategy_loss_se"].transpose("strategy", *grid), "nats"
        )
    return out


def distance_kind(setting) -> str:
    """``"kl"`` for settings that predict probabilities, ``"mse"`` for regression."""
    if setting not in _DISTANCE_KINDS:
        raise RiclError(f"runs have setting {setting!r}; allowed: {', '.join(_DISTANCE_KINDS)}")
    return _DISTANCE_KINDS[setting]


def prediction_distance(a: xr.DataArray, b: xr.DataArray, kind: str) -> xr.DataArray:
    """Distance between two prediction arrays, averaged over sequences and positions.

    ``kind="kl"``: symmetrized KL, 0.5·Σ_outcome (a − b)(log a − log b), logs floored at
    ``LOG_FLOOR``. ``kind="mse"``: mean of (a − b)². NaN marks padding (runs of a shorter
    context or fewer outcomes) and is left out of the averages. Other dims broadcast.
    """
    if kind == "mse":
        return ((a - b) ** 2).mean(PREDICTION_DIMS, skipna=True)
    log_ratio = np.log(a.clip(min=LOG_FLOOR)) - np.log(b.clip(min=LOG_FLOOR))
    per_position = (0.5 * (a - b) * log_ratio).sum("outcome", skipna=True)
    valid = a.notnull().any("outcome") & b.notnull().any("outcome")
    return per_position.where(valid).mean(["sequence", "position"], skipna=True)


def relative_distance(
    to_memorizing: xr.DataArray, to_generalizing: xr.DataArray, between: xr.DataArray
) -> xr.DataArray:
    """Observed weight on memorizing, (r + 1)/2 with r = clip((d_TG − d_TM)/d_MG, −1, 1).

    NaN where d_MG is 0 (the strategies agree, so the weight is not identified).
    """
    r = ((to_generalizing - to_memorizing) / between.where(between > 0)).clip(-1, 1)
    return (r + 1) / 2


def best_mixture(
    transformer: xr.DataArray, memorizing: xr.DataArray, generalizing: xr.DataArray, kind: str
) -> tuple[xr.DataArray, xr.DataArray]:
    """Distance of ``transformer`` to its closest mixture w·M + (1 − w)·G, and that w.

    Returns ``(distance, weight)``, both reduced over ``PREDICTION_DIMS``. The distance is
    the one of :func:`prediction_distance` of the same ``kind``.
    """
    if kind == "mse":
        return _best_mixture_mse(transformer, memorizing, generalizing)
    arrays = [transformer, memorizing, generalizing]
    if any(x.chunks is not None for x in arrays):
        # the search needs a whole cell (all sequences, positions, outcomes) in one block
        arrays = [x.chunk({d: -1 for d in PREDICTION_DIMS}) for x in arrays]
    return xr.apply_ufunc(
        best_mixture_kl,
        *arrays,
        input_core_dims=[list(PREDICTION_DIMS)] * 3,
        output_core_dims=[[], []],
        dask="parallelized",
        output_dtypes=[np.float64, np.float64],
    )


def _best_mixture_mse(transformer, memorizing, generalizing):
    # mean((b - w a)^2) = bb - 2 w ab + w^2 aa is minimised at w = ab / aa, clipped to [0, 1]
    a = memorizing - generalizing
    b = transformer - generalizing
    aa = (a * a).mean(PREDICTION_DIMS, skipna=True)
    ab = (a * b).mean(PREDICTION_DIMS, skipna=True)
    bb = (b * b).mean(PREDICTION_DIMS, skipna=True)
    weight = (ab / aa.where(aa > 0)).clip(0, 1)
    distance = (bb - 2 * weight * ab + weight**2 * aa).clip(min=0)
    return distance.fillna(bb), weight


def best_mixture_kl(
    transformer: np.ndarray, memorizing: np.ndarray, generalizing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Numpy core: closest mixture in symmetrized KL over the last three axes.

    Inputs broadcast against each other, ``(..., sequence, position, outcome)``; NaN marks
    padding. The objective d(w) is convex (KL is convex in each argument and h is linear
    in w), so its minimiser on [0, 1] is an end point or the root of d'(w), found by Newton
    steps kept inside a shrinking bracket (a secant step when Newton leaves it).

    Returns ``(distance, weight)`` of shape ``(...)``.
    """
    valid = ~np.isnan(transformer).all(axis=-1) & ~np.isnan(memorizing).all(axis=-1)
    count = valid.sum(axis=(-2, -1))
    t, m, g = (np.nan_to_num(x) for x in (transformer, memorizing, generalizing))
    a = m - g  # padded entries are 0 here, so they add nothing to any sum below
    log_t = np.log(np.maximum(t, LOG_FLOOR))
    shape = np.broadcast_shapes(t.shape, m.shape, g.shape)[:-3]

    def objective(w):
        h = np.maximum(g + w[..., None, None, None] * a, LOG_FLOOR)
        return 0.5 * ((t - h) * (log_t - np.log(h))).sum(axis=(-3, -2, -1))

    def slope_and_curvature(w):
        h = np.maximum(g + w[..., None, None, None] * a, LOG_FLOOR)
        ratio = t / h
        slope = -0.5 * (a * (log_t - np.log(h) + ratio - 1)).sum(axis=(-3, -2, -1))
        curvature = 0.5 * (a * a / h * (1 + ratio)).sum(axis=(-3, -2, -1))
        return slope, curvature

    low, high = np.zeros(shape), np.ones(shape)
    slope_low, slope_high = slope_and_curvature(low)[0], slope_and_curvature(high)[0]
    at_low = slope_low >= 0  # d increases from w = 0: G is closest
    at_high = slope_high <= 0  # d decreases up to w = 1: M is closest
    interior = ~(at_low | at_high)
    # start from the least-squares weight, usually a few Newton steps from the optimum
    with np.errstate(divide="ignore", invalid="ignore"):
        start = (a * (t - g)).sum(axis=(-3, -2, -1)) / (a * a).sum(axis=(-3, -2, -1))
    w = np.broadcast_to(np.clip(np.nan_to_num(start, nan=0.5), 0.01, 0.99), shape)
    for _ in range(_NEWTON_STEPS):
        slope, curvature = slope_and_curvature(w)
        low, slope_low = np.where(slope < 0, w, low), np.where(slope < 0, slope, slope_low)
        high, slope_high = np.where(slope > 0, w, high), np.where(slope > 0, slope, slope_high)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = w - slope / curvature
            # fallback where Newton leaves the bracket: the secant root, else the midpoint
            secant = low - slope_low * (high - low) / (slope_high - slope_low)
        secant = np.where((secant > low) & (secant < high), secant, 0.5 * (low + high))
        step = np.where((newton >= low) & (newton <= high), newton, secant)
        done = np.all(np.abs(step - w)[interior] < _NEWTON_TOLERANCE)
        w = step
        if done:
            break
    w = np.where(at_low, 0.0, np.where(at_high, 1.0, w))
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = objective(w) / count
        identified = (a != 0).any(axis=(-3, -2, -1)) & (count > 0)
    return distance, np.where(np.broadcast_to(identified, shape), w, np.nan)


def _described(da: xr.DataArray, long_name: str, units: str, description: str) -> xr.DataArray:
    return da.rename(None).assign_attrs(long_name=long_name, units=units, description=description)


def _carried(da: xr.DataArray, units: str) -> xr.DataArray:
    """A run variable carried over, keeping its own attrs when it has them."""
    attrs = {"units": units, "long_name": da.name.replace("_", " "), "description": ""}
    attrs |= {k: v for k, v in da.attrs.items() if k in ("long_name", "units", "description")}
    if not attrs["description"]:
        attrs["description"] = f"{da.name} of the run files"
    return da.assign_attrs(attrs)

"""Behaviour measures: how close the transformer is to each Bayesian strategy (docs/files.md §2).

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
- ``barycentric_weight`` (the fit's default observation), ``barycentric_distance`` and
  ``strategy_mass``: the transformer's weight on memorizing read off the closest point of
  the family h_t = λ_t·(s·M_t + (1 − s)·Ĝ_t) + (1 − λ_t)·C_t, where Ĝ = g·G + (1 − g)·A.

Why the barycentric weight. The relative distance projects the transformer onto the line
through M and G. At large D, on fresh tasks, M lies between G and the prior mean (C), so any
under-confident generalizer (a shrunk ridge, one step of in-context gradient descent, a
tempered posterior) projects onto M and reads as memorizing, though it uses no training
task. The barycentric weights, as in the authors' multi-predictor analysis, place the
transformer in the simplex of M, G and C instead, so shrinkage toward the prior predictive
is given to C, not to M. Two refinements make this hold along the whole context: the
weight on C may vary with the position t (a learner that has seen few observations is less
sure; for the categorical setting a larger Dirichlet concentration is exactly such a
position-dependent mixture of G and C), and the generalizing vertex is a mixture of G and
an under-confident generalizer A that uses no training task (one step of gradient descent
for regression, G^(1/2) renormalised for probabilities). s, the share of memorizing in the
transformer's strategy part, is the observed weight given to the fit: it is 1 at M, 0 at
G, A or any mixture of them with C, and w for w·M + (1 − w)·G. It is NaN where
the transformer is mostly C (mean λ below ``MIN_STRATEGY_MASS``): there M against G is not
observed.

Everything is xarray arithmetic on (possibly dask-backed) arrays: nothing is loaded until
``.compute()``, and no Python loop runs over cells.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import xarray as xr

from rational_icl import formulas
from rational_icl.errors import RiclError
from rational_icl.facts import setting_facts
from rational_icl.fits.runs import config_dims, open_runs
from rational_icl.vocabulary import STRATEGIES

# Floor inside logs: a predicted probability of exactly 0 costs a large but finite amount.
LOG_FLOOR = 1e-12
# Dims a distance averages (outcome is summed for KL, averaged for MSE).
PREDICTION_DIMS = ("sequence", "position", "outcome")
_NEWTON_STEPS = 30
# Barycentric measure: rounds of block coordinate descent, and the weight on M and G below
# which their share is not measured: the transformer is mostly the constant predictor, and
# the share's noise grows as 1 / mass (early checkpoints read anything from 0 to 1).
_BARYCENTRIC_ROUNDS = 20
_BARYCENTRIC_TOLERANCE = 1e-4
MIN_STRATEGY_MASS = 0.3
# context_weight: a position where M and G are closer than this fraction of their mean
# distance over positions does not tell them apart
_MIN_POSITION_SEPARATION = 0.1
BARYCENTRIC_STRATEGIES = STRATEGIES  # the family spans every strategy
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
        - ``barycentric_weight``, ``barycentric_distance``, ``strategy_mass`` (*G*,
          checkpoint, split), where the runs have the constant strategy
        - ``contextual_weight`` (*G*, checkpoint, split): the barycentric weight with the
          contextual strategy in memorizing's place, where the runs have it
        - ``strategy_distance`` (*G*, split): d_MG, the distance between M and G
        - ``family_distance`` (*G*, checkpoint, split): how far the transformer is from
          every strategy the measure knows (:func:`family_distance`)
        - ``context_weight`` (*G*, checkpoint, split, position): the best M-G mixture
          weight at each context position (evidence accumulating along the context)
        - ``context_loss`` (strategy, *G*, split, position): each strategy's mean loss
          over the first t observations (:func:`context_loss`), where positions > 1
        - ``strategy_loss``, ``strategy_loss_se``, ``strategy_complexity`` (strategy, *G*)

        Coordinates ``strategy``, ``num_tasks``, ``checkpoint``, ``split``, ``source_file``
        and the config dims; attributes those of ``runs`` plus ``distance_measure``.
    """
    kind = distance_kind(runs.attrs)
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
            **_barycentric_variables(runs, transformer, strategies, kind, cell, unit, measure),
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
    out["family_distance"] = family_distance(out)
    out.update(_context_variables(runs, transformer, memorizing, generalizing, kind, cell))
    return out


def _position_distance(a: xr.DataArray, b: xr.DataArray, kind: str) -> xr.DataArray:
    """prediction_distance at each position (averaged over sequences only)."""
    if kind == "mse":
        return ((a - b) ** 2).mean(["sequence", "outcome"], skipna=True)
    log_ratio = np.log(a.clip(min=LOG_FLOOR)) - np.log(b.clip(min=LOG_FLOOR))
    return (0.5 * (a - b) * log_ratio).sum("outcome", skipna=True).mean("sequence")


def family_distance(behaviour: xr.Dataset) -> xr.DataArray:
    """How far the transformer is from every mixture of the strategies the measure knows,
    in units of the distance between M and G: ``barycentric_distance / strategy_distance``
    (the family of M, G, the under-confident generalizer and C), or
    ``interpolation_distance / strategy_distance`` (the M-G line) without the constant
    strategy. Near 0 the family represents the transformer and the weight on M means what
    it says; of order 1 the transformer is as far from the family as M is from G, and its
    weight is the projection of some other strategy (docs/science.md, "Adequacy").
    """
    name = (
        "barycentric_distance"
        if "barycentric_distance" in behaviour
        else ("interpolation_distance")
    )
    between = behaviour.strategy_distance
    ratio = behaviour[name] / between.where(between > 0)
    return _described(
        ratio.transpose(*behaviour[name].dims),
        "distance to the strategy family over the memorizing-generalizing distance",
        "1",
        f"{name} / strategy_distance: 0 where a mixture of the strategies is the "
        "transformer, 1 where it is as far from every mixture as memorizing is from "
        "generalizing",
    )


def _context_variables(runs, transformer, memorizing, generalizing, kind, cell) -> dict:
    """context_weight and context_loss, for settings with a context of predictions."""
    if runs.sizes["position"] < 2:
        return {}
    arrays = [transformer, memorizing, generalizing]
    if any(x.chunks is not None for x in arrays):
        arrays = [x.chunk({d: -1 for d in PREDICTION_DIMS}) for x in arrays]
    core = best_mixture_kl if kind == "kl" else _best_mixture_mse_core
    _, weight = xr.apply_ufunc(
        functools.partial(core, axes=(-3, -1)),
        *arrays,
        input_core_dims=[list(PREDICTION_DIMS)] * 3,
        output_core_dims=[["position"], ["position"]],
        dask="parallelized",
        output_dtypes=[np.float64, np.float64],
    )
    # where M and G nearly agree at a position the weight there is noise: left out
    between = _position_distance(memorizing, generalizing, kind)  # (grid..., split, position)
    weight = weight.where(between >= _MIN_POSITION_SEPARATION * between.mean("position"))
    found = {
        "context_weight": _described(
            weight.transpose(*cell, "position"),
            "weight on memorizing at each context position",
            "1",
            "the w in [0, 1] of the mixture w*memorizing + (1 - w)*generalizing closest to "
            "the transformer's predictions at this position (over sequences); NaN where "
            "the two strategies are closer than "
            f"{_MIN_POSITION_SEPARATION:g} of their mean distance over positions",
        ),
    }
    if "target" not in runs:  # a hand-made file: no losses along the context
        return found
    losses = context_loss(runs).mean("sequence")
    return found | {
        "context_loss": _described(
            losses.transpose("strategy", *cell[:-2], "split", "position"),
            "mean loss over the first t observations of the context",
            "nats",
            "each strategy's loss on the context before position t, averaged over "
            "sequences: the evidence a context-dependent fit accumulates along the context",
        ),
    }


def _barycentric_variables(runs, transformer, strategies, kind, cell, unit, measure) -> dict:
    """barycentric_weight, barycentric_distance and strategy_mass (none without C), and
    with the contextual strategy (classification's H) its barycentric weight with H in M's
    place, ``contextual_weight``."""
    if "constant" not in strategies.strategy.values:
        return {}
    memorizing, generalizing, constant = (
        strategies.sel(strategy=name, drop=True) for name in BARYCENTRIC_STRATEGIES
    )
    alternative = alternative_generalizer(runs, generalizing)
    distance, share, mass = barycentric(
        transformer, memorizing, generalizing, constant, kind, alternative
    )
    found = {
        "barycentric_weight": _described(
            share.where(mass >= MIN_STRATEGY_MASS).transpose(*cell),
            "observed weight on memorizing (barycentric)",
            "1",
            "s of the closest h_t = l_t (s M + (1 - s) G') + (1 - l_t) C, G' a mixture of "
            "G and an under-confident generalizer, l_t per position: 1 at the memorizing "
            f"strategy, 0 at any generalizer; NaN where mean l < {MIN_STRATEGY_MASS}",
        ),
        "barycentric_distance": _described(
            distance.transpose(*cell),
            "distance to the closest barycentric mixture",
            unit,
            f"{measure} between the transformer and the mixture barycentric_weight reads",
        ),
        "strategy_mass": _described(
            mass.transpose(*cell),
            "weight on the strategies against the constant predictor",
            "1",
            "mean over positions of l_t, 1 - the constant predictor's weight",
        ),
    }
    if "contextual" not in strategies.strategy.values:
        return found
    contextual = strategies.sel(strategy="contextual", drop=True)
    _, share, mass = barycentric(transformer, contextual, generalizing, constant, kind, alternative)
    found["contextual_weight"] = _described(
        share.where(mass >= MIN_STRATEGY_MASS).transpose(*cell),
        "observed weight on the contextual memorizer (barycentric)",
        "1",
        "barycentric_weight with the contextual strategy H (memory conditioned on the "
        "context) in the memorizing strategy's place: 1 at H, 0 at any generalizer",
    )
    return found


def context_loss(runs: xr.Dataset) -> xr.DataArray:
    """Mean loss of each strategy over the first t observations of every evaluation sequence.

    Probabilities: log loss of the observed outcome; means: squared error / (2 sigma^2)
    with sigma^2 the run's ``noise_variance`` (the file's ``prediction_kind``). Zero at
    t = 0 (no observations yet).

    Returns
    -------
    xr.DataArray (strategy, ..., split, sequence, position)
    """
    if runs.sizes["position"] < 2:
        raise RiclError(
            f"context-dependent weights need a context of predictions (several positions per "
            f"sequence); the runs of setting {runs.attrs.get('setting')!r} predict one"
        )
    prediction = runs.strategy_prediction
    if setting_facts(runs.attrs).prediction_kind == "probabilities":
        chosen = prediction.isel(outcome=runs.target.astype(int).compute())
        per_step = -np.log(np.clip(chosen, 1e-12, None))
    else:
        noise = formulas.run_noise_variance(runs)
        per_step = (prediction.squeeze("outcome", drop=True) - runs.target) ** 2 / (2 * noise)
    previous = per_step.cumsum("position").shift(position=1, fill_value=0.0)
    size = xr.DataArray(np.arange(runs.sizes["position"]), dims="position")
    return (previous / np.maximum(size, 1)).rename("context_loss")


def distance_kind(attrs) -> str:
    """The distance of runs with these global attributes: ``"kl"`` (symmetrized KL, for
    settings that predict probabilities) or ``"mse"`` (predicted means); the file's
    ``distance_kind`` fact (rational_icl.facts)."""
    return setting_facts(attrs).distance_kind


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
    the one of :func:`prediction_distance` of the same ``kind``: closed form for MSE
    (:func:`_best_mixture_mse_core`), a Newton search for KL (:func:`best_mixture_kl`).
    """
    arrays = [transformer, memorizing, generalizing]
    if any(x.chunks is not None for x in arrays):
        # the search needs a whole cell (all sequences, positions, outcomes) in one block
        arrays = [x.chunk({d: -1 for d in PREDICTION_DIMS}) for x in arrays]
    return xr.apply_ufunc(
        best_mixture_kl if kind == "kl" else _best_mixture_mse_core,
        *arrays,
        input_core_dims=[list(PREDICTION_DIMS)] * 3,
        output_core_dims=[[], []],
        dask="parallelized",
        output_dtypes=[np.float64, np.float64],
    )


def best_mixture_kl(
    transformer: np.ndarray,
    memorizing: np.ndarray,
    generalizing: np.ndarray,
    axes: tuple[int, ...] = (-3, -2, -1),
) -> tuple[np.ndarray, np.ndarray]:
    """Numpy core: closest mixture in symmetrized KL, reduced over ``axes``.

    Inputs broadcast against each other, ``(..., sequence, position, outcome)``; NaN marks
    padding. ``axes`` are the axes one mixture weight serves: all three by default, or
    ``(-3, -1)`` for a weight per position. The objective d(w) is convex (KL is convex in
    each argument and h is linear in w), so its minimiser on [0, 1] is an end point or the
    root of d'(w), found by Newton steps kept inside a shrinking bracket (a secant step when
    Newton leaves it).

    Returns ``(distance, weight)``, the broadcast shape without ``axes``.
    """
    valid = ~np.isnan(transformer).all(axis=-1) & ~np.isnan(memorizing).all(axis=-1)
    count = valid.sum(axis=tuple(a + 1 for a in axes if a != -1))
    # float32 sums carry ~1e-7 relative noise: a tighter tolerance would never be met
    tolerance = _NEWTON_TOLERANCE if transformer.dtype == np.float64 else 1e-6
    t, m, g = (np.nan_to_num(x) for x in (transformer, memorizing, generalizing))
    a = m - g  # padded entries are 0 here, so they add nothing to any sum below
    log_t = np.log(np.maximum(t, LOG_FLOOR))
    full = np.broadcast_shapes(t.shape, m.shape, g.shape)
    shape = tuple(n for i, n in enumerate(full) if i - len(full) not in axes)

    def objective(w):
        h = np.maximum(g + np.expand_dims(w, axes) * a, LOG_FLOOR)
        return 0.5 * ((t - h) * (log_t - np.log(h))).sum(axis=axes)

    def slope_and_curvature(w):
        h = np.maximum(g + np.expand_dims(w, axes) * a, LOG_FLOOR)
        ratio = t / h
        slope = -0.5 * (a * (log_t - np.log(h) + ratio - 1)).sum(axis=axes)
        curvature = 0.5 * (a * a / h * (1 + ratio)).sum(axis=axes)
        return slope, curvature

    low, high = np.zeros(shape, t.dtype), np.ones(shape, t.dtype)
    slope_low, slope_high = slope_and_curvature(low)[0], slope_and_curvature(high)[0]
    at_low = slope_low >= 0  # d increases from w = 0: G is closest
    at_high = slope_high <= 0  # d decreases up to w = 1: M is closest
    interior = ~(at_low | at_high)
    # start from the least-squares weight, usually a few Newton steps from the optimum
    with np.errstate(divide="ignore", invalid="ignore"):
        start = (a * (t - g)).sum(axis=axes) / (a * a).sum(axis=axes)
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
        done = np.all(np.abs(step - w)[interior] < tolerance)
        w = step
        if done:
            break
    w = np.where(at_low, 0.0, np.where(at_high, 1.0, w))
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = objective(w) / count
        identified = (a != 0).any(axis=axes) & (count > 0)
    return distance, np.where(np.broadcast_to(identified, shape), w, np.nan)


def _best_mixture_mse_core(transformer, memorizing, generalizing, axes=(-3, -2, -1)):
    """Numpy core: closest mixture in mean squared error, reduced over ``axes``.

    mean((b − w a)²) = bb − 2w·ab + w²·aa is least at w = ab/aa, clipped to [0, 1], with
    a = M − G and b = T − G; NaN (padding) adds nothing. Returns ``(distance, weight)``.
    """
    valid = ~np.isnan(transformer) & ~np.isnan(memorizing)
    count = valid.sum(axis=axes)
    t, m, g = (np.nan_to_num(x) for x in (transformer, memorizing, generalizing))
    a, b = m - g, t - g
    aa, ab, bb = ((x * y).sum(axis=axes) for x, y in [(a, a), (a, b), (b, b)])
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.clip(ab / np.where(aa > 0, aa, np.nan), 0, 1)
        distance = np.maximum(bb - 2 * weight * ab + weight**2 * aa, 0) / count
    return np.where(np.isnan(weight), bb / count, distance), weight


# ---------------------------------------------------------------------------- barycentric


def barycentric(
    transformer: xr.DataArray,
    memorizing: xr.DataArray,
    generalizing: xr.DataArray,
    constant: xr.DataArray,
    kind: str,
    alternative: xr.DataArray | None = None,
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """The transformer's weight on M against the generalizers (see :func:`barycentric_core`).

    Returns ``(distance, share, mass)``, each reduced over ``PREDICTION_DIMS``: the distance
    (that of :func:`prediction_distance` of the same ``kind``) to the closest point of the
    family, the share s of memorizing in the transformer's strategy part, and the mean over
    positions of the weight on that part (1 minus the constant predictor's weight).
    """
    arrays = [transformer, memorizing, generalizing, constant]
    if alternative is not None:
        arrays.append(alternative)
    # float32 halves the memory traffic of the many passes; weights need ~1e-3, not 1e-10
    arrays = [x.astype(np.float32) for x in arrays]
    if any(x.chunks is not None for x in arrays):
        arrays = [x.chunk({d: -1 for d in PREDICTION_DIMS}) for x in arrays]
    return xr.apply_ufunc(
        functools.partial(barycentric_core, kind=kind),
        *arrays,
        input_core_dims=[list(PREDICTION_DIMS)] * len(arrays),
        output_core_dims=[[], [], []],
        dask="parallelized",
        output_dtypes=[np.float64] * 3,
    )


def barycentric_core(
    transformer, memorizing, generalizing, constant, alternative=None, *, kind: str
):
    """Numpy core of the barycentric measure, over the last three axes.

    The closest point to the transformer of the family
    h_t = λ_t·(s·M_t + (1 − s)·Ĝ_t) + (1 − λ_t)·C_t, with Ĝ = g·G + (1 − g)·A where an
    alternative generalizer A is given (:func:`alternative_generalizer`), else Ĝ = G. s, g
    in [0, 1] are one number per cell; λ_t in [0, 1] one per position. Inputs broadcast,
    ``(..., sequence, position, outcome)``; NaN marks padding.

    Block coordinate descent: each of λ (per position), s and g is in turn the weight of a
    1-D mixture of two fixed predictions, solved exactly (:func:`best_mixture_kl`, or least
    squares for ``kind="mse"``), so the distance never increases. s starts at the best
    M-G mixture weight.

    Returns ``(distance, s, mean over positions of λ)``, shape ``(...)``; s is NaN where
    M and Ĝ agree.
    """
    line = best_mixture_kl if kind == "kl" else _best_mixture_mse_core
    m, g, c = memorizing, generalizing, constant  # NaN (padding) stays padding below
    share = np.nan_to_num(line(transformer, m, g)[1], nan=0.5)
    blend = np.ones_like(share)  # g: weight of G against the alternative generalizer

    def cell(x):  # (...) -> (..., 1, 1, 1)
        return x[..., None, None, None]

    for _ in range(_BARYCENTRIC_ROUNDS):
        before = np.stack([share, blend])
        generalizer = g if alternative is None else _mix(cell(blend), g, alternative)
        part = _mix(cell(share), m, generalizer)
        mass = np.nan_to_num(line(transformer, part, c, axes=(-3, -1))[1])[..., None, :, None]
        distance, new_share = line(transformer, _mix(mass, m, c), _mix(mass, generalizer, c))
        share = np.where(np.isnan(new_share), share, new_share)
        if alternative is not None:
            with_g, with_a = (_mix(mass, _mix(cell(share), m, x), c) for x in (g, alternative))
            distance, new_blend = line(transformer, with_g, with_a)
            blend = np.where(np.isnan(new_blend), blend, new_blend)
        if np.nanmax(np.abs(np.stack([share, blend]) - before), initial=0) < _BARYCENTRIC_TOLERANCE:
            break
    valid = ~np.isnan(transformer).all(axis=(-3, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_mass = np.where(valid, mass[..., 0, :, 0], 0).sum(-1) / valid.sum(-1)
    share = np.where(np.isnan(new_share), np.nan, share)
    return distance.astype(np.float64), share.astype(np.float64), mean_mass.astype(np.float64)


def _mix(weight, a, b):
    """weight·a + (1 − weight)·b."""
    return weight * a + (1 - weight) * b


def alternative_generalizer(runs: xr.Dataset, generalizing: xr.DataArray) -> xr.DataArray:
    """The under-confident generalizer the barycentric measure sets beside G.

    The file's ``alternative_generalizer`` fact chooses it: ``"gradient-step"`` (regression),
    one step of in-context gradient descent (:func:`gradient_step_prediction`);
    ``"tempered"`` (probabilities), G^(1/2) renormalised over outcomes; ``"none"``. Both use
    no training task, and both are what a transformer on its way to G can look like
    (docs/science.md's second caution); mixed with G and the constant predictor they span the
    shrunk, tempered and one-step generalizers that the relative distance reads as
    memorizing. None for a gradient step without the file's inputs ``x`` and ``y``.
    """
    kind = setting_facts(runs.attrs).alternative_generalizer
    if kind == "gradient-step":
        return gradient_step_prediction(runs) if "x" in runs and "y" in runs else None
    if kind == "none":
        return None
    tempered = np.sqrt(generalizing)
    return tempered / tempered.sum("outcome")


def gradient_step_prediction(runs: xr.Dataset) -> xr.DataArray:
    """One step of in-context gradient descent on the squared error from w = 0, on a file's
    inputs ``x`` (..., position, feature) and ``y`` (a linear-Gaussian setting's).

    ŵ_t = η_t·Σ_{s<t} y_s x_s, predicting x_t·ŵ_t, with the step η_t = 1/(t + d + 1 + σ²)
    that minimises the expected squared error under the prior w ~ N(0, I_d): the simplest
    generalizer a trained transformer is known to implement, which uses no training task.
    Returns (..., split, sequence, position, outcome) like ``strategy_prediction``.
    """
    x, y = runs["x"], runs["y"]
    moment = (x * y).cumsum("position") - x * y  # Σ_{s<t} y_s x_s
    step = 1 / (
        xr.DataArray(np.arange(runs.sizes["position"]), dims="position")
        + runs.sizes["feature"]
        + 1
        + float(runs.attrs.get("noise_variance", 0.0))
    )
    prediction = step * (x * moment).sum("feature", skipna=False)
    return prediction.expand_dims(outcome=runs["strategy_prediction"].outcome.values, axis=-1)


def _described(da: xr.DataArray, long_name: str, units: str, description: str) -> xr.DataArray:
    return da.rename(None).assign_attrs(long_name=long_name, units=units, description=description)


def _carried(da: xr.DataArray, units: str) -> xr.DataArray:
    """A run variable carried over, keeping its own attrs when it has them."""
    attrs = {"units": units, "long_name": da.name.replace("_", " "), "description": ""}
    attrs |= {k: v for k, v in da.attrs.items() if k in ("long_name", "units", "description")}
    if not attrs["description"]:
        attrs["description"] = f"{da.name} of the run files"
    return da.assign_attrs(attrs)

"""Baselines that see only the fitted cells, and a fit's predictive skill beside them.

A predictive number means something only beside the simplest prediction that sees no more
data than the model. Every baseline here is built from the fitted cells alone (the observed
weight where the fit's mask is true) and predicts every cell; all are scored on exactly the
held-out cells the model is scored on:

- ``persistence``: the weight stays where it was: each run's mean over its last
  ``PERSISTENCE_CHECKPOINTS`` fitted checkpoints, carried forward;
- ``num_tasks_mean``: each run's mean fitted weight;
- ``log_num_tasks_interpolation``: at each checkpoint, linear interpolation in log D between
  the fitted num_tasks values (nearest at the ends); a fitted run's unfitted checkpoints
  hold its persistence value;
- ``other_seeds_mean`` (runs of several training seeds): the mean of the other seeds'
  fitted weights at the same num_tasks, checkpoint and split.

A run without a fitted cell (a held-out num_tasks value) gets the persistence and mean
values of its neighbours, interpolated in log D; a configuration without any (a held-out
seed) gets the other configurations' mean. A split without fitted cells
(``--splits id``) is predicted from the fitted splits' mean, as the model predicts it.
The one baseline that sees the held-out cells, each num_tasks' mean over them, is kept only
as ``oracle``, labelled so, and never counts as the best baseline.

Beside them, the law-free references (``rational_icl.fits.lawfree``): the model's own drift
and noise around a per-run level or line in log N instead of the law, fitted on the same
cells. They are no baseline (they are fitted like the model, not read off the data), but
what the law adds: ``law_free_skill``.

Every predictor is also scored by a proper score, the CRPS (``scoringrules``), and by the
coverage of its 90% central interval: the model and the references from their predictive
draws, each baseline as a normal around its prediction, censored to [0, 1] as the observed
weight is, whose scale is the spread of its residuals on the fitted cells
(``baseline_spreads``).

The numpy work is in private helpers over the ``num_tasks`` or ``checkpoint`` axis; the
public functions take and return xarray objects.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import scoringrules
import xarray as xr

PERSISTENCE_CHECKPOINTS = 3
INTERVAL = (0.05, 0.95)  # the predictive interval whose coverage is reported (90%)
ORACLE = "oracle"
BASELINES = ("persistence", "num_tasks_mean", "log_num_tasks_interpolation", "other_seeds_mean")
LAW_FREE = ("law_free_level", "law_free_trend")  # rational_icl.fits.lawfree.FORMS
MIN_SPREAD = 1e-3  # a baseline's predictive scale when its fitted residuals are all 0
LABELS = {
    "model": "rational model (posterior mean)",
    "persistence": f"persistence (mean of a run's last {PERSISTENCE_CHECKPOINTS} fitted "
    "checkpoints)",
    "num_tasks_mean": "each num_tasks' fitted mean",
    "log_num_tasks_interpolation": "interpolation in log num_tasks",
    "other_seeds_mean": "mean of the other seeds",
    "law_free_level": "law-free reference: each run's level, the model's drift and noise",
    "law_free_trend": "law-free reference: each run's line in log N, drift and noise",
    ORACLE: "oracle (sees held-out cells): each num_tasks' held-out mean",
}


def baseline_predictions(observed: xr.DataArray, fitted: xr.DataArray) -> xr.Dataset:
    """Every baseline's prediction of every cell, from the ``fitted`` cells alone.

    Parameters
    ----------
    observed : xr.DataArray
        The observed weight on memorizing, dims (config..., num_tasks, checkpoint, split).
    fitted : xr.DataArray
        bool, the cells that entered the fit (broadcastable to ``observed``).

    Returns
    -------
    xr.Dataset
        One variable per baseline of ``BASELINES`` that applies (``other_seeds_mean`` only
        with a ``seed`` dim of at least two values), each shaped like ``observed``.
    """
    values, known = _fitted_values(observed, fitted.broadcast_like(observed))
    persistence = _persistence(values, known)
    run_mean = values.where(known).mean("checkpoint")
    configurations = [d for d in observed.dims if d not in ("num_tasks", "checkpoint", "split")]
    predictions = {
        "persistence": _fill(persistence, configurations),
        "num_tasks_mean": _fill(run_mean, configurations),
        "log_num_tasks_interpolation": _fill(values.where(known, persistence), configurations),
    }
    if "seed" in observed.dims and observed.sizes["seed"] > 1:
        # where no other seed was fitted at this very cell (its early checkpoints were
        # dropped, say), the other seeds' persistence at this num_tasks
        others = _leave_one_out_mean(values, known, "seed")
        fallback = _leave_one_out_mean(persistence, persistence.notnull(), "seed")
        predictions["other_seeds_mean"] = others.fillna(fallback)
    return xr.Dataset(
        {k: v.broadcast_like(observed).transpose(*observed.dims) for k, v in predictions.items()}
    )


def predictive_skill(
    observed: xr.DataArray,
    predicted: xr.DataArray,
    fitted: xr.DataArray,
    scored: xr.DataArray,
    predictive: xr.DataArray | None = None,
    sample_dims: tuple[str, ...] = ("chain", "draw"),
    references: xr.Dataset | None = None,
) -> xr.Dataset:
    """The model, every baseline and the law-free references scored on the same held-out
    cells, per split.

    Parameters
    ----------
    observed : xr.DataArray
        (config..., num_tasks, checkpoint, split) observed weights.
    predicted : xr.DataArray
        The model's point prediction (posterior mean), broadcastable to ``observed``.
    fitted, scored : xr.DataArray
        bool: the cells that entered the fit, and the held-out cells to score.
    predictive : xr.DataArray, optional
        Posterior predictive draws of the observed weight (``sample_dims`` + cells): gives
        the model's CRPS and 90% predictive coverage (see :func:`_coverage`).
    sample_dims : tuple of str
        The draws' dims, of ``predictive`` and ``references``.
    references : xr.Dataset, optional
        The law-free references (``lawfree.law_free_predictions``): ``expected_weight``
        and ``observed_weight`` draws by ``reference``; rows ``LAW_FREE`` when given.

    Returns
    -------
    xr.Dataset
        Dims (predictor, split): ``rmse``, ``correlation`` (Pearson), ``crps`` and
        ``coverage`` (NaN for the oracle, and for the model without ``predictive``); per
        split: ``skill`` = 1 - RMSE_model / RMSE of the best baseline, ``best_baseline``,
        ``crps_skill`` = 1 - CRPS_model / CRPS of the best baseline by CRPS,
        ``best_crps_baseline``, with references ``law_free_skill`` = 1 - RMSE_model / RMSE
        of the better reference (``best_law_free``) and ``law_free_crps_skill`` likewise by
        CRPS, and ``num_cells``. Coordinates ``label`` (each predictor in words),
        ``sees_held_out`` (True for the oracle only) and ``spread`` (each baseline's
        predictive scale, per split).
    """
    scored = (scored.broadcast_like(observed) & observed.notnull()).transpose(*observed.dims)
    baselines = baseline_predictions(observed, fitted)
    spreads = baseline_spreads(observed, fitted, baselines)
    points = {"model": predicted, **dict(baselines.data_vars)}
    draws = {"model": predictive}
    if references is not None:
        for name in map(str, references.reference.values):
            reference = references.sel(reference=name, drop=True)
            points[name] = reference.expected_weight.mean(sample_dims)
            draws[name] = reference.observed_weight
    points[ORACLE] = held_out_mean(observed, scored)
    rows = []
    for name, point in points.items():
        point = point.broadcast_like(observed)
        row = _scores(point, observed, scored)
        if name in spreads:
            row = row.assign(**_normal_scores(point, spreads[name], observed, scored))
        elif draws.get(name) is not None:
            row = row.assign(**_draw_scores(draws[name], observed, scored, sample_dims))
        else:
            row = row.assign(crps=np.nan * row.rmse, coverage=np.nan * row.rmse)
        rows.append(row)
    names = list(points)
    skill = xr.concat(rows, dim="predictor").assign_coords(predictor=names)
    skill["num_cells"] = scored.sum([d for d in scored.dims if d != "split"])
    for score, prefix in [("rmse", ""), ("crps", "crps_")]:
        fair = skill[score].sel(predictor=[n for n in names if n in BASELINES])
        best, best_name = _best(fair)
        skill[f"{prefix}skill"] = 1.0 - skill[score].sel(predictor="model", drop=True) / best
        skill[f"best_{prefix}baseline"] = best_name
        if references is not None:
            best, best_name = _best(skill[score].sel(predictor=[n for n in names if n in LAW_FREE]))
            skill[f"law_free_{prefix}skill"] = (
                1.0 - skill[score].sel(predictor="model", drop=True) / best
            )
            if not prefix:
                skill["best_law_free"] = best_name
    spread = xr.concat([spreads.get(n, np.nan * spreads.persistence) for n in names], "predictor")
    skill = skill.assign_coords(
        label=("predictor", [LABELS[n] for n in names]),
        sees_held_out=("predictor", [n == ORACLE for n in names]),
        spread=spread.assign_coords(predictor=names),
    )
    if references is not None:
        skill.attrs["law_free_seconds"] = float(references.attrs.get("seconds", np.nan))
    return _describe(skill)


def _best(scores: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """The lowest of ``scores`` over ``predictor`` per split, and its predictor's name."""
    best = scores.fillna(np.inf).argmin("predictor")
    name = scores.predictor.isel(predictor=best).drop_vars("predictor")
    # the narrowest string dtype, as a netCDF file reads it back
    name = name.copy(data=np.array([str(v) for v in name.values]))
    return scores.isel(predictor=best).drop_vars("predictor"), name


# ---------------------------------------------------------------------------- baselines


def baseline_spreads(
    observed: xr.DataArray, fitted: xr.DataArray, baselines: xr.Dataset
) -> xr.Dataset:
    """Each baseline's predictive scale per split: the root mean square of its residuals
    on the fitted cells (at least ``MIN_SPREAD``).

    Interpolation in log num_tasks returns a fitted cell itself; its residual there is of
    the cell interpolated from the other num_tasks values (leave one num_tasks out). The
    others are residuals of the very values they carry to the held-out cells (persistence:
    the run's fitted checkpoints around its last level, early ones included).

    Returns
    -------
    xr.Dataset
        One (split,) variable per baseline of ``baselines``.
    """
    values, known = _fitted_values(observed, fitted.broadcast_like(observed))
    configurations = [d for d in observed.dims if d not in ("num_tasks", "checkpoint", "split")]
    in_sample = dict(baselines.data_vars)
    if "log_num_tasks_interpolation" in in_sample:
        held = values.where(known, _persistence(values, known))
        in_sample["log_num_tasks_interpolation"] = _leave_one_num_tasks_out(held, configurations)
    cells = [d for d in observed.dims if d != "split"]
    spreads = {
        name: np.sqrt(((values - p) ** 2).where(known).mean(cells)).fillna(0.0)
        for name, p in in_sample.items()
    }
    return xr.Dataset(spreads).clip(min=MIN_SPREAD)


def _leave_one_num_tasks_out(values, configurations):
    """Each num_tasks value's cells interpolated in log num_tasks from the others'."""
    out = values.values.copy()
    before = (slice(None),) * values.get_axis_num("num_tasks")
    for index, num_tasks in enumerate(values.num_tasks.values):
        others = values.where(values.num_tasks != num_tasks)
        filled = _fill(others, configurations).transpose(*values.dims).values
        out[(*before, index)] = filled[(*before, index)]
    return values.copy(data=out)


def held_out_mean(observed: xr.DataArray, cells: xr.DataArray) -> xr.DataArray:
    """The oracle: each num_tasks' mean observed weight over ``cells``, the very cells it is
    scored on (so it sees them, and is no baseline)."""
    return observed.where(cells).mean("checkpoint", skipna=True).broadcast_like(observed)


def _fitted_values(observed, fitted):
    """The observed weight where fitted; a split with no fitted cell takes, cell by cell,
    the mean of the fitted splits (what an id-only fit predicts the other splits from)."""
    known = fitted & observed.notnull()
    values = observed.where(known)
    split_fitted = known.any([d for d in known.dims if d != "split"])
    if bool(split_fitted.all()) or not bool(split_fitted.any()):
        return values, known
    pooled = values.sel(split=split_fitted).mean("split")
    values = values.where(split_fitted, pooled)
    known = known.where(split_fitted, known.sel(split=split_fitted).any("split"))
    return values, known.astype(bool)


def _persistence(values, known):
    """Each run's mean over its last PERSISTENCE_CHECKPOINTS fitted checkpoints."""
    later = known.isel(checkpoint=slice(None, None, -1)).cumsum("checkpoint")
    later = later.isel(checkpoint=slice(None, None, -1))  # fitted cells at or after each
    last = known & (later <= PERSISTENCE_CHECKPOINTS)
    return values.where(last).mean("checkpoint")


def _leave_one_out_mean(values, known, dim: str):
    """Mean over ``dim`` of the known values, each entry's own left out (NaN if none)."""
    own = values.where(known, 0.0)
    count = known.sum(dim) - known
    return ((own.sum(dim) - own) / count).where(count > 0)


def _fill(values: xr.DataArray, configurations: list[str]) -> xr.DataArray:
    """Runs without a value take their neighbours' in log num_tasks; a configuration with
    no fitted run at all (a held-out seed) takes the other configurations' mean."""
    filled = _fill_num_tasks(values)
    if configurations:
        filled = filled.fillna(filled.mean(configurations))
    return filled


def _fill_num_tasks(values: xr.DataArray) -> xr.DataArray:
    """NaN cells filled by linear interpolation in log num_tasks between the known values
    of the same row, the nearest known value beyond the ends."""
    log_tasks = np.log(values.num_tasks.values.astype(np.float64))
    filled = xr.apply_ufunc(
        interpolate_missing,
        values,
        kwargs={"x": log_tasks},
        input_core_dims=[["num_tasks"]],
        output_core_dims=[["num_tasks"]],
    )
    return filled.transpose(*values.dims)


def interpolate_missing(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Numpy core over the last axis: NaN entries of ``y`` interpolated linearly in ``x``
    (increasing) between their known neighbours, the nearest known one past the ends; rows
    with no known entry stay NaN."""
    known = ~np.isnan(y)
    index = np.arange(y.shape[-1])
    left = np.maximum.accumulate(np.where(known, index, -1), axis=-1)
    right = np.minimum.accumulate(np.where(known, index, y.shape[-1])[..., ::-1], axis=-1)
    right = right[..., ::-1]
    has_left, has_right = left >= 0, right < y.shape[-1]
    left_i, right_i = np.clip(left, 0, None), np.clip(right, None, y.shape[-1] - 1)
    y_left = np.take_along_axis(y, left_i, axis=-1)
    y_right = np.take_along_axis(y, right_i, axis=-1)
    span = x[right_i] - x[left_i]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(span > 0, (x[index] - x[left_i]) / span, 0.0)
    between = y_left + t * (y_right - y_left)
    out = np.where(has_left & has_right, between, np.where(has_left, y_left, y_right))
    return np.where(known, y, out)


# ---------------------------------------------------------------------------- scores


def _scores(predicted, observed, scored) -> xr.Dataset:
    """RMSE and Pearson r over the scored cells of each split (NaN where the predictor
    leaves a scored cell unpredicted: it is then not scored on the same cells)."""
    cells = [d for d in observed.dims if d != "split"]
    error = (predicted - observed).where(scored)
    complete = ~(scored & predicted.isnull()).any(cells)
    rmse = np.sqrt((error**2).mean(cells)).where(complete)
    p, o = predicted.where(scored), observed.where(scored)
    dp, do = p - p.mean(cells), o - o.mean(cells)
    covariance = (dp * do).mean(cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / np.sqrt((dp**2).mean(cells) * (do**2).mean(cells))
    return xr.Dataset({"rmse": rmse, "correlation": correlation.where(complete)})


def _mean_over(scores, predicted, scored) -> xr.DataArray:
    """Mean per split of per-cell ``scores`` over the scored cells (NaN where a scored cell
    has no prediction: the predictor is then not scored on the same cells)."""
    cells = [d for d in scored.dims if d != "split"]
    complete = ~(scored & predicted.isnull()).any(cells)
    return (scores.where(scored).sum(cells) / scored.sum(cells)).where(complete)


def _normal_scores(point, spread, observed, scored) -> dict[str, xr.DataArray]:
    """CRPS and 90% coverage of a normal of scale ``spread`` (per split) around ``point``,
    censored to [0, 1] as the observed weight is (closed form, ``scoringrules``)."""
    point = point.where(point.notnull(), 0.5)  # unscored where NaN: _mean_over drops it
    crps = xr.apply_ufunc(
        scoringrules.crps_cnormal, observed, point, spread, kwargs={"lower": 0.0, "upper": 1.0}
    )
    # the PIT range [F(y-), F(y)]: the censored normal has its masses at 0 and 1
    below_y = xr.apply_ufunc(scipy.stats.norm.cdf, (observed - point) / spread)
    below = below_y.where(observed > 0.0, 0.0)
    at_or_below = below_y.where(observed < 1.0, 1.0)
    inside = xr.apply_ufunc(_central_share, below, at_or_below)
    return {
        "crps": _mean_over(crps, point, scored),
        "coverage": _mean_over(inside.astype(float), point, scored),
    }


def _draw_scores(draws, observed, scored, sample_dims) -> dict[str, xr.DataArray]:
    """CRPS (``scoringrules``, the fair estimator by probability weighted moments) and 90%
    coverage of predictive draws (``sample_dims`` + cells)."""
    stacked = draws.stack(sample=list(sample_dims)).drop_vars(["sample", *sample_dims])
    crps = xr.apply_ufunc(
        scoringrules.crps_ensemble,
        observed,
        stacked,
        input_core_dims=[[], ["sample"]],
        kwargs={"estimator": "pwm"},  # the fair (unbiased) estimator, O(m log m)
    )
    point = draws.isel({d: 0 for d in sample_dims}, drop=True).broadcast_like(observed)
    return {
        "crps": _mean_over(crps, point, scored),
        "coverage": _coverage(observed, draws, scored, sample_dims),
    }


def _coverage(observed, predictive, scored, sample_dims) -> xr.DataArray:
    """Share of the scored cells whose observed weight lies in the central 90% of its
    predictive distribution, per split (NaN without predictive draws).

    A cell is inside when its probability integral transform (PIT), the predictive's
    F(observed), lies in ``INTERVAL``. The observed weight and its predictive both have
    point masses at 0 and 1, where the PIT is a range [F(y-), F(y)], not a value; the cell
    then counts by the share of that range inside ``INTERVAL`` (the randomized PIT's
    expectation). A calibrated predictive so covers 90% of the cells; counting every bound
    cell inside a closed interval that reaches the bound would cover more than 90% by
    construction wherever many cells sit at 0 or 1.
    """
    cells = [d for d in observed.dims if d != "split"]
    if predictive is None:
        return xr.full_like(observed.isel({d: 0 for d in cells}, drop=True), np.nan, float)
    below = (predictive < observed).mean(list(sample_dims))
    at_or_below = (predictive <= observed).mean(list(sample_dims))
    inside = xr.apply_ufunc(_central_share, below, at_or_below)
    return inside.where(scored).sum(cells) / scored.sum(cells)


def _central_share(below: np.ndarray, at_or_below: np.ndarray) -> np.ndarray:
    """Numpy core: the share of each PIT range [below, at_or_below] inside ``INTERVAL``; a
    range of width 0 (no draw ties the observation) is inside or not."""
    low, high = INTERVAL
    width = at_or_below - below
    overlap = np.clip(np.minimum(at_or_below, high) - np.maximum(below, low), 0.0, None)
    point = (at_or_below >= low) & (at_or_below <= high)
    return np.where(width > 0, overlap / np.where(width > 0, width, 1.0), point)


def _describe(skill: xr.Dataset) -> xr.Dataset:
    texts = {
        "rmse": "root mean squared error of the predicted weight on memorizing, held-out cells",
        "correlation": "Pearson correlation of predicted and observed weight, held-out cells",
        "coverage": (
            "share of held-out cells in the central 90% of the predictor's predictive "
            "(PIT in [0.05, 0.95]; cells at 0 or 1 by their share of the PIT range); a "
            "baseline's predictive is a normal of its fitted residuals' spread, censored"
        ),
        "crps": (
            "mean continuous ranked probability score of the predictive, held-out cells "
            "(scoringrules: the fair estimator on draws, closed form for a baseline's "
            "censored normal)"
        ),
        "skill": "1 - RMSE of the model / RMSE of the best baseline that sees only fitted cells",
        "best_baseline": "the baseline (seeing only fitted cells) with the lowest RMSE",
        "crps_skill": "1 - CRPS of the model / CRPS of the best baseline by CRPS",
        "best_crps_baseline": "the baseline (seeing only fitted cells) with the lowest CRPS",
        "law_free_skill": (
            "what the law adds: 1 - RMSE of the model / RMSE of the better law-free reference "
            "(the model's drift and noise around each run's level or line in log N)"
        ),
        "law_free_crps_skill": "1 - CRPS of the model / CRPS of the better law-free reference",
        "best_law_free": "the law-free reference with the lower RMSE",
        "num_cells": "held-out cells scored",
    }
    for name, text in texts.items():
        if name in skill:
            skill[name].attrs["description"] = text
    return skill

"""The transition step forecast from early training: from a ``forecast:F`` fit, the step
N*(D) at which each run's weight on memorizing will cross a level, with a 90% interval,
checked against the finished run and beside a straight line's extrapolation.

A researcher with a half-trained sweep wants to know when each run will switch strategy.
The fit has seen the checkpoints up to F x max_steps (the forecast origin); its posterior
draws of each run's mean path (``expected_weight``) continue past the origin. The level a
run must cross is, by default, halfway between its first fitted weight and the fit's
predicted last weight (posterior median): both known at the origin, so the event is defined
without the held-out checkpoints. The observed step is where the finished run first crosses
that level; a run is scored when that happens after the origin (a crossing before it was
seen, not forecast). The baseline is each run's least-squares line in log N over its fitted
checkpoints, extrapolated to the level. Steps are interpolated linearly in log N between
checkpoints; a path that does not cross by the last checkpoint has step +inf.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.vocabulary import SAMPLE_DIMS

INTERVAL = (0.05, 0.95)
# A run whose predicted last weight is within this of its first has no transition to
# forecast under the default (halfway) level: the level would sit in the noise.
MIN_CHANGE = 0.1


def transition_forecast(tree: xr.DataTree, level: float | None = None) -> xr.Dataset:
    """Forecast each run's transition step from a ``forecast:F`` fit and score it.

    Parameters
    ----------
    tree : xr.DataTree
        A fit with held-out design ``forecast:F`` (docs/files.md §3).
    level : float, optional
        The weight on memorizing whose crossing defines N*, the same for every run (e.g.
        0.5). Default: per run, halfway between its first fitted weight and its predicted
        last weight.

    Returns
    -------
    xr.Dataset
        Dims (config..., num_tasks, split): ``level``, ``forecast_origin`` (the run's last
        fitted step), ``observed_step``, ``predicted_median``, ``predicted_low``,
        ``predicted_high`` (90% interval over draws), ``no_crossing`` (share of draws that
        do not cross by the last checkpoint), ``baseline_step``, ``forecast`` (a run with
        a level to cross that had not crossed it by the origin), ``scored`` (of those, the
        ones whose finished run crosses) and ``covered``. Attributes: ``num_scored``,
        ``median_abs_log_error`` and ``baseline_median_abs_log_error`` (over the scored
        runs, |log(forecast / observed)|, inf where no crossing was forecast),
        ``coverage`` (share of scored runs inside the interval), ``level_rule``.
    """
    design = str(tree.attrs.get("held_out_design", "authors"))
    if not design.startswith("forecast:"):
        raise RiclError(
            f"the transition step forecast needs a fit with --held-out forecast:F; this fit's "
            f"design is {design}"
        )
    if level is not None and not 0.0 < level < 1.0:
        raise RiclError(f"--transition-level must lie strictly between 0 and 1; got {level}")
    observed = tree.observed_data.observed_weight.transpose(..., "checkpoint")
    fitted = tree.constant_data.fit_mask.broadcast_like(observed).transpose(*observed.dims)
    draws = _draws(tree).transpose("sample", *observed.dims)
    log_steps = np.log(observed.checkpoint.values.astype(np.float64))

    w, m, paths = observed.values, fitted.values, draws.values
    start = np.argmax(m, axis=-1)  # the first fitted checkpoint of each run
    origin = m.shape[-1] - 1 - np.argmax(m[..., ::-1], axis=-1)  # the last fitted one
    first = np.take_along_axis(w, start[..., None], -1)[..., 0]
    predicted_last = np.median(paths[..., -1], axis=0)
    change = predicted_last - first
    if level is None:
        crossing_level = first + change / 2
        eligible = np.abs(change) >= MIN_CHANGE
    else:
        crossing_level = np.full_like(first, level)
        eligible = np.ones_like(first, dtype=bool)
    eligible &= m.any(axis=-1)

    observed_log = first_crossing(w, log_steps, crossing_level, start)
    predicted_log = first_crossing(paths, log_steps, crossing_level, start)
    baseline_log = _line_crossing(w, m, log_steps, crossing_level, origin, first)
    low, median, high = _quantiles_with_inf(predicted_log, log_steps[-1])
    forecast = eligible & (observed_log > log_steps[origin])  # not crossed by the origin
    scored = forecast & np.isfinite(observed_log)
    covered = scored & (low <= observed_log) & (observed_log <= high)

    dims = observed.dims[:-1]
    coords = {d: observed[d] for d in dims if d in observed.coords}
    steps = {
        "level": crossing_level,
        "forecast_origin": observed.checkpoint.values[origin],
        "observed_step": np.exp(observed_log),
        "predicted_median": np.exp(median),
        "predicted_low": np.exp(low),
        "predicted_high": np.exp(high),
        "no_crossing": np.isinf(predicted_log).mean(axis=0),
        "baseline_step": np.exp(baseline_log),
        "forecast": forecast,
        "scored": scored,
        "covered": covered,
    }
    result = xr.Dataset({k: (dims, np.asarray(v)) for k, v in steps.items()}, coords=coords)
    return result.assign_attrs(
        design=design,
        last_checkpoint=float(observed.checkpoint.values[-1]),
        level_rule="halfway from the first fitted weight to the predicted last"
        if level is None
        else f"weight {level:g}",
        **_scores(observed_log, median, baseline_log, scored, covered),
    )


def first_crossing(
    path: np.ndarray, log_steps: np.ndarray, level: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Log step where ``path`` (..., K) first crosses ``level`` (...) after checkpoint
    index ``start`` (...): the side of the level it starts on at ``start`` changes (or it
    touches the level). Linear in log N between the two checkpoints; +inf where it never
    crosses. ``path`` may have leading dims (draws) that ``level`` and ``start`` broadcast
    to."""
    level = np.broadcast_to(level, path.shape[:-1])
    start = np.broadcast_to(start, path.shape[:-1])
    side = np.sign(path - level[..., None])
    initial = np.take_along_axis(side, start[..., None], -1)
    after = np.arange(path.shape[-1]) > start[..., None]
    crossed = after & (side != initial) & (initial != 0)
    k1 = np.argmax(crossed, axis=-1)
    k0 = np.maximum(k1 - 1, 0)
    w0 = np.take_along_axis(path, k0[..., None], -1)[..., 0]
    w1 = np.take_along_axis(path, k1[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.clip(np.where(w1 != w0, (level - w0) / (w1 - w0), 1.0), 0.0, 1.0)
    log_step = log_steps[k0] + fraction * (log_steps[k1] - log_steps[k0])
    return np.where(crossed.any(axis=-1), log_step, np.inf)


def _draws(tree: xr.DataTree) -> xr.DataArray:
    """Each run's mean path per posterior draw, draws stacked on ``sample``."""
    group = "posterior" if "expected_weight" in tree.posterior else "posterior_predictive"
    paths = tree[group]["expected_weight"]
    return paths.stack(sample=SAMPLE_DIMS).reset_index("sample", drop=True)


def _line_crossing(w, fitted, log_steps, level, origin, first) -> np.ndarray:
    """Where each run's least-squares line in log N over its fitted checkpoints reaches
    ``level``: the origin where the line is already past it (on the other side from the
    run's ``first`` weight), +inf where the line heads away from it."""
    count = fitted.sum(axis=-1)
    x = np.broadcast_to(log_steps, w.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_mean = np.where(fitted, x, 0.0).sum(axis=-1) / count
        y_mean = np.where(fitted, w, 0.0).sum(axis=-1) / count
        dx, dy = x - x_mean[..., None], w - y_mean[..., None]
        slope = np.where(fitted, dx * dy, 0.0).sum(-1) / np.where(fitted, dx * dx, 0.0).sum(-1)
        at_origin = y_mean + slope * (log_steps[origin] - x_mean)
        crossing = log_steps[origin] + (level - at_origin) / slope
    past = np.sign(at_origin - level) != np.sign(first - level)
    ahead = np.isfinite(crossing) & (crossing > log_steps[origin])
    return np.where(past, log_steps[origin], np.where(ahead, crossing, np.inf))


def _quantiles_with_inf(log_steps: np.ndarray, last: float) -> tuple[np.ndarray, ...]:
    """5%, 50%, 95% over draws (axis 0) of log steps that may be +inf (no crossing)."""
    beyond = last + 50.0  # any finite stand-in above every step; mapped back to inf
    finite = np.where(np.isinf(log_steps), beyond, log_steps)
    found = np.quantile(finite, [INTERVAL[0], 0.5, INTERVAL[1]], axis=0)
    return tuple(np.where(q > last + 25.0, np.inf, q) for q in found)


def _scores(observed, median, baseline, scored, covered) -> dict[str, float | int]:
    count = int(scored.sum())
    with np.errstate(invalid="ignore"):
        model = np.abs(median - observed)[scored]
        line = np.abs(baseline - observed)[scored]
    return {
        "num_scored": count,
        "median_abs_log_error": float(np.median(model)) if count else np.nan,
        "baseline_median_abs_log_error": float(np.median(line)) if count else np.nan,
        "coverage": float(covered.sum() / count) if count else np.nan,
    }

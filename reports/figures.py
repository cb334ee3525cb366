"""The report's figures: one function per figure, xarray objects in, a matplotlib Figure out.

Inputs are the behaviour dataset of a sweep (docs/files.md §2, from
:func:`rational_icl.fits.load_behaviour`) and a fit (docs/files.md §3, an ``xarray.DataTree``).
A figure that needs something the caller does not have raises :class:`FigureUnavailable`
with the reason, so a report made from runs alone can say which figures it left out.

Conventions: num_tasks is drawn on a log2 axis, training steps on a log axis, every colour
bar has a title, and the ``id`` and ``ood`` splits sit side by side. Where a sweep varies
a configuration (MLP width, context length, num_dims), per-cell figures show the one
selected by ``config`` (default: the first).
"""

from __future__ import annotations

import math
import warnings

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from rational_icl import formulas
from rational_icl.vocabulary import CONFIG_DIMS, LAW_PARAMETERS, SAMPLE_DIMS, WEIGHT_STRATEGIES

INTERVAL = (0.05, 0.95)  # the 90% intervals and bands of every figure
_WEIGHT_LABEL = "weight on memorizing (1)"
_STEP_LABEL = "training step N (log scale)"
_TASKS_LABEL = "num_tasks D (log2 scale)"
_STRATEGY_STYLE = {
    "memorizing": {"color": "tab:red", "marker": "o"},
    "generalizing": {"color": "tab:blue", "marker": "s"},
    "constant": {"color": "tab:gray", "marker": "^"},
}


class FigureUnavailable(Exception):
    """The inputs given cannot make this figure; the message says what is missing."""


# ---------------------------------------------------------------------------- helpers


def configurations(data: xr.Dataset | xr.DataArray) -> list[dict]:
    """Every combination of the configuration dims ``data`` varies along ([{}] if none)."""
    dims = [d for d in CONFIG_DIMS if d in data.dims]
    if not dims:
        return [{}]
    grid = np.meshgrid(*(data[d].values for d in dims), indexing="ij")
    return [
        {d: np.asarray(g).item() for d, g in zip(dims, values, strict=True)}
        for values in zip(*(g.ravel() for g in grid), strict=True)
    ]


def _select(data, config: dict | None):
    """``data`` at one configuration; the first one where ``config`` leaves a dim open."""
    config = config or {}
    index = {d: config[d] for d in CONFIG_DIMS if d in data.dims and d in config}
    data = data.sel(index)
    rest = {d: 0 for d in CONFIG_DIMS if d in data.dims}
    return data.isel(rest)


def _observed(behaviour: xr.Dataset | None, fit: xr.DataTree | None) -> xr.DataArray:
    """The observed weight on memorizing: the one the fit read, else the behaviour
    dataset's default measure (barycentric, or the relative distance in older files)."""
    if fit is not None:
        return fit["observed_data"]["observed_weight"]
    if behaviour is not None:
        name = "barycentric_weight" if "barycentric_weight" in behaviour else "relative_distance"
        return behaviour[name]
    raise FigureUnavailable("needs the runs (behaviour) or a fit")


def _need_fit(fit: xr.DataTree | None) -> xr.DataTree:
    if fit is None:
        raise FigureUnavailable("needs a fit (fit.nc); only runs were given")
    return fit


def _posterior(fit: xr.DataTree, name: str, config) -> xr.DataArray:
    return _select(fit["posterior"][name], config)


def _predicted(fit: xr.DataTree, config) -> xr.DataArray:
    """The fit's prediction of each cell, the posterior mean of ``expected_weight``."""
    from rational_icl.fits.metrics import predicted_weight

    return _select(predicted_weight(fit), config)


def _held_out(fit: xr.DataTree, config) -> xr.DataArray:
    return _select(fit["constant_data"]["held_out"], config)


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around increasing centres: midpoints, with half cells at the ends."""
    centres = np.asarray(centres, dtype=np.float64)
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[1:] + centres[:-1]) / 2
    return np.concatenate(
        [[centres[0] - (middle[0] - centres[0])], middle, [centres[-1] + centres[-1] - middle[-1]]]
    )


def _tasks_norm(num_tasks) -> mcolors.Normalize:
    log2 = np.log2(np.asarray(num_tasks, dtype=np.float64))
    return mcolors.Normalize(vmin=log2.min(), vmax=max(log2.max(), log2.min() + 1))


def _tasks_colorbar(fig: Figure, axes, norm, cmap="viridis") -> None:
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes)
    bar.set_label("log2 num_tasks")


def _log2_axis(ax, axis: str = "x") -> None:
    if axis == "x":
        ax.set_xscale("log", base=2)
    else:
        ax.set_yscale("log", base=2)


def _splits(data) -> list[str]:
    return [str(s) for s in data["split"].values]


def _cell_map(ax, values: xr.DataArray, norm, cmap) -> plt.cm.ScalarMappable:
    """A (num_tasks, checkpoint) map: log steps across, log2 num_tasks up."""
    values = values.transpose("num_tasks", "checkpoint")
    x = np.exp(_edges(np.log(values["checkpoint"].values.astype(np.float64))))
    y = 2.0 ** _edges(np.log2(values["num_tasks"].values.astype(np.float64)))
    mesh = ax.pcolormesh(x, y, values.values, norm=norm, cmap=cmap, shading="flat")
    ax.set_xscale("log")
    _log2_axis(ax, "y")
    ax.set_xlabel(_STEP_LABEL)
    ax.set_ylabel(_TASKS_LABEL)
    return mesh


def _mark_held_out(ax, held_out: xr.DataArray) -> None:
    held_out = held_out.transpose("num_tasks", "checkpoint")
    d, n = np.nonzero(held_out.values)
    ax.scatter(
        held_out["checkpoint"].values[n],
        held_out["num_tasks"].values[d],
        marker="x",
        s=10,
        linewidths=0.6,
        color="tab:cyan",
        label="held out",
    )


# ---------------------------------------------------------------------------- 1


def weight_map(
    behaviour: xr.Dataset | None = None, fit: xr.DataTree | None = None, config=None
) -> Figure:
    """Figure 1: observed weight on memorizing over (training step × num_tasks), and the
    fitted model's prediction beside it (posterior mean), held-out cells marked ×."""
    observed = _select(_observed(behaviour, fit), config)
    splits = _splits(observed)
    rows = 2 if fit is not None else 1
    fig, axes = plt.subplots(
        rows,
        len(splits),
        figsize=(5 * len(splits), 3.6 * rows),
        squeeze=False,
        layout="constrained",
    )
    norm = mcolors.Normalize(0.0, 1.0)
    panels = [("observed", observed)]
    if fit is not None:
        predicted = _predicted(fit, config)
        panels.append(("predicted (posterior mean)", predicted))
    for row, (label, values) in enumerate(panels):
        for col, split in enumerate(splits):
            ax = axes[row, col]
            mesh = _cell_map(ax, values.sel(split=split), norm, "magma")
            if fit is not None:
                _mark_held_out(ax, _held_out(fit, config))
            ax.set_title(f"{label}, {split}")
    bar = fig.colorbar(mesh, ax=axes)
    bar.set_label(_WEIGHT_LABEL)
    if fit is not None:
        axes[0, 0].legend(loc="lower left", fontsize="small")
    return fig


# ---------------------------------------------------------------------------- 2


def weight_over_training(
    behaviour: xr.Dataset | None = None, fit: xr.DataTree | None = None, config=None
) -> Figure:
    """Figure 2: weight on memorizing over training for each num_tasks: observed points,
    posterior mean (line) and 90% posterior predictive band. With a drift model the line
    follows each run's drift, so the law alone (``weight_memorizing``) is drawn dashed."""
    observed = _select(_observed(behaviour, fit), config)
    with_drift = fit is not None and "drift_scale" in fit["posterior"]
    splits = _splits(observed)
    num_tasks = observed["num_tasks"].values
    norm, cmap = _tasks_norm(num_tasks), plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False, layout="constrained"
    )
    steps = observed["checkpoint"].values
    for ax, split in zip(axes[0], splits, strict=True):
        for d in num_tasks:
            color = cmap(norm(np.log2(d)))
            ax.scatter(steps, observed.sel(split=split, num_tasks=d), s=8, color=color)
            if fit is None:
                continue
            mean = _predicted(fit, config).sel(split=split, num_tasks=d)
            ax.plot(steps, mean, color=color, lw=1.2)
            if with_drift:
                law = _posterior(fit, "weight_memorizing", config).sel(num_tasks=d)
                ax.plot(steps, law.mean(SAMPLE_DIMS), "--", color=color, lw=0.9)
            draws = _select(fit["posterior_predictive"]["observed_weight"], config)
            band = draws.sel(split=split, num_tasks=d).quantile(INTERVAL, dim=SAMPLE_DIMS)
            ax.fill_between(steps, band[0], band[1], color=color, alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(_STEP_LABEL)
        ax.set_ylabel(_WEIGHT_LABEL)
        ax.set_title(split)
    # the key goes once above the panels: repeated in each title it overran its neighbours
    key = "points: observed"
    if fit is not None:
        key += "; lines: posterior mean"
        key += " (dashed: the law alone, without the run's drift)" if with_drift else ""
        key += "; bands: 90% posterior predictive"
    fig.suptitle(key)
    _tasks_colorbar(fig, axes, norm)
    return fig


# ---------------------------------------------------------------------------- 3


def predicted_vs_observed(fit: xr.DataTree | None, config=None) -> Figure:
    """Figure 3: predicted (posterior mean) against observed weight per cell, fitted and
    held-out cells distinguished, Pearson correlations in the legend."""
    fit = _need_fit(fit)
    observed = _select(fit["observed_data"]["observed_weight"], config)
    predicted = _predicted(fit, config)
    held_out = _held_out(fit, config).broadcast_like(observed)
    splits = _splits(observed)
    fig, axes = plt.subplots(
        1, len(splits), figsize=(4.5 * len(splits), 4.2), squeeze=False, layout="constrained"
    )
    for ax, split in zip(axes[0], splits, strict=True):
        o, p = observed.sel(split=split).values, predicted.sel(split=split).values
        h = held_out.sel(split=split).values
        for subset, mask, style in [
            ("fitted", ~h, {"color": "tab:blue", "marker": "o"}),
            ("held out", h, {"color": "tab:orange", "marker": "D"}),
        ]:
            mask = mask & np.isfinite(o)
            key = f"{'heldout' if subset == 'held out' else 'fitted'}_correlation_{split}"
            r = fit.attrs.get(key, _pearson(p[mask], o[mask]))
            ax.scatter(o[mask], p[mask], s=12, alpha=0.7, label=f"{subset}: r = {r:.3f}", **style)
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.set_xlabel(f"observed {_WEIGHT_LABEL}")
        ax.set_ylabel(f"predicted {_WEIGHT_LABEL}")
        ax.set_title(split)
        ax.legend(loc="upper left", fontsize="small")
    return fig


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------- 4, 5


def parameter_trace(fit: xr.DataTree | None) -> Figure:
    """Figure 4a: posterior density and trace of every parameter per chain (arviz-plots)."""
    import arviz_plots as azp

    from rational_icl.fits.tree import parameter_names

    fit = _need_fit(fit)
    plot = azp.plot_trace_dist(
        fit, var_names=parameter_names(fit, per_run=False), backend="matplotlib"
    )
    return _arviz_figure(plot)


def parameter_rank(fit: xr.DataTree | None) -> Figure:
    """Figure 4b: rank plots per chain (uniform ranks mean the chains agree; arviz-plots)."""
    import arviz_plots as azp

    from rational_icl.fits.tree import parameter_names

    fit = _need_fit(fit)
    if fit["posterior"].sizes["chain"] < 2:
        raise FigureUnavailable("rank plots need at least 2 chains")
    plot = azp.plot_rank(fit, var_names=parameter_names(fit, per_run=False), backend="matplotlib")
    return _arviz_figure(plot)


def posterior_predictive_check(fit: xr.DataTree | None) -> Figure:
    """Figure 5: distribution of the observed weight on memorizing over all cells against
    posterior predictive draws, per split (arviz-plots)."""
    import arviz_plots as azp

    fit = _need_fit(fit)
    plot = azp.plot_ppc_dist(
        fit, var_names=["observed_weight"], num_samples=50, cols=["split"], backend="matplotlib"
    )
    figure = _arviz_figure(plot)
    for ax in figure.axes:
        ax.set_xlabel(_WEIGHT_LABEL)
    return figure


def _arviz_figure(plot) -> Figure:
    figure = plot.viz.ds["figure"].item()
    figure.set_layout_engine("constrained")
    return figure


# ---------------------------------------------------------------------------- 6


def loss_complexity(
    behaviour: xr.Dataset | None = None, fit: xr.DataTree | None = None, config=None
) -> Figure:
    """Figure 6: the loss L_Q and complexity K_Q of each strategy against num_tasks, and the
    loss–complexity tradeoff (L against K, one point per num_tasks)."""
    source = behaviour if behaviour is not None else None
    if source is None and fit is not None:
        source = fit["constant_data"].to_dataset()
    if source is None:
        raise FigureUnavailable("needs the runs (behaviour) or a fit")
    source = _select(source, config)
    loss, complexity = source["strategy_loss"], source["strategy_complexity"]
    se = source["strategy_loss_se"] if "strategy_loss_se" in source else None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    num_tasks = loss["num_tasks"].values
    for strategy in [str(s) for s in loss["strategy"].values]:
        style = _STRATEGY_STYLE.get(strategy, {})
        error = None if se is None else se.sel(strategy=strategy).values
        axes[0].errorbar(
            num_tasks, loss.sel(strategy=strategy), yerr=error, label=strategy, ms=4, **style
        )
        axes[1].plot(num_tasks, complexity.sel(strategy=strategy), label=strategy, ms=4, **style)
        axes[2].plot(
            complexity.sel(strategy=strategy),
            loss.sel(strategy=strategy),
            label=strategy,
            ms=4,
            **style,
        )
    for ax in axes[:2]:
        _log2_axis(ax)
        ax.set_xlabel(_TASKS_LABEL)
    axes[0].set_ylabel("expected loss L_Q (nats per prediction)")
    axes[0].set_title("loss on training-task sequences")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("complexity K_Q (bits, log scale)")
    axes[1].set_title("complexity")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("complexity K_Q (bits, log scale)")
    axes[2].set_ylabel("expected loss L_Q (nats per prediction)")
    axes[2].set_title("tradeoff (one point per num_tasks)")
    for ax in axes:
        ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------- 7


def log_odds_terms(fit: xr.DataTree, config=None) -> xr.Dataset:
    """Posterior draws of the log prior odds, log Bayes factor and log posterior odds of
    memorizing against generalizing over (num_tasks, checkpoint), in nats.

    The Bayes factor is γ·N^(1−α)·(L_G − L_M); the prior odds are the posterior odds minus
    it, so they follow whatever complexity prior (or ablation) the fit used.
    """
    posterior = fit["posterior"]
    constant = fit["constant_data"]
    alpha, gamma = _select(posterior["alpha"], config), _select(posterior["gamma"], config)
    loss = _select(constant["strategy_loss"], config)
    l_m, l_g = (loss.sel(strategy=s, drop=True) for s in WEIGHT_STRATEGIES)
    steps = posterior["checkpoint"].astype(np.float64)
    bayes_factor = formulas.log_bayes_factor(steps, l_m, l_g, alpha, gamma)
    posterior_odds = _posterior(fit, "log_posterior_odds", config)
    return xr.Dataset(
        {
            "log_prior_odds": posterior_odds - bayes_factor,
            "log_bayes_factor": bayes_factor,
            "log_posterior_odds": posterior_odds,
        }
    ).transpose(*SAMPLE_DIMS, "num_tasks", "checkpoint")


def log_odds(fit: xr.DataTree | None, config=None) -> Figure:
    """Figure 7: posterior mean log prior odds, log Bayes factor and log posterior odds of
    memorizing over (training step × num_tasks); the line marks posterior odds of 0."""
    fit = _need_fit(fit)
    terms = log_odds_terms(fit, config).mean(SAMPLE_DIMS)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    titles = {
        "log_prior_odds": "log prior odds  −ln2·(K_M^β − K_G^β)",
        "log_bayes_factor": "log Bayes factor  γ·N^(1−α)·(L_G − L_M)",
        "log_posterior_odds": "log posterior odds",
    }
    for ax, (name, title) in zip(axes, titles.items(), strict=True):
        values = terms[name]
        limit = float(np.nanmax(np.abs(values.values))) or 1.0
        norm = mcolors.TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
        mesh = _cell_map(ax, values, norm, "RdBu_r")
        ax.contour(
            values["checkpoint"].values,
            values["num_tasks"].values,
            terms["log_posterior_odds"].transpose("num_tasks", "checkpoint").values,
            levels=[0.0],
            colors="black",
            linewidths=1.0,
        )
        ax.set_title(title, fontsize="medium")
        bar = fig.colorbar(mesh, ax=ax)
        bar.set_label("nats (>0 favours memorizing)")
    return fig


# ---------------------------------------------------------------------------- 8


def observed_transition_step(weight: xr.DataArray, threshold: float = 0.5) -> xr.DataArray:
    """The training step where the weight on memorizing first reaches ``threshold``,
    interpolated linearly in log N between checkpoints.

    NaN where it never does; the first checkpoint where it is reached there already (the
    true step is then at most that). Reduces the ``checkpoint`` dim.
    """
    weight = weight.transpose(..., "checkpoint")
    values = weight.values
    log_steps = np.log(weight["checkpoint"].values.astype(np.float64))
    above = values >= threshold
    first = np.argmax(above, axis=-1)
    reached = above.any(axis=-1)
    before = np.maximum(first - 1, 0)
    w0 = np.take_along_axis(values, before[..., None], -1)[..., 0]
    w1 = np.take_along_axis(values, first[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(first > 0, (threshold - w0) / (w1 - w0), 0.0)
    log_step = log_steps[before] + fraction * (log_steps[first] - log_steps[before])
    step = np.where(reached, np.exp(log_step), np.nan)
    dims = weight.dims[:-1]
    return xr.DataArray(step, dims=dims, coords={d: weight[d] for d in dims if d in weight.coords})


def predicted_transition_step(fit: xr.DataTree, config=None) -> xr.DataArray:
    """Posterior draws of N*(D) = [ln2·(K_M^β − K_G^β) / (γ·(L_G − L_M))]^(1/(1−α)).

    NaN where memorizing is not both more complex and better (no switch to it happens).
    """
    posterior, constant = fit["posterior"], fit["constant_data"]
    alpha, beta, gamma = (_select(posterior[p], config) for p in LAW_PARAMETERS)
    loss = _select(constant["strategy_loss"], config)
    complexity = _select(constant["strategy_complexity"], config)
    k_m, k_g = (complexity.sel(strategy=s, drop=True) for s in WEIGHT_STRATEGIES)
    l_m, l_g = (loss.sel(strategy=s, drop=True) for s in WEIGHT_STRATEGIES)
    linear = fit.attrs.get("ablation") == "linear-complexity"
    step = formulas.transition_step(l_m, l_g, k_m, k_g, alpha, beta, gamma, linear)
    return step.transpose(*SAMPLE_DIMS, "num_tasks")


def growth_exponent(num_tasks, steps) -> float:
    """Least-squares slope of log N* on log D over the finite values (NaN if < 2)."""
    x, y = np.log(np.asarray(num_tasks, float)), np.log(np.asarray(steps, float))
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(x[keep], y[keep], 1)[0])


def transition_steps(
    behaviour: xr.Dataset | None = None, fit: xr.DataTree | None = None, config=None
) -> Figure:
    """Figure 8: transition step N*(D) on log–log axes: observed (first crossing of 0.5)
    and predicted (posterior median, 90% interval), with the fitted growth exponents."""
    observed = _select(_observed(behaviour, fit), config)
    splits = _splits(observed)
    crossing = observed_transition_step(observed)
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5 * len(splits), 4), squeeze=False, layout="constrained"
    )
    predicted = None if fit is None else predicted_transition_step(fit, config)
    first_step = float(observed["checkpoint"].values[0])
    for ax, split in zip(axes[0], splits, strict=True):
        step = crossing.sel(split=split)
        num_tasks = step["num_tasks"].values
        exponent = growth_exponent(num_tasks, step.where(step > first_step).values)
        ax.plot(num_tasks, step, "o", color="black", label=f"observed (slope {exponent:.2f})")
        if predicted is not None:
            with warnings.catch_warnings():
                # all draws are NaN where memorizing never wins: expected, not worth a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                median = predicted.median(SAMPLE_DIMS)
                low, high = predicted.quantile(INTERVAL, dim=SAMPLE_DIMS)
            slope = growth_exponent(num_tasks, median.values)
            ax.plot(num_tasks, median, color="tab:purple", label=f"predicted (slope {slope:.2f})")
            ax.fill_between(num_tasks, low, high, color="tab:purple", alpha=0.2, lw=0)
        last_step = float(observed["checkpoint"].values[-1])
        ax.axhline(first_step, color="gray", lw=0.6, ls=":", label="first checkpoint")
        ax.axhline(last_step, color="gray", lw=0.6, ls="--", label="last")
        _log2_axis(ax)
        ax.set_yscale("log")
        # Fixed limits: a split where no num_tasks crosses 0.5 has no points to autoscale on.
        ax.set_xlim(num_tasks.min() / 1.5, num_tasks.max() * 1.5)
        ax.set_ylim(first_step / 2, last_step * 2)
        ax.set_xlabel(_TASKS_LABEL)
        ax.set_ylabel("transition step N* (training steps, log scale)")
        ax.set_title(f"{split}: where the weight on memorizing crosses 0.5")
        ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------- 8b


def transition_forecast(found: xr.Dataset, config=None) -> Figure:
    """Figure 8b: each run's transition step forecast from early training
    (``fits.transition.transition_forecast``): posterior median and 90% interval, the
    finished run's step and each run's line in log N, against num_tasks."""
    found = _select(found, config)
    origin = float(found.forecast_origin.max())
    if not found.forecast.any():
        raise FigureUnavailable(
            f"no run's weight crosses the level after the forecast origin (step {origin:.0f}):"
            " nothing to forecast"
        )
    splits = _splits(found)
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5 * len(splits), 4), squeeze=False, layout="constrained"
    )
    ceiling = float(found.attrs.get("last_checkpoint", origin)) * 2
    for ax, split in zip(axes[0], splits, strict=True):
        at = found.sel(split=split)
        crossing = at.forecast.values & np.isfinite(at.predicted_median.values)
        num_tasks = at.num_tasks.values
        median = at.predicted_median.values
        low = at.predicted_low.values
        high = np.minimum(at.predicted_high.values, ceiling)  # an open interval to the top
        ax.errorbar(
            num_tasks[crossing],
            median[crossing],
            yerr=[median[crossing] - low[crossing], high[crossing] - median[crossing]],
            fmt="o",
            color="tab:purple",
            capsize=3,
            label="forecast (median, 90%)",
        )
        scored = at.scored.values
        ax.plot(num_tasks[scored], at.observed_step.values[scored], "k*", ms=10, label="observed")
        line = np.where(at.forecast.values, at.baseline_step.values, np.nan)
        ax.plot(
            num_tasks,
            np.where(line < ceiling, line, np.nan),
            "x",
            color="tab:orange",
            label="line in log N",
        )
        ax.axhline(origin, color="gray", lw=0.8, ls=":", label="forecast origin")
        _log2_axis(ax)
        # every num_tasks on the axis, whether or not its run has a point in this split
        ax.set_xlim(num_tasks.min() / 1.5, num_tasks.max() * 1.5)
        ax.set_yscale("log")
        ax.set_ylim(top=ceiling)
        ax.set_xlabel(_TASKS_LABEL)
        ax.set_ylabel("transition step N* (training steps, log scale)")
        ax.set_title(f"{split}: N* forecast from step {origin:.0f}")
        ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------- 9


def intermediate_num_tasks(num_tasks) -> np.ndarray:
    """The middle half of the num_tasks values (at least one): where transience shows."""
    values = np.sort(np.asarray(num_tasks))
    quarter = len(values) // 4
    middle = values[quarter : len(values) - quarter]
    return middle if middle.size else values


def transience(
    behaviour: xr.Dataset | None = None, fit: xr.DataTree | None = None, config=None
) -> Figure:
    """Figure 9: the weight on generalizing over training at intermediate num_tasks:
    observed points and, with a fit, the posterior mean."""
    observed = _select(_observed(behaviour, fit), config)
    chosen = intermediate_num_tasks(observed["num_tasks"].values)
    generalizing = 1 - observed.sel(num_tasks=chosen)
    splits = _splits(observed)
    norm, cmap = _tasks_norm(observed["num_tasks"].values), plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False, layout="constrained"
    )
    steps = observed["checkpoint"].values
    for ax, split in zip(axes[0], splits, strict=True):
        for d in chosen:
            color = cmap(norm(np.log2(d)))
            ax.plot(steps, generalizing.sel(split=split, num_tasks=d), "o-", ms=3, color=color)
            if fit is not None:
                mean = _predicted(fit, config)
                mean = 1 - mean.sel(split=split, num_tasks=d)
                ax.plot(steps, mean, "--", color=color, lw=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(_STEP_LABEL)
        ax.set_ylabel("weight on generalizing (1)")
        title = f"{split}: observed (points)"
        ax.set_title(title + (", posterior mean (dashed)" if fit is not None else ""))
    _tasks_colorbar(fig, axes, norm)
    return fig


# ---------------------------------------------------------------------------- 10


def losses_over_training(behaviour: xr.Dataset | None, config=None, max_lines: int = 4) -> Figure:
    """Figure 10: the transformer's loss over training against the strategies' expected
    losses L_M (dashed) and L_G (dotted), for up to ``max_lines`` num_tasks values."""
    if behaviour is None or "transformer_loss" not in behaviour:
        raise FigureUnavailable("needs the runs folder (transformer_loss is not in a fit)")
    data = _select(behaviour, config)
    num_tasks = data["num_tasks"].values
    chosen = num_tasks[np.unique(np.linspace(0, len(num_tasks) - 1, max_lines).round().astype(int))]
    norm, cmap = _tasks_norm(num_tasks), plt.get_cmap("viridis")
    splits = _splits(data)
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5.5 * len(splits), 4), squeeze=False, layout="constrained"
    )
    steps = data["checkpoint"].values
    for ax, split in zip(axes[0], splits, strict=True):
        for d in chosen:
            color = cmap(norm(np.log2(d)))
            ax.plot(steps, data["transformer_loss"].sel(split=split, num_tasks=d), color=color)
            for strategy, style in [("memorizing", "--"), ("generalizing", ":")]:
                level = float(data["strategy_loss"].sel(strategy=strategy, num_tasks=d))
                ax.axhline(level, color=color, ls=style, lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(_STEP_LABEL)
        ax.set_ylabel("loss (nats per prediction, log scale)")
        ax.set_title(f"{split}: transformer (solid), L_M (dashed), L_G (dotted)")
    _tasks_colorbar(fig, axes, norm)
    return fig


# ---------------------------------------------------------------------------- 11


def parameters_by_configuration(fit: xr.DataTree | None) -> Figure:
    """Figure 11: β, 1 − α and γ (posterior median, 90% interval) against each
    configuration dim the pooled fit has per-configuration parameters for."""
    fit = _need_fit(fit)
    posterior = fit["posterior"]
    dims = [d for d in CONFIG_DIMS if d in posterior["beta"].dims or d in posterior["alpha"].dims]
    if not dims:
        raise FigureUnavailable("the fit has one set of parameters (no per-configuration fit)")
    quantities = {
        "beta": posterior["beta"],
        "1 - alpha": 1 - posterior["alpha"],
        "gamma": posterior["gamma"],
    }
    fig, axes = plt.subplots(
        len(quantities),
        len(dims),
        figsize=(4.5 * len(dims), 8),
        squeeze=False,
        layout="constrained",
    )
    for col, dim in enumerate(dims):
        for row, (name, values) in enumerate(quantities.items()):
            ax = axes[row, col]
            if dim not in values.dims:
                ax.text(0.5, 0.5, f"{name}: shared", ha="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            others = [d for d in values.dims if d not in (*SAMPLE_DIMS, dim)]
            stacked = values.stack(series=others) if others else values.expand_dims("series")
            x = values[dim].values.astype(float)
            for i in range(stacked.sizes["series"]):
                series = stacked.isel(series=i)
                median = series.median(SAMPLE_DIMS).values
                low, high = series.quantile(INTERVAL, dim=SAMPLE_DIMS).values
                ax.errorbar(
                    x + 0.02 * i * x,
                    median,
                    yerr=[median - low, high - median],
                    fmt="o" if dim == "seed" else "o-",  # seeds are labels: no line
                    capsize=3,
                    ms=4,
                )
            if dim == "seed":
                _population_band(ax, fit, name)
            if dim == "seed":  # replicates: a label, not a size
                ax.set_xticks(x)
                ax.set_xlabel("training seed")
            else:
                ax.set_xscale("log", base=2)
                ax.set_xlabel(f"{dim} (log2 scale)")
            ax.set_ylabel(f"{name} (1)")
    fig.suptitle("per-configuration parameters: median and 90% interval")
    return fig


def _population_band(ax, fit: xr.DataTree, name: str) -> None:
    """The population median and the 95% range of a new configuration (a new seed), for a
    partially pooled fit."""
    from rational_icl.fits.diagnostics import population_summary

    parameter = name.replace("1 - ", "")
    found = population_summary(fit)
    if parameter not in found:
        return
    values = found[parameter]
    values = values.isel({d: 0 for d in values.dims if d not in ("quantity", "statistic")})
    new, median = values.sel(quantity="new_configuration"), values.sel(quantity="population")
    if name.startswith("1 - "):
        new, median = 1 - new, 1 - median
    ax.axhspan(
        float(new.sel(statistic="low")),
        float(new.sel(statistic="high")),
        color="tab:gray",
        alpha=0.15,
        lw=0,
        label="new seed, 95% range",
    )
    ax.axhline(
        float(median.sel(statistic="median")), color="tab:gray", lw=1, label="population median"
    )
    ax.legend(fontsize="small")


# ---------------------------------------------------------------------------- 12


def family_distance_map(
    behaviour: xr.Dataset | None = None, fit: xr.DataTree | None = None, config=None
) -> Figure:
    """Figure 12: how far the transformer is from every mixture of the strategies, over the
    memorizing-generalizing distance, per (training step, num_tasks); the contour marks the
    threshold above which the weight on memorizing is the projection of another strategy."""
    if behaviour is not None and "family_distance" in behaviour:
        values, threshold = behaviour.family_distance, None
    elif fit is not None and "family_distance" in fit["constant_data"]:
        values = fit["constant_data"]["family_distance"]
        threshold = fit.attrs.get("family_distance_threshold")
    else:
        raise FigureUnavailable("needs family_distance (a behaviour file of this version)")
    if threshold is None:
        from rational_icl.fits.adequacy import THRESHOLD as threshold
    values = _select(values, config)
    splits = _splits(values)
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5 * len(splits), 3.8), squeeze=False, layout="constrained"
    )
    norm = mcolors.Normalize(0.0, max(1.0, 2 * float(threshold)))
    for ax, split in zip(axes[0], splits, strict=True):
        cell = values.sel(split=split).transpose("num_tasks", "checkpoint")
        mesh = _cell_map(ax, cell.clip(max=norm.vmax), norm, "cividis")
        if np.nanmax(cell.values, initial=0) > threshold > np.nanmin(cell.values, initial=1):
            ax.contour(
                cell.checkpoint.values,
                cell.num_tasks.values,
                cell.values,
                levels=[float(threshold)],
                colors="white",
                linewidths=1,
            )
        ax.set_title(f"{split} (contour: {float(threshold):g})")
    bar = fig.colorbar(mesh, ax=axes)
    bar.set_label("distance to the strategy family / d_MG (1)")
    return fig


# ---------------------------------------------------------------------------- 13


def context_weights(
    behaviour: xr.Dataset | None = None,
    fit: xr.DataTree | None = None,
    config=None,
    max_tasks: int = 4,
    max_steps: int = 3,
) -> Figure:
    """Figure 13: evidence accumulation along the context. The observed weight on
    memorizing (best memorizing-generalizing mixture at each position, id split) against
    the context position, for a few num_tasks at a few checkpoints, and the fit's
    prediction: per position for a context-dependent fit, else the cell's one weight
    (dashed, flat: that fit has no evidence from the context)."""
    if behaviour is None or "context_weight" not in behaviour:
        raise FigureUnavailable("needs context_weight (behaviour of a setting with a context)")
    weight = _select(behaviour.context_weight, config)
    split = "id" if "id" in weight.split.values else str(weight.split.values[0])
    weight = weight.sel(split=split)
    num_tasks = weight.num_tasks.values
    tasks = num_tasks[np.unique(np.linspace(0, len(num_tasks) - 1, max_tasks).round().astype(int))]
    steps = weight.checkpoint.values
    chosen = steps[np.unique(np.geomspace(1, len(steps), max_steps).round().astype(int) - 1)]
    predicted = _context_prediction(behaviour, fit, config, split) if fit is not None else None
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False, layout="constrained"
    )
    cmap, step_norm = plt.get_cmap("plasma"), mcolors.LogNorm(steps[0], steps[-1])
    position = weight.position.values
    for ax, d in zip(axes[0], tasks, strict=True):
        for n in chosen:
            color = cmap(step_norm(n) * 0.85)
            ax.plot(
                position,
                weight.sel(num_tasks=d, checkpoint=n),
                color=color,
                lw=1.4,
                label=f"step {int(n)}",
            )
            if predicted is not None:
                ax.plot(
                    position, predicted.sel(num_tasks=d, checkpoint=n), color=color, lw=1.1, ls="--"
                )
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"num_tasks {int(d)}")
        ax.set_xlabel("context position t")
    axes[0, 0].set_ylabel(f"{_WEIGHT_LABEL}, {split}")
    axes[0, 0].legend(fontsize="small", loc="best")
    key = "solid: observed (best M-G mixture per position)"
    if predicted is not None:
        key += "; dashed: " + predicted.attrs["label"]
    fig.suptitle(key, fontsize="medium")
    return fig


def _context_prediction(behaviour, fit, config, split) -> xr.DataArray:
    """The fit's weight on memorizing at each position: with context evidence
    gamma t^(1 - alpha) (L_G(<t) - L_M(<t)) for a context-dependent fit (posterior mean over
    draws), else its one weight per cell repeated along the context."""
    position = behaviour.context_weight.position
    odds = _posterior(fit, "log_posterior_odds", config)  # (chain, draw, num_tasks, checkpoint)
    if not int(fit.attrs.get("context_dependent", 0)) or "context_loss" not in behaviour:
        weight = _posterior(fit, "weight_memorizing", config).mean(SAMPLE_DIMS)
        weight = weight.expand_dims(position=position.values, axis=-1)
        return weight.assign_attrs(label="fit, one weight per cell (no context evidence)")
    loss = _select(behaviour.context_loss, config).sel(split=split)
    gap = loss.sel(strategy="generalizing") - loss.sel(strategy="memorizing")
    alpha, gamma = (_posterior(fit, name, config) for name in ("alpha", "gamma"))
    context = formulas.evidence(position.astype(float), alpha, gamma) * gap
    weight = 1 / (1 + np.exp(-(odds + context)))
    return weight.mean(SAMPLE_DIMS).assign_attrs(label="fit, with context evidence")

"""Fitting the rational model: the entry point ``fit(behaviour, settings)``.

It builds the model's inputs (``rational_icl.fits.inputs``), runs an engine (NUTS, MAP with
a Laplace approximation, or SVI: ``rational_icl.fits.engines``) and returns the ArviZ
DataTree of docs/files.md §3 (``rational_icl.fits.tree``), which ``write_fit`` stores.
Summaries, diagnostics, PSIS-LOO and comparison are in ``rational_icl.fits.diagnostics``;
the fit's agreement metrics in ``rational_icl.fits.metrics``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import engines
from rational_icl.fits import model as rational
from rational_icl.fits.inputs import FitSettings, model_inputs, resolved_pooling
from rational_icl.fits.tree import datatree
from rational_icl.vocabulary import form_of, without_drift


def fit(behaviour: xr.Dataset, settings: FitSettings = FitSettings(), runs=None) -> xr.DataTree:
    """Fit the rational model to a behaviour dataset (docs/files.md §2).

    Parameters
    ----------
    behaviour : xr.Dataset
        ``relative_distance`` (num_tasks, checkpoint, split), ``strategy_loss`` and
        ``strategy_complexity`` (strategy, num_tasks), optional configuration dims.
    settings : FitSettings
    runs : xr.Dataset, optional
        The combined predictions files: needed by the ``outputs`` observation model and by
        context-dependent weights.

    Returns
    -------
    xr.DataTree
        The fit of docs/files.md §3.
    """
    _check_float64()
    settings = dataclasses.replace(settings, pooling=resolved_pooling(behaviour, settings.pooling))
    inputs = model_inputs(behaviour, settings, runs)
    _check_cells_remain(inputs, settings)
    model = (
        rational.relative_distance_model
        if settings.observation == "relative-distance"
        else rational.outputs_model
    )
    keys = engines.Keys.of(settings.seed)
    # optimisation works on the decentred run levels; NUTS samples them centred where their
    # runs' cells pin them (run_centring)
    form = form_of(settings.model)
    search = engines.Target(
        model, inputs.kwargs, inputs.observed_key, keys.start, decentred=form.offsets
    )
    if settings.observation == "outputs":  # each candidate costs a pass over every sequence
        fixed = _relative_distance_map(behaviour, settings, keys.relative_distance_start)
        start = search.best_prior_draw(keys.start, 2, fixed=fixed)
    elif form.drift:
        start = search.best_prior_draw(keys.start, 256, fixed=_law_map(inputs, settings, keys))
    else:
        start = search.best_prior_draw(keys.start, 256)
    if settings.method != "nuts" or not form.offsets:
        draws = engines.ENGINES[settings.method](search, start, keys, settings)
        return datatree(search, inputs, draws, keys.predict, settings, behaviour)
    centring = run_centring(inputs.kwargs)
    target = engines.Target(
        model, inputs.kwargs, inputs.observed_key, keys.start, centring=centring
    )
    draws = engines.nuts(target, start, keys, settings, search)
    return datatree(target, inputs, draws, keys.predict, settings, behaviour)


def _check_float64() -> None:
    """Refuse to fit in float32: K ** beta and N ** (1 - alpha) span more orders of magnitude
    than it resolves. Turning float64 on is the caller's choice, made before JAX starts."""
    import jax

    if not jax.config.jax_enable_x64:
        raise RiclError(
            "JAX computes in float32; call rational_icl.pipeline.configure_jax() (or "
            "numpyro.enable_x64()) before fitting: the rational model needs float64"
        )


def _check_cells_remain(inputs, settings: FitSettings) -> None:
    """Refuse, before sampling, a fit with no cell to fit (e.g. --drop-early dropped all):
    the sampler would run, then every summary of the fitted cells would fail."""
    if not bool(inputs.fit_mask.any()):
        dropped = 0 if inputs.dropped is None else int(inputs.dropped.sum())
        held_out = int(inputs.held_out.sum())
        raise RiclError(
            f"no cell is left to fit: of {inputs.fit_mask.size} cells, {held_out} are held out "
            f"and {dropped} early cells were dropped"
            f"{' (leave out --drop-early)' if settings.drop_early else ''}; a fit needs at "
            "least one fitted cell"
        )


# A run's level is sampled centred when this share of its fitted cells lie inside
# (0.05, 0.95): there the cells pin the level, and a decentred level had to move with beta
# through offset_scale (tiny-categorical: 121 leapfrog steps per draw, R-hat 1.007-1.02;
# centred, 60 and 1.005). A run at 0 or 1 says only that its level is beyond a bound: centred,
# it makes a funnel with offset_scale (tiny-regression, every run centred: 29 divergences).
INFORMATIVE_SHARE = 0.25


def run_centring(kwargs: dict) -> np.ndarray:
    """1 for the runs whose level NUTS samples centred, 0 for the others, (C, D, Q - 1):
    centred where at least ``INFORMATIVE_SHARE`` of a run's fitted cells lie inside
    (0.05, 0.95). The outputs model, which observes no weight, samples every level decentred.
    """
    shape = (*np.shape(kwargs["fit_mask"])[:2], np.shape(kwargs["strategy_loss"])[0] - 1)
    if "observed_weight" not in kwargs:
        return np.zeros(shape)
    fitted = np.asarray(kwargs["fit_mask"])  # (C, D, N, S)
    weight = np.asarray(kwargs["observed_weight"])
    inside = fitted & (weight > 0.05) & (weight < 0.95)
    share = inside.sum(axis=(2, 3)) / np.maximum(fitted.sum(axis=(2, 3)), 1)  # (C, D)
    centred = (share >= INFORMATIVE_SHARE).astype(np.float64)
    return np.broadcast_to(centred[..., None], shape).copy()


def _law_map(inputs, settings: FitSettings, keys) -> dict:
    """MAP of the same model without the drift: the start of a drift model. From a prior
    draw the drift, flexible enough to trace any run by itself, wins before the law has
    placed the runs (the paper grid's MAP then ends at gamma ~ 1e-4 and a drift 10 times
    its true size), and NUTS's chains start there."""
    lawful = {**inputs.kwargs, "model": without_drift(settings.model)}
    lawful.pop("weight_history", None)
    return _relative_distance_mode(lawful, keys.start)


def _relative_distance_mode(kwargs: dict, key) -> dict:
    """The latent sites' values at the MAP of the relative-distance model with ``kwargs``
    (decentred, as every optimisation: ``engines.LEVEL``), from its best prior draw."""
    decentred = form_of(kwargs["model"]).offsets
    model = rational.relative_distance_model
    target = engines.Target(model, kwargs, "observed_weight", key, decentred=decentred)
    optimum, _ = target.map_estimate(target.best_prior_draw(key, 256))
    return target.constrain(target.unravel(optimum))


def _relative_distance_map(behaviour, settings: FitSettings, key) -> dict:
    """MAP of the cheap relative-distance model: the start of the outputs model, whose
    likelihood over every sequence is costly and has poor local optima far from it."""
    cheap = dataclasses.replace(
        settings,
        observation="relative-distance",
        strategies=settings.strategies[:2],
        context_dependent=False,
        drop_early=False,
    )
    values = _relative_distance_mode(model_inputs(behaviour, cheap).kwargs, key)
    return {k: v for k, v in values.items() if k != "sigma"}

"""The law-free reference: the default model's observation with the law taken out.

What the law adds to a fit is measured against the same observation model without it. The
default model (``anchored-offsets-drift``) reads each observed weight on memorizing as the
law's weight plus a drift along training (a Gaussian process in log N per run and split,
``model.drift``) plus censored normal noise. Here the law's weight is replaced by

- ``law_free_level``: a per-run constant log odds, or
- ``law_free_trend``: a per-run straight line in log N (log odds ``level + slope * (log N -
  mean log N)``),

with the same drift and noise. The runs' levels (and slopes) are drawn from a population
(a normal of fitted location and spread). A run without fitted cells (a held-out num_tasks)
takes its neighbours' level and slope interpolated in log num_tasks, draw by draw, as the
baselines predict it (without the law nothing else says where in num_tasks it lies); a
configuration without any (a held-out seed) its population draws. The reference sees
exactly the fitted cells the model sees, and predicts every cell.

It runs with every fit, so it is cheap: the mode of its density on the unconstrained scale
and a Laplace approximation around it (``LAPLACE_DRAWS`` draws), not NUTS; about 15 s on
tiny-categorical, most of it compiling (docs/science.md, "What the law adds").
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from numpyro.infer.util import potential_energy

from rational_icl.fits import engines
from rational_icl.fits import model as rational
from rational_icl.fits.baselines import interpolate_missing
from rational_icl.fits.parameters import Priors
from rational_icl.fits.predictive import site_draws

FORMS = {"law_free_level": False, "law_free_trend": True}  # name -> with a slope in log N
LAPLACE_DRAWS = 200
MAX_ITERATIONS = 2000  # L-BFGS steps of a form's mode search (tiny-categorical: 750)
# Population priors on the log-odds scale: levels of trained runs span about -6 to 6, and a
# run's log odds change by at most a few units per e-fold of training steps.
LEVEL_SCALE = 3.0
SLOPE_SCALE = 2.0


def law_free_model(
    checkpoint,
    observed_weight=None,
    *,
    fit_mask,
    weight_history=None,
    trend=0.0,
    priors: Priors = Priors(),
):
    """The observation model of ``model.relative_distance_model`` with a drift, its law's
    weight replaced by a per-run level (or line in log N) on the log-odds scale.

    Parameters
    ----------
    checkpoint : array (N,)
        Training steps.
    observed_weight : array (C, D, N, S) or None
        Observed weights (held-out cells any finite value); None simulates them.
    fit_mask : bool array (C, D, N, S)
        Cells that enter the likelihood.
    weight_history : array (C, D, N, S) or None
        The observed weights the drift conditions on when ``observed_weight`` is left out
        (the posterior predictive).
    trend : float or array ()
        1 adds each run's slope in log N, 0 leaves each run at its level (the slope sites
        are then the prior's): a number, not a flag, so that both forms are one compiled
        model (``law_free_predictions`` fits them with one ``engines.Target``).
    priors : Priors
        The noise and drift priors (``sigma_scale``, ``drift_*``), the default model's.

    Sites
    -----
    ``level_loc``, ``level_scale``, ``level_decentred`` (C, D) (and ``slope_loc``,
    ``slope_scale``, ``slope_decentred``), ``sigma`` (S,), ``drift_scale`` (S,),
    ``drift_length``, deterministic ``expected_weight`` (C, D, N, S), the observed site
    ``observed_weight`` and, when predicting (no ``observed_weight``), deterministic
    ``predictive_loc`` and ``predictive_scale``: the censored normal each cell is drawn from.
    """
    runs = fit_mask.shape[:2]
    num_splits = fit_mask.shape[-1]
    log_steps = jnp.log(checkpoint)
    level = _population("level", runs, LEVEL_SCALE)[..., None]  # (C, D, 1)
    slope = _population("slope", runs, SLOPE_SCALE)[..., None]
    log_odds = level + trend * slope * (log_steps - log_steps.mean())
    weight = jax.nn.sigmoid(jnp.broadcast_to(log_odds, (*runs, checkpoint.shape[0])))
    expected = jnp.broadcast_to(weight[..., None], (*weight.shape, num_splits))
    sigma = numpyro.sample(
        "sigma", dist.HalfNormal(priors.sigma_scale).expand([num_splits]).to_event(1)
    )
    likelihood = rational.drifting(
        expected, observed_weight, weight_history, checkpoint, fit_mask, sigma, priors
    )
    if observed_weight is None:
        numpyro.deterministic("predictive_loc", likelihood.loc)
        numpyro.deterministic("predictive_scale", likelihood.scale)
    with numpyro.handlers.mask(mask=fit_mask):
        numpyro.sample("observed_weight", likelihood, obs=observed_weight)


def _population(name: str, runs: tuple[int, int], scale: float):
    """One value per run, ``loc + spread * z`` (decentred: a centred hierarchy has no mode
    for the MAP to find, ``engines.LEVEL``)."""
    loc = numpyro.sample(f"{name}_loc", dist.Normal(0.0, scale))
    spread = numpyro.sample(f"{name}_scale", dist.HalfNormal(scale))
    z = numpyro.sample(f"{name}_decentred", dist.Normal(0.0, 1.0).expand(list(runs)).to_event(2))
    return loc + spread * z


def law_free_predictions(
    observed: xr.DataArray,
    fitted: xr.DataArray,
    *,
    seed: int = 0,
    draws: int = LAPLACE_DRAWS,
    priors: Priors = Priors(),
) -> xr.Dataset:
    """Fit both law-free forms to the ``fitted`` cells and predict every cell.

    Parameters
    ----------
    observed : xr.DataArray
        The observed weight on memorizing, (config..., num_tasks, checkpoint, split).
    fitted : xr.DataArray
        bool, the cells the fit saw (broadcastable to ``observed``).
    seed : int
        Seeds the Laplace draws and the predictive draws.
    draws : int
        Laplace draws per form.
    priors : Priors
        The fit's priors (noise and drift).

    Returns
    -------
    xr.Dataset
        Dims (reference, chain, draw, *observed.dims), ``reference`` one of ``FORMS``, one
        chain: ``expected_weight`` (each cell's prediction from its run's other fitted
        cells, as the default model's) and ``observed_weight`` (posterior predictive
        draws). Attribute ``seconds``: the wall time of both fits and their predictions.
    """
    began = time.perf_counter()
    fitted = (fitted.broadcast_like(observed) & observed.notnull()).transpose(*observed.dims)
    shape = (-1, *observed.shape[-3:])  # (C, D, N, S): the configurations flattened
    weight = np.nan_to_num(observed.values, nan=0.5).reshape(shape)
    mask = fitted.values.reshape(shape)
    kwargs = dict(
        checkpoint=jnp.asarray(observed.checkpoint.values, dtype=jnp.float64),
        observed_weight=jnp.asarray(weight),
        weight_history=jnp.asarray(weight),
        fit_mask=jnp.asarray(mask),
        trend=jnp.asarray(0.0),
        priors=priors,
    )
    log_num_tasks = np.log(observed.num_tasks.values.astype(np.float64))
    keys = engines.Keys.of(seed)
    rng = np.random.default_rng(seed)
    base = engines.Target(law_free_model, kwargs, "observed_weight", keys.start)
    # -log density on the unconstrained scale, the transforms' Jacobian included: its mode
    # is finite where a run's cells say nothing of a spread (a half-normal scale without
    # the Jacobian has its mode at 0), and the Laplace approximation is of this density
    potential = jax.jit(
        jax.value_and_grad(lambda x, data: potential_energy(base.model, (), data, base.unravel(x)))
    )
    forms = {}
    for name, trend in FORMS.items():
        target = base.with_data(trend=jnp.asarray(float(trend)))
        optimum, hessian = _mode(potential, target, target.unconstrain(_start(weight, mask)))
        noise = rng.standard_normal((draws, optimum.size))
        flat = optimum + noise @ engines.laplace_root(hessian).T
        flat[0] = optimum  # the first draw is the mode itself
        latent = {k: np.asarray(v) for k, v in target.constrain_flat(flat).items()}
        latent = _scales_of_fitted_splits(latent, mask.any(axis=(0, 1, 2)))
        latent = _unfitted_runs_from_neighbours(latent, mask.any(axis=(2, 3)), log_num_tasks)
        values = site_draws(
            target.with_data(observed_weight=None),  # predicting every cell
            latent,
            ["expected_weight", "predictive_loc", "predictive_scale"],
            cells=mask.size,
        )
        # the censored normal's draws (``model.ClippedNormal.sample``), one per cell and draw
        noise = rng.standard_normal(values["predictive_loc"].shape)
        draw = np.clip(values["predictive_loc"] + values["predictive_scale"] * noise, 0.0, 1.0)
        forms[name] = {"expected_weight": values["expected_weight"], "observed_weight": draw}
    dims = ("reference", "chain", "draw", *observed.dims)
    data = {
        variable: (
            dims,
            np.stack([f[variable] for f in forms.values()]).reshape(
                len(forms), 1, draws, *observed.shape
            ),
        )
        for variable in ("expected_weight", "observed_weight")
    }
    coords = {d: observed[d].values for d in observed.dims if d in observed.coords}
    result = xr.Dataset(data, coords=coords | {"reference": list(forms)})
    return result.assign_attrs(seconds=time.perf_counter() - began)


def _mode(potential, target, start) -> tuple[np.ndarray, np.ndarray]:
    """The mode of ``potential`` (L-BFGS from ``start`` to scipy's default tolerance: a run
    whose cells all sit at 0 or 1 pushes its level out slowly, and the last digits of the
    mode change no prediction) and its Hessian there, by central differences of the
    compiled gradient (an exact Hessian would take longer to compile than the fit runs)."""
    objective = engines.numpy_objective(potential, target.data)
    result = engines.lbfgs(objective, start, {"maxiter": MAX_ITERATIONS})
    step = 1e-5
    columns = [
        (objective(result.x + step * e)[1] - objective(result.x - step * e)[1]) / (2 * step)
        for e in np.eye(result.x.size)
    ]
    hessian = np.stack(columns, axis=1)
    return result.x, (hessian + hessian.T) / 2


def _start(weight: np.ndarray, fitted: np.ndarray) -> dict:
    """Where the MAP search starts: every run at the fitted cells' mean log odds, flat, with
    noise and drift of a tenth of the weight's range (a prior draw may start where every
    weight is 0 or 1 and the gradient vanishes; this point is never there)."""
    mean = np.clip(weight[fitted].mean() if fitted.any() else 0.5, 0.05, 0.95)
    runs, splits = weight.shape[:2], weight.shape[-1]
    return {
        "level_loc": np.log(mean / (1 - mean)),
        "level_scale": 1.0,
        "level_decentred": np.zeros(runs),
        "slope_loc": 0.0,
        "slope_scale": 0.5,
        "slope_decentred": np.zeros(runs),
        "sigma": np.full(splits, 0.1),
        "drift_scale": np.full(splits, 0.1),
        "drift_length": 1.0,
    }


def _unfitted_runs_from_neighbours(latent: dict, fitted_runs, log_num_tasks) -> dict:
    """A run without fitted cells (a held-out num_tasks) takes, draw by draw, the level and
    slope of its neighbours interpolated in log num_tasks (the nearest past the ends), as
    the baselines predict it: its population draw would ignore where in num_tasks it lies.
    A configuration without fitted runs (a held-out seed) keeps its population draws.
    ``fitted_runs``: bool (C, D)."""
    if fitted_runs.all() or not fitted_runs.any():
        return latent
    latent = dict(latent)
    for name in ("level", "slope"):
        loc = np.asarray(latent[f"{name}_loc"])[:, None, None]  # (draws, 1, 1)
        spread = np.asarray(latent[f"{name}_scale"])[:, None, None]
        values = loc + spread * np.asarray(latent[f"{name}_decentred"])  # (draws, C, D)
        known = np.where(fitted_runs, values, np.nan)
        filled = interpolate_missing(known, log_num_tasks)
        filled = np.where(np.isnan(filled), values, filled)
        latent[f"{name}_decentred"] = (filled - loc) / spread
    return latent


def _scales_of_fitted_splits(latent: dict, split_fitted: np.ndarray) -> dict:
    """A split without fitted cells (``--splits id``) learns nothing of its noise: its
    scales are those of the fitted splits, averaged per draw (as the fit's predictive)."""
    if split_fitted.all() or not split_fitted.any():
        return latent
    latent = dict(latent)
    for name in ("sigma", "drift_scale"):  # tree.PER_SPLIT
        scale = np.asarray(latent[name])
        pooled = scale[:, split_fitted].mean(axis=1, keepdims=True)
        latent[name] = np.where(split_fitted, scale, pooled)
    return latent

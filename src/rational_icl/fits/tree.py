"""The fit's ArviZ DataTree (docs/files.md §3): posterior draws and per-cell derived
quantities, the posterior predictive, the pointwise log likelihood, the observed and
constant data; and the fit file itself (``write_fit``, ``read_fit``).
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import scipy.special
import scipy.stats
import xarray as xr

from rational_icl import __version__
from rational_icl.errors import RiclError, reading_error
from rational_icl.fits import model as rational
from rational_icl.fits import parameters
from rational_icl.fits.inputs import AUTHORS_WITHIN, SAMPLE_DIMS, ModelInputs, authors_kept
from rational_icl.fits.metrics import fit_metrics
from rational_icl.io import load_datatree, write_datatree


def datatree(problem, inputs: ModelInputs, latent, sample_stats, key, settings, behaviour):
    chains, draws = next(iter(latent.values())).shape[:2]
    inputs.chains_draws = (chains, draws)
    flat_latent = {k: v.reshape(chains * draws, *v.shape[2:]) for k, v in latent.items()}
    derived = _derived(problem, flat_latent, settings)
    observed = inputs.relative_distance
    coords = {d: observed[d].values for d in observed.dims}
    coords |= {"chain": np.arange(chains), "draw": np.arange(draws)}

    def draws_array(name, values, dims=(), kept=None):
        kept = np.arange(draws) if kept is None else kept
        values = np.asarray(values).reshape(chains, kept.size, *np.shape(values)[1:])
        array = _as_dataarray(name, values, (chains, kept.size), SAMPLE_DIMS, inputs, dims)
        return array.assign_coords(draw=kept)

    grid = ("num_tasks", "checkpoint")
    posterior = {
        name: draws_array(name, value)
        for name, value in (flat_latent | derived["parameters"]).items()
    }
    # Per-cell draws are the bulk of the file: float32 (7 digits, far below their posterior
    # spread) halves it. Everything read from the tree, the metrics too, sees these values.
    for name, values, dims in [
        ("weight_memorizing", derived["weight_memorizing"], grid),
        ("log_posterior_odds", derived["log_posterior_odds"], grid),
        ("expected_relative_distance", derived["expected"], (*grid, "split")),
    ]:
        posterior[name] = draws_array("", values.astype(np.float32), dims)
    posterior = _describe(xr.Dataset(posterior, coords=coords))
    kept = _pointwise_draws(chains, draws, settings.pointwise_draws)
    split_fitted = np.asarray(inputs.kwargs["fit_mask"]).any(axis=(0, 1, 2))  # (S,)
    predictive = _posterior_predictive(
        _thinned(derived, chains, draws, kept), settings, key, split_fitted
    )
    predictive = xr.Dataset(
        {"relative_distance": draws_array("", predictive, (*grid, "split"), kept)},
        coords=coords | {"draw": kept},
    )
    if kept.size < draws:
        predictive.attrs["thinned_from"] = draws
    groups = {
        "posterior": posterior,
        "posterior_predictive": predictive,
        "observed_data": xr.Dataset({"relative_distance": observed}),
        "constant_data": _constant_data(behaviour, inputs, settings),
        "sample_stats": sample_stats.assign_coords(
            {d: coords[d] for d in SAMPLE_DIMS if d in sample_stats.dims}
        ),
    }
    log_lik = _log_likelihood(problem, derived, inputs, settings)
    if log_lik is not None:
        groups["log_likelihood"] = log_lik
    if settings.method == "map":  # the optimum itself (the first Laplace draw)
        groups["point_estimate"] = posterior[parameter_names_of(posterior)].isel(
            chain=0, draw=0, drop=True
        )
    tree = xr.DataTree.from_dict(groups)
    tree.attrs = {
        "observation_model": settings.observation,
        "measure": inputs.relative_distance.attrs["measure"],
        "fitted_splits": ",".join(settings.splits or map(str, observed.split.values)),
        "ablation": settings.ablation,
        "pooling": settings.pooling,
        "strategies": ",".join(settings.strategies),
        "context_dependent": int(settings.context_dependent),
        "inference_method": settings.method,
        "seed": settings.seed,
        "setting": str(behaviour.attrs.get("setting", "")),
        "package_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tree.attrs |= fit_metrics(tree)
    return tree


def _as_dataarray(name, values, leading_shape, leading_dims, inputs: ModelInputs, dims=()):
    """Label one site's values: (leading..., [C,] dims...) with C unflattened into the
    configuration dims (dropped when there is one configuration)."""
    site_shape = values.shape[len(leading_shape) :]
    if name == "sigma":
        return xr.DataArray(values, dims=(*leading_dims, "split"))
    if not site_shape:
        return xr.DataArray(values, dims=leading_dims)
    rest = site_shape[1:]  # after the configuration axis
    values = values.reshape(*leading_shape, *inputs.config_shape, *rest)
    extra = dims if dims else tuple(f"{name}_dim_{i}" for i in range(len(rest)))
    return xr.DataArray(values, dims=(*leading_dims, *inputs.config_dims, *extra))


def _derived(problem, latent, settings):
    """alpha, beta, gamma (also where deterministic), weights, log odds, expected weights."""
    kwargs = problem.kwargs
    with_context = "context_loss" in kwargs and settings.observation == "relative-distance"
    num_splits = kwargs["fit_mask"].shape[-1]
    parameters_model = functools.partial(
        _parameters_only,
        kwargs["ablation"],
        kwargs["pooling"],
        kwargs["strategy_loss"].shape[1],
        kwargs["priors"],
    )

    def one(draw, data):
        parameters = numpyro.handlers.substitute(parameters_model, data=draw)
        trace = numpyro.handlers.trace(numpyro.handlers.seed(parameters, 0)).get_trace()
        alpha, beta, gamma = (trace[n]["value"] for n in ("alpha", "beta", "gamma"))
        log_post = rational.log_posterior(
            data["strategy_loss"],
            data["strategy_complexity"],
            data["checkpoint"],
            alpha,
            beta,
            gamma,
            linear_complexity=settings.ablation == "linear-complexity",
        )
        weights = jax.nn.softmax(log_post, axis=0)
        if with_context:
            extra = rational.context_evidence(
                data["context_loss"], data["context_size"], alpha, gamma
            )
            log_w = log_post[..., None, None] + extra[:, :, :, None]
            expected = jax.nn.softmax(log_w, axis=0)[0].mean(-1)
        else:
            expected = jnp.broadcast_to(weights[0][..., None], (*weights.shape[1:], num_splits))
        return (alpha, beta, gamma), weights[0], log_post[0] - log_post[1], expected

    names = ["strategy_loss", "strategy_complexity", "checkpoint", "context_loss", "context_size"]
    data = {k: problem.data[k] for k in names if k in problem.data}
    compute = jax.jit(lambda draws, data: jax.lax.map(lambda d: one(d, data), draws, batch_size=64))
    (alpha, beta, gamma), weight, odds, expected = compute(latent, data)
    return {
        "parameters": {"alpha": alpha, "beta": beta, "gamma": gamma},
        "weight_memorizing": np.asarray(weight),
        "log_posterior_odds": np.asarray(odds),
        "expected": np.asarray(expected),
        "latent": latent,
    }


def _parameters_only(ablation, pooling, num_configurations, priors):
    parameters.rational_parameters(
        ablation=ablation, pooling=pooling, num_configurations=num_configurations, priors=priors
    )


def _pointwise_draws(chains: int, draws: int, limit: int) -> np.ndarray:
    """The draws of every chain kept for per-cell quantities: evenly spaced (every k-th),
    at most ``limit`` over all chains, at least one per chain."""
    return np.arange(draws)[:: math.ceil(chains * draws / limit)]


def _thinned(derived, chains: int, draws: int, kept: np.ndarray) -> dict:
    """``derived`` (flat chain-major draws) with only the ``kept`` draws of every chain."""

    def thin(value):
        value = np.asarray(value)
        return value.reshape(chains, draws, *value.shape[1:])[:, kept].reshape(
            chains * kept.size, *value.shape[1:]
        )

    return {
        "expected": thin(derived["expected"]),
        "latent": {name: thin(value) for name, value in derived["latent"].items()},
    }


def _posterior_predictive(derived, settings, key, split_fitted):
    """Observed-weight draws (float32) for every cell, fitted and held out.

    A split with no fitted cell (``--splits id``) learns nothing about its noise scale: its
    sigma is a draw from the prior, whose intervals cover everything. It is predicted with
    the mean sigma of the fitted splits instead, per draw.
    """
    expected = derived["expected"]  # (draws, C, D, N, S)
    if settings.observation == "outputs":
        return expected.astype(np.float32)  # the noise-free mixture's observed weight: w_M
    sigma = np.asarray(derived["latent"]["sigma"])  # (draws, S)
    if not split_fitted.all() and split_fitted.any():
        pooled = sigma[:, split_fitted].mean(axis=1, keepdims=True)
        sigma = np.where(split_fitted, sigma, pooled)
    sigma = sigma[:, None, None, None, :]
    rng = np.random.default_rng([settings.seed, 2])
    noisy = expected + sigma * rng.standard_normal(expected.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _clipped_normal_log_prob(value, loc, scale):
    """numpy twin of ``ClippedNormal.log_prob`` (no compilation for a one-off evaluation)."""
    inside = scipy.stats.norm.logpdf(value, loc, scale)
    below = scipy.special.log_ndtr(-loc / scale)
    above = scipy.special.log_ndtr((loc - 1.0) / scale)
    return np.where(value <= 0.0, below, np.where(value >= 1.0, above, inside))


def _log_likelihood(problem, derived, inputs, settings):
    """Pointwise log likelihood of the fitted cells (dim ``fitted_cell``), for PSIS-LOO.

    Held-out cells are left out, as they are of the fit. Computed on at most
    ``settings.pointwise_draws`` draws, evenly thinned in every chain (the file grows with
    cells x draws; PSIS-LOO needs a few hundred draws, not thousands); the ``draw``
    coordinate says which, and ``attrs["thinned_from"]`` the draws per chain. The
    ``outputs`` model (variable ``transformer_prediction``: the log density of a cell's
    predictions, summed over its sequences and positions) costs a pass over the quadrature
    nodes of every cell per draw. Context-dependent ``outputs`` fits have none (one pass
    over every prediction per draw): returns None.
    """
    chains, draws = inputs.chains_draws
    mask = np.asarray(inputs.kwargs["fit_mask"])
    kept = _pointwise_draws(chains, draws, settings.pointwise_draws)
    thinned = _thinned(derived, chains, draws, kept)
    if settings.observation == "outputs":
        if "statistics" not in inputs.kwargs:
            return None
        values = _outputs_cell_log_likelihood(problem, thinned["latent"])
        name = "transformer_prediction"
    else:
        sigma = np.asarray(thinned["latent"]["sigma"])[:, None, None, None, :]
        expected = thinned["expected"]
        sigma = np.broadcast_to(sigma, expected.shape)
        value = np.asarray(inputs.kwargs["relative_distance"])
        values = _clipped_normal_log_prob(value, expected, sigma)
        name = "relative_distance"
    values = values[:, mask].reshape(chains, kept.size, -1)
    where = dict(
        zip(inputs.relative_distance.dims, np.nonzero(inputs.fit_mask.values), strict=True)
    )
    cells = {
        f"fitted_{dim}": ("fitted_cell", inputs.relative_distance[dim].values[index])
        for dim, index in where.items()
    }
    log_lik = xr.Dataset(
        {name: ((*SAMPLE_DIMS, "fitted_cell"), values)},
        coords=cells | {"chain": np.arange(chains), "draw": kept},
    )
    if kept.size < draws:
        log_lik.attrs["thinned_from"] = draws
    return log_lik


def _outputs_cell_log_likelihood(problem, latent):
    """The ``outputs`` model's per-cell log likelihood (draws, C, D, N, S), from its
    observation site with every draw substituted; one draw at a time, as one draw's
    quadrature terms are already (C, D, N, S, K)."""

    def one(draw, data):
        model = numpyro.handlers.substitute(numpyro.handlers.seed(problem.model, 0), data=draw)
        site = numpyro.handlers.trace(model).get_trace(**data)[problem.observed_key]
        return site["fn"].log_prob(site["value"])

    compute = jax.jit(lambda draws, data: jax.lax.map(lambda d: one(d, data), draws))
    return np.asarray(compute(latent, problem.data))


def _constant_data(behaviour, inputs, settings):
    strategies = list(settings.strategies)
    data = xr.Dataset(
        {
            "strategy_loss": behaviour.strategy_loss.sel(strategy=strategies),
            "strategy_complexity": behaviour.strategy_complexity.sel(strategy=strategies),
            "held_out": inputs.held_out,
            "fit_mask": inputs.fit_mask,
        }
    )
    if inputs.dropped is not None:
        data["dropped"] = inputs.dropped
    if "interpolation_distance" in behaviour and "id" in behaviour.split.values:
        within = AUTHORS_WITHIN.get(str(behaviour.attrs.get("setting")), 0.2)
        kept = authors_kept(behaviour.interpolation_distance, within)
        data["authors_kept"] = kept.assign_attrs(
            long_name="kept by the authors' common early-checkpoint threshold",
            within=within,
        )
    return data


def _describe(posterior: xr.Dataset) -> xr.Dataset:
    descriptions = {
        "alpha": "sublinear sample efficiency: evidence grows as N ** (1 - alpha)",
        "beta": "complexity exponent: log prior = -ln2 * K ** beta",
        "gamma": "evidence scale: log likelihood = -gamma * N ** (1 - alpha) * L",
        "sigma": "noise of the observed weight on memorizing (censored normal), per split",
        "weight_memorizing": "posterior weight of the memorizing strategy after N steps",
        "log_posterior_odds": "log w_memorizing - log w_generalizing",
        "expected_relative_distance": "predicted observed weight on memorizing per cell",
    }
    for name, text in descriptions.items():
        if name in posterior:
            posterior[name].attrs["description"] = text
    return posterior


_SAME_IN_EVERY_SPLIT = "expected_relative_distance_is_weight_memorizing"


def write_fit(tree: xr.DataTree, path: str | Path) -> Path:
    """Write a fit to netCDF atomically (temporary file, then rename), every group
    compressed losslessly (``rational_icl.io.compression_encoding``).

    Without context-dependent weights ``expected_relative_distance`` is
    ``weight_memorizing`` in every split: it is then not stored (a third of the file) and
    ``read_fit`` rebuilds it, bit for bit.
    """
    return write_datatree(_without_repeated_weights(tree), path)


def _without_repeated_weights(tree: xr.DataTree) -> xr.DataTree:
    posterior = tree.posterior.to_dataset(inherit=False)
    if "expected_relative_distance" not in posterior or "weight_memorizing" not in posterior:
        return tree
    expected = posterior.expected_relative_distance
    weight = posterior.weight_memorizing.broadcast_like(expected).transpose(*expected.dims)
    if expected.dtype != weight.dtype or not np.array_equal(expected.values, weight.values):
        return tree
    stored = posterior.drop_vars("expected_relative_distance")
    stored.attrs[_SAME_IN_EVERY_SPLIT] = 1
    tree = tree.copy()
    tree["posterior"] = xr.DataTree(stored)
    return tree


def read_fit(path: str | Path) -> xr.DataTree:
    """Read a fit written by ``write_fit``."""
    path = Path(path)
    if path.is_dir():
        raise RiclError(f"fit file {str(path)!r} is a folder; give the fit's .nc file")
    if not path.is_file():
        raise RiclError(f"fit file {str(path)!r} does not exist")
    try:
        tree = load_datatree(path)
    except (OSError, ValueError) as err:
        raise RiclError(f"{path}: not a fit file ({reading_error(err)})") from None
    if "posterior" not in tree.children:
        raise RiclError(f"{path}: not a fit file (no posterior group)")
    posterior = tree.posterior.to_dataset(inherit=False)
    if posterior.attrs.pop(_SAME_IN_EVERY_SPLIT, None) is not None:  # see write_fit
        weight = posterior.weight_memorizing.drop_attrs()
        # by size, not values: the dataset's own split coordinate (and its dtype) labels it
        posterior["expected_relative_distance"] = weight.expand_dims(
            split=posterior.sizes["split"], axis=-1
        )
        tree["posterior"] = xr.DataTree(_describe(posterior))
    return tree


DERIVED = ("weight_memorizing", "log_posterior_odds", "expected_relative_distance")


def parameter_names(tree: xr.DataTree) -> list[str]:
    """Posterior variables that are parameters (not per-cell derived quantities)."""
    return parameter_names_of(tree.posterior.ds)


def parameter_names_of(posterior: xr.Dataset) -> list[str]:
    return [name for name in posterior.data_vars if name not in DERIVED]

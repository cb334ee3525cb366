"""The fit's ArviZ DataTree (docs/files.md §3): posterior draws and per-cell derived
quantities, the posterior predictive, the pointwise log likelihood, the observed and
constant data; and the fit file itself (``write_fit``, ``read_fit``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import arviz_base as azb
import numpy as np
import numpyro
import scipy.special
import xarray as xr

from rational_icl import __version__
from rational_icl.errors import RiclError, reading_error
from rational_icl.fits.adequacy import family_distance_summary, inadequate_num_tasks
from rational_icl.fits.engines import Draws, Target
from rational_icl.fits.identity import check_fit
from rational_icl.fits.inputs import (
    AUTHORS_WITHIN,
    FitSettings,
    ModelInputs,
    authors_kept,
)
from rational_icl.fits.metrics import fit_metrics, skill_attributes, skill_of
from rational_icl.fits.predictive import pointwise_log_likelihood, predictive_draws, site_draws
from rational_icl.io import load_datatree, write_datatree
from rational_icl.vocabulary import GRID, LAW_PARAMETERS, SAMPLE_DIMS, form_of


def datatree(
    target: Target,
    inputs: ModelInputs,
    draws: Draws,
    key,
    settings: FitSettings,
    behaviour: xr.Dataset,
) -> xr.DataTree:
    """The fit of docs/files.md §3 from an engine's draws.

    ``key`` draws the posterior predictive. The groups are built with ArviZ's
    ``dict_to_dataset`` (what ``arviz_base.from_numpyro`` uses per group): from_numpyro
    itself cannot unflatten the model's configuration axis into the configuration dims,
    thin the pointwise draws or store per-cell draws in float32.
    """
    chains, num_draws = next(iter(draws.latent.values())).shape[:2]
    latent = {  # trace order, flat chain-major draws
        name: draws.latent[name].reshape(chains * num_draws, *draws.latent[name].shape[2:])
        for name in target.transforms
    }
    labels = _Labels(inputs, chains, num_draws)
    posterior = _posterior(target, latent, inputs, labels, settings)
    kept = pointwise_draws(chains, num_draws, settings.pointwise_draws)
    thinned = {
        k: v.reshape(chains, num_draws, *v.shape[1:])[:, kept].reshape(-1, *v.shape[1:])
        for k, v in latent.items()
    }
    groups = {
        "posterior": posterior,
        "posterior_predictive": _posterior_predictive(
            target, thinned, posterior, kept, key, inputs, labels, settings
        ),
        "observed_data": xr.Dataset({"observed_weight": inputs.observed_weight}),
        "constant_data": _constant_data(behaviour, inputs, settings),
        "sample_stats": draws.sample_stats.assign_coords(
            {d: labels.coords[d] for d in SAMPLE_DIMS if d in draws.sample_stats.dims}
        ),
    }
    log_lik = _log_likelihood(target, thinned, kept, inputs, labels, settings)
    if log_lik is not None:
        groups["log_likelihood"] = log_lik
    for name in ("posterior_predictive", "log_likelihood"):
        if name in groups and kept.size < num_draws:
            groups[name].attrs["thinned_from"] = num_draws
    if settings.method == "map":  # the optimum itself (the first Laplace draw)
        groups["point_estimate"] = posterior[parameter_names_of(posterior)].isel(
            chain=0, draw=0, drop=True
        )
    tree = xr.DataTree.from_dict(groups)
    tree.attrs = _root_attributes(inputs, settings, behaviour)
    tree.attrs |= fit_metrics(tree)
    skill = skill_of(tree, settings.priors, law_free=settings.law_free)
    tree["predictive_skill"] = xr.DataTree(skill)
    tree.attrs |= skill_attributes(skill)
    if "family_distance_summary" in tree.constant_data:
        summary = tree.constant_data.family_distance_summary
        flagged = inadequate_num_tasks(summary, summary.attrs["threshold"])
        tree.attrs["inadequate_num_tasks"] = ",".join(map(str, flagged))
        tree.attrs["family_distance_threshold"] = float(summary.attrs["threshold"])
    return tree


class _Labels:
    """Dims and coordinates of a fit's arrays: the model's configuration axis C (flattened)
    unflattened into the configuration dims, which are dropped when there is one."""

    def __init__(self, inputs: ModelInputs, chains: int, draws: int):
        observed = inputs.observed_weight
        self.inputs = inputs
        self.coords = {d: observed[d].values for d in observed.dims}
        self.coords |= {"chain": np.arange(chains), "draw": np.arange(draws)}

    def dataset(self, values: dict, dims: dict, draw) -> xr.Dataset:
        """``values`` (chain * draws, [C,] rest...) as a Dataset (chain, draw, config..., ...).

        ``dims`` names the dims after the configuration ones (ArviZ names the others
        ``{name}_dim_{i}``).
        """
        inputs, chains = self.inputs, self.coords["chain"].size
        data, named = {}, {}
        for name, value in values.items():
            value = value.reshape(chains, -1, *value.shape[1:])
            rest = value.shape[2:]
            if name in PER_SPLIT or not rest:  # per split, or one value
                data[name], named[name] = value, list(dims.get(name, ()))
                continue
            data[name] = value.reshape(chains, value.shape[1], *inputs.config_shape, *rest[1:])
            named[name] = [*inputs.config_dims, *dims.get(name, ())]
        return azb.dict_to_dataset(
            data,
            coords=self.coords | {"draw": draw},
            dims=named,
            sample_dims=SAMPLE_DIMS,
            inference_library=numpyro,
        )


PER_SPLIT = ("sigma", "drift_scale")  # noise parameters, one value per split


def _posterior(target, latent, inputs, labels, settings) -> xr.Dataset:
    """The latent sites, alpha, beta, gamma (also where deterministic), and the per-cell
    deterministic sites in float32."""
    # Per-cell draws are the bulk of the file: float32 (7 digits, far below their posterior
    # spread) halves it. Everything read from the tree, the metrics too, sees these values.
    per_cell = ["log_posterior_odds"]
    two_strategies = len(settings.strategies) == 2
    if not two_strategies:  # with two, w_M is the sigmoid of the odds: derived below
        per_cell.append("weight_memorizing")
    drift = form_of(settings.model).drift  # its expected_weight goes with the predictive
    if "expected_weight" in target.sites and not drift:  # context-dependent weights
        per_cell.append("expected_weight")
    # the run sites that are deterministic here (which depends on the parameterization)
    offsets = [n for n in PER_RUN if n in target.sites and n not in target.transforms]
    cells = int(np.prod(inputs.observed_weight.shape))
    values = site_draws(
        target,
        latent,
        [*LAW_PARAMETERS, *offsets, *per_cell],
        cells=cells,
        one_at_a_time=settings.context_dependent,
        dtypes=dict.fromkeys(per_cell, np.float32),
    )
    dims = {"weight_memorizing": GRID, "log_posterior_odds": GRID}
    dims |= dict.fromkeys(PER_SPLIT, ["split"])
    dims["expected_weight"] = (*GRID, "split")
    if offsets:  # (C, D, Q - 1): each strategy against generalizing
        dims |= dict.fromkeys(PER_RUN, ("num_tasks", "offset_strategy"))
        shifted = [q for q in settings.strategies if q != "generalizing"]
        labels.coords["offset_strategy"] = np.array(shifted)
    if two_strategies:
        values["weight_memorizing"] = weight_of_odds(values["log_posterior_odds"])
    names = [*LAW_PARAMETERS, *offsets, "weight_memorizing", *per_cell]
    values = {name: values[name] for name in names}  # in this order
    posterior = labels.dataset(latent | values, dims, labels.coords["draw"])
    if "expected_weight" not in posterior and not drift:
        # the model predicts w_M in every split: a view, not a copy (as read_fit makes it)
        weight = posterior.weight_memorizing.drop_attrs()
        split = labels.coords["split"]
        expected = weight.expand_dims(split=split.size, axis=-1)
        posterior["expected_weight"] = expected.assign_coords(split=split)
    return _describe(posterior)


def pointwise_draws(chains: int, draws: int, limit: int) -> np.ndarray:
    """The draws of every chain kept for per-cell quantities: evenly spaced (every k-th),
    at most ``limit`` over all chains, at least one per chain."""
    return np.arange(draws)[:: math.ceil(chains * draws / limit)]


def _posterior_predictive(target, thinned, posterior, kept, key, inputs, labels, settings):
    """Observed-weight draws (float32) for every cell, fitted and held out, on the ``kept``
    draws; with a drift also ``expected_weight``, the model's prediction of each cell from
    its run's other fitted cells (a prediction, like the draws, not a parameter: on the
    thinned draws it is a quarter of the file and of the memory of all draws).

    ``relative-distance``: draws of the model's observation site. A split with no fitted
    cell (``--splits id``) learns nothing about its noise scale: its sigma is a draw from
    the prior, whose intervals cover everything; it is predicted with the mean sigma (and
    drift_scale) of the fitted splits instead, per draw. ``outputs``: the noise-free
    mixture's observed weight, w_M.
    """
    if settings.observation == "outputs":
        expected = posterior.expected_weight.sel(draw=kept).drop_attrs()
        return xr.Dataset({"observed_weight": expected}, attrs=posterior.attrs)
    split_fitted = np.asarray(inputs.kwargs["fit_mask"]).any(axis=(0, 1, 2))  # (S,)
    if not split_fitted.all() and split_fitted.any():
        for name in [n for n in PER_SPLIT if n in thinned]:  # (draws, S)
            scale = thinned[name]
            pooled = scale[:, split_fitted].mean(axis=1, keepdims=True)
            thinned = thinned | {name: np.where(split_fitted, scale, pooled)}
    cells = int(np.prod(inputs.observed_weight.shape))
    values = {"observed_weight": predictive_draws(target, thinned, key, cells=cells)}
    if form_of(settings.model).drift:  # predicted from the observed cells, as the draws are
        values |= site_draws(
            target,
            thinned,
            ["expected_weight"],
            cells=cells,
            dtypes={"expected_weight": np.float32},
        )
    return labels.dataset(values, dict.fromkeys(values, (*GRID, "split")), kept)


def _log_likelihood(target, thinned, kept, inputs, labels, settings):
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
    outputs = settings.observation == "outputs"
    if outputs and "statistics" not in inputs.kwargs:
        return None
    mask = np.asarray(inputs.kwargs["fit_mask"])  # (C, D, N, S)
    values = pointwise_log_likelihood(
        target,
        thinned,
        cells=mask.size,
        fitted=np.flatnonzero(mask),
    )  # (draws, fitted cells)
    chains = labels.coords["chain"].size
    where = dict(zip(inputs.observed_weight.dims, np.nonzero(inputs.fit_mask.values), strict=True))
    cells = {
        f"fitted_{dim}": ("fitted_cell", inputs.observed_weight[dim].values[index])
        for dim, index in where.items()
    }
    log_lik = azb.dict_to_dataset(
        {target.observed: values.reshape(chains, kept.size, -1)},
        coords={"chain": labels.coords["chain"], "draw": kept},
        dims={target.observed: ["fitted_cell"]},
        sample_dims=SAMPLE_DIMS,
        inference_library=numpyro,
    )
    return log_lik.assign_coords(cells)


def _root_attributes(inputs: ModelInputs, settings: FitSettings, behaviour) -> dict:
    observed = inputs.observed_weight
    return {
        "observation_model": settings.observation,
        "measure": observed.attrs["measure"],
        "fitted_splits": ",".join(settings.splits or map(str, observed.split.values)),
        "held_out_design": settings.held_out,
        "ablation": settings.ablation,
        "model": settings.model,
        "pooling": settings.pooling,
        "centred": int(settings.centred),
        "mass_matrix": settings.mass_matrix,
        "strategies": ",".join(settings.strategies),
        "context_dependent": int(settings.context_dependent),
        "inference_method": settings.method,
        "seed": settings.seed,
        "setting": str(behaviour.attrs.get("setting", "")),
        "package_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


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
    if "family_distance" in behaviour:
        data["family_distance"] = behaviour.family_distance
        data["family_distance_summary"] = family_distance_summary(behaviour.family_distance)
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
        "expected_weight": "predicted observed weight on memorizing per cell",
        "drift_scale": "spread of each run's drift from the law along training, per split",
        "drift_length": "e-folds of training steps over which the drift forgets its value",
        "smooth_scale": "step of the run offsets' random walk per unit of log num_tasks",
    }
    for name, text in descriptions.items():
        if name in posterior:
            posterior[name].attrs["description"] = text
    return posterior


def weight_of_odds(odds: np.ndarray) -> np.ndarray:
    """The weight on memorizing of two strategies from their log posterior odds, in the
    per-cell draws' float32: what a fit of two strategies stores as ``weight_memorizing``,
    so that ``read_fit`` rebuilds it bit for bit from the odds."""
    return scipy.special.expit(np.asarray(odds, dtype=np.float64)).astype(np.float32)


_SAME_IN_EVERY_SPLIT = "expected_weight_is_weight_memorizing"
_WEIGHT_OF_ODDS = "weight_memorizing_is_sigmoid_of_odds"
# The names of fits written before the observed variable was called observed_weight
# (it was relative_distance whichever measure it held); read_fit renames them.
_OLD_NAMES = {
    "relative_distance": "observed_weight",
    "expected_relative_distance": "expected_weight",
}
_OLD_ATTRIBUTES = {"expected_relative_distance_is_weight_memorizing": _SAME_IN_EVERY_SPLIT}


def write_fit(tree: xr.DataTree, path: str | Path) -> Path:
    """Write a fit to netCDF atomically (temporary file, then rename), every group
    compressed losslessly (``rational_icl.io.compression_encoding``).

    What the file would repeat is left out and rebuilt by ``read_fit``, bit for bit:
    ``expected_weight`` where it is ``weight_memorizing`` in every split (no context-dependent
    weights, no drift: a third of the file), and ``weight_memorizing`` where it is the
    sigmoid of ``log_posterior_odds`` (two strategies: ``weight_of_odds``).
    """
    return write_datatree(_without_repeated_weights(tree), path)


def _without_repeated_weights(tree: xr.DataTree) -> xr.DataTree:
    posterior = tree.posterior.to_dataset(inherit=False)
    stored = posterior
    if "expected_weight" in posterior and "weight_memorizing" in posterior:
        expected = posterior.expected_weight
        weight = posterior.weight_memorizing.broadcast_like(expected).transpose(*expected.dims)
        if _same(expected, weight):
            stored = stored.drop_vars("expected_weight").assign_attrs({_SAME_IN_EVERY_SPLIT: 1})
    if "log_posterior_odds" in posterior and "weight_memorizing" in posterior:
        odds = posterior.log_posterior_odds
        if _same(posterior.weight_memorizing, odds.copy(data=weight_of_odds(odds.values))):
            stored = stored.drop_vars("weight_memorizing").assign_attrs({_WEIGHT_OF_ODDS: 1})
    if stored is posterior:
        return tree
    tree = tree.copy()
    tree["posterior"] = xr.DataTree(stored)
    return tree


def _same(a: xr.DataArray, b: xr.DataArray) -> bool:
    return a.dtype == b.dtype and a.dims == b.dims and np.array_equal(a.values, b.values)


def read_fit(path: str | Path) -> xr.DataTree:
    """Read a fit written by ``write_fit``."""
    path = Path(path)
    if path.is_dir():
        raise RiclError(f"fit file {str(path)!r} is a folder; give the fit's .nc file")
    if not path.is_file():
        raise RiclError(f"fit file {str(path)!r} does not exist")
    try:
        tree = load_datatree(path)
    except (OSError, ValueError, RuntimeError) as err:
        raise RiclError(f"{path}: not a fit file ({reading_error(err)})") from None
    if "posterior" not in tree.children:
        raise RiclError(f"{path}: not a fit file (no posterior group)")
    tree = _with_stored_weights(_with_current_names(tree))
    check_fit(tree, path)
    return tree


def _with_stored_weights(tree: xr.DataTree) -> xr.DataTree:
    """The posterior with what ``write_fit`` left out rebuilt."""
    posterior = tree.posterior.to_dataset(inherit=False)
    rebuilt = False
    from_odds = posterior.attrs.pop(_WEIGHT_OF_ODDS, None) is not None
    if from_odds and "log_posterior_odds" in posterior:
        odds = posterior.log_posterior_odds.drop_attrs()
        posterior["weight_memorizing"] = odds.copy(data=weight_of_odds(odds.values))
        rebuilt = True
    same = posterior.attrs.pop(_SAME_IN_EVERY_SPLIT, None) is not None
    if same and "weight_memorizing" in posterior:
        weight = posterior.weight_memorizing.drop_attrs()
        # by size, not values: the dataset's own split coordinate (and its dtype) labels it
        posterior["expected_weight"] = weight.expand_dims(split=posterior.sizes["split"], axis=-1)
        rebuilt = True
    if rebuilt:
        tree["posterior"] = xr.DataTree(_describe(posterior))
    return tree


def observed_description(attrs) -> str:
    """What a fit observed, in words, from its root attributes: the measure named once."""
    strategies = str(attrs.get("strategies", "memorizing,generalizing")).split(",")
    if attrs.get("observation_model") == "outputs":
        return f"the transformer's outputs (a mixture of {', '.join(strategies)})"
    measure = attrs.get("measure", "relative-distance")
    return f"the {measure} weight on {strategies[0]} (against {strategies[1]})"


def _with_current_names(tree: xr.DataTree) -> xr.DataTree:
    """A fit of an older version with today's variable and attribute names."""
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood"):
        if group not in tree.children:
            continue
        data = tree[group].to_dataset(inherit=False)
        old = {k: v for k, v in _OLD_NAMES.items() if k in data.data_vars}
        attributes = {k: v for k, v in _OLD_ATTRIBUTES.items() if k in data.attrs}
        if old or attributes:
            data = data.rename_vars(old)
            data.attrs = {attributes.get(k, k): v for k, v in data.attrs.items()}
            tree[group] = xr.DataTree(data)
    return tree


DERIVED = ("weight_memorizing", "log_posterior_odds", "expected_weight")


# One value per run (the offset models): their R-hat and ESS are checked with the rest
# (``diagnostics``), but a table row or trace panel each would bury alpha, beta and gamma.
PER_RUN = (
    "run_offset",
    "run_log_prior_odds",
    "run_log_prior_odds_decentered",
    "run_offset_innovation",
)


def parameter_names(tree: xr.DataTree, *, per_run: bool = True) -> list[str]:
    """Posterior variables that are parameters (not per-cell derived quantities); without
    the per-run sites (``PER_RUN``) when ``per_run`` is False."""
    names = parameter_names_of(tree.posterior.ds)
    return names if per_run else [n for n in names if n not in PER_RUN]


def parameter_names_of(posterior: xr.Dataset) -> list[str]:
    return [name for name in posterior.data_vars if name not in DERIVED]

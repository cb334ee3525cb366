"""Fitting the rational model: NUTS, MAP (with a Laplace approximation) or SVI, a held-out
split, the ArviZ DataTree of docs/files.md §3, diagnostics, PSIS-LOO and comparison.

The entry point is ``fit(behaviour, ...)``; it returns an ``xarray.DataTree`` with the groups
``posterior``, ``posterior_predictive``, ``log_likelihood``, ``observed_data``,
``constant_data`` and ``sample_stats``, which ``write_fit`` stores atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import arviz_stats as azs
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import scipy.optimize
import scipy.special
import scipy.stats
import xarray as xr
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal
from numpyro.infer.util import log_density

from rational_icl import __version__, formulas
from rational_icl.errors import RiclError, reading_error
from rational_icl.fits import model as rational
from rational_icl.fits import parameters
from rational_icl.io import load_datatree, write_datatree

numpyro.enable_x64()  # K ** beta and N ** (1 - alpha) span many orders of magnitude

CONFIGURATION_DIMS = ("mlp_expansion_factor", "context_length", "num_dims")
OBSERVATIONS = ("relative-distance", "outputs")
# Behaviour measures the relative-distance model can observe, and their behaviour variables
# (the fit's observed_data keeps the name relative_distance for every measure: docs/files.md §3).
MEASURES = {"barycentric": "barycentric_weight", "relative-distance": "relative_distance"}
METHODS = ("nuts", "map", "svi")
SAMPLE_DIMS = ("chain", "draw")


@dataclass(frozen=True)
class FitSettings:
    """What to fit and how. Defaults follow the paper and issue 4."""

    observation: str = "relative-distance"
    measure: str = "auto"  # barycentric where the behaviour has it, else relative-distance
    splits: tuple[str, ...] | None = None  # None fits every split
    ablation: str = "none"
    pooling: str = "complete"
    strategies: tuple[str, ...] = ("memorizing", "generalizing")
    context_dependent: bool = False
    method: str = "nuts"
    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    seed: int = 0
    held_out_fraction: float = 0.8
    drop_early: bool = False
    svi_steps: int = 5000
    pointwise_draws: int = 1000  # draws kept (all chains) for the per-cell predictive, log lik
    outputs_bin_width: float | None = 0.25  # Dirichlet normaliser nodes (dirichlet_statistics)
    progress_bar: bool = False
    priors: parameters.Priors = parameters.Priors()

    def __post_init__(self):
        for name, allowed in [
            ("observation", OBSERVATIONS),
            ("measure", ("auto", *MEASURES)),
            ("ablation", parameters.ABLATIONS),
            ("pooling", parameters.POOLINGS),
            ("method", METHODS),
        ]:
            if getattr(self, name) not in allowed:
                raise RiclError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if tuple(self.strategies[:2]) != ("memorizing", "generalizing") or not set(
            self.strategies[2:]
        ) <= {"constant"}:
            raise RiclError(
                "strategies must be memorizing,generalizing or memorizing,generalizing,constant;"
                f" got {','.join(self.strategies)!r}"
            )
        if len(self.strategies) == 3 and self.observation == "relative-distance":
            raise RiclError(
                "the constant strategy needs --observation outputs: the relative distance "
                "measures memorizing against generalizing only"
            )
        for name in ("chains", "draws", "svi_steps", "pointwise_draws"):
            if getattr(self, name) < 1:
                raise RiclError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.warmup < 0:
            raise RiclError(f"warmup must be at least 0; got {self.warmup}")
        if self.outputs_bin_width is not None and not self.outputs_bin_width > 0:
            raise RiclError(
                f"outputs_bin_width must be positive or None; got {self.outputs_bin_width}"
            )
        if not 0.0 < self.held_out_fraction <= 1.0:
            raise RiclError(f"held_out_fraction must be in (0, 1]; got {self.held_out_fraction}")


# ---------------------------------------------------------------------------------------
# held-out split and early checkpoints


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


def early_cells(interpolation_distance: xr.DataArray, within: float = 0.2) -> xr.DataArray:
    """True for the checkpoints before the transformer first comes within ``within`` (of its
    range over checkpoints) of its best memorizing-generalizing mixture, per cell.

    The paper fits only later checkpoints: early on the transformer is far from any mixture.
    """
    distance = interpolation_distance
    low, high = distance.min("checkpoint"), distance.max("checkpoint")
    close = distance <= low + within * (high - low)
    return (close.cumsum("checkpoint") == 0).rename("dropped")


def _fitted_splits(split: xr.DataArray, splits) -> xr.DataArray:
    """True for the splits that enter the likelihood (all when ``splits`` is None)."""
    if splits is None:
        return xr.ones_like(split, dtype=bool)
    unknown = [s for s in splits if s not in split.values]
    if unknown or not splits:
        raise RiclError(
            f"splits {','.join(splits)!r}: allowed are {', '.join(map(str, split.values))}"
        )
    return split.isin(list(splits))


def authors_kept(interpolation_distance: xr.DataArray, within: float) -> xr.DataArray:
    """The authors' early-checkpoint rule: one threshold common to all num_tasks.

    The threshold is the largest over num_tasks of the first checkpoint whose ``id``
    interpolation distance is within ``within`` of its range over checkpoints (the authors'
    p: 0.2, and 0.1 for regression); checkpoints from it on are kept. Returns bool
    (config..., num_tasks, checkpoint).
    """
    distance = interpolation_distance.sel(split="id", drop=True)
    early = early_cells(distance, within)
    first = distance.checkpoint.where(~early).min("checkpoint")  # per num_tasks
    common = first.max("num_tasks")  # per configuration
    return (distance.checkpoint >= common).broadcast_like(distance).rename("authors_kept")


def _num_fitted(n: int, fraction: float) -> int:
    if fraction >= 1.0:
        return n
    return int(min(max(round(fraction * n), 1), n - 1))


# ---------------------------------------------------------------------------------------
# inputs


@dataclass
class _Inputs:
    """Arrays for the model functions, with the configuration axis C flattened."""

    kwargs: dict  # model keyword arguments (observations included)
    observed_key: str
    relative_distance: xr.DataArray  # (config..., num_tasks, checkpoint, split)
    fit_mask: xr.DataArray  # same dims, bool
    held_out: xr.DataArray
    dropped: xr.DataArray | None
    config_dims: tuple[str, ...]
    config_shape: tuple[int, ...]
    chains_draws: tuple[int, int] = (0, 0)


def resolved_measure(behaviour: xr.Dataset, measure: str) -> str:
    """``measure``, with ``"auto"`` read as barycentric where ``behaviour`` has it."""
    if measure != "auto":
        return measure
    return "barycentric" if MEASURES["barycentric"] in behaviour else "relative-distance"


def _model_inputs(behaviour: xr.Dataset, settings: FitSettings, runs=None) -> _Inputs:
    measure = resolved_measure(behaviour, settings.measure)
    measured = MEASURES[measure]
    for name in (measured, "strategy_loss", "strategy_complexity"):
        if name not in behaviour:
            hint = (
                "; the barycentric measure needs the constant strategy's predictions "
                "(recompute the behaviour with this version, or use --measure relative-distance)"
                if name == "barycentric_weight"
                else ""
            )
            raise RiclError(f"behaviour dataset has no variable {name!r}{hint}")
    config_dims = tuple(d for d in CONFIGURATION_DIMS if d in behaviour.dims)
    if settings.pooling != "complete" and not config_dims:
        raise RiclError(
            f"pooling {settings.pooling!r} needs several configurations "
            f"({', '.join(CONFIGURATION_DIMS)}); the runs have one, use --pooling complete"
        )
    missing = [s for s in settings.strategies if s not in behaviour.strategy.values]
    if missing:
        raise RiclError(f"behaviour dataset has no strategy {missing[0]!r}")
    for dim in ("num_tasks", "checkpoint"):
        if behaviour.sizes.get(dim, 0) < 2:
            raise RiclError(
                f"the fit needs at least 2 {dim} values; got {behaviour.sizes.get(dim, 0)}"
            )
    observed = behaviour[measured].transpose(*config_dims, "num_tasks", "checkpoint", "split")
    observed = observed.rename("relative_distance").assign_attrs(measure=measure)
    strategies = list(settings.strategies)
    cell_dims = (*config_dims, "num_tasks")
    loss = behaviour.strategy_loss.sel(strategy=strategies)
    complexity = behaviour.strategy_complexity.sel(strategy=strategies)
    template = observed.isel(checkpoint=0, split=0, drop=True)
    loss, complexity = (
        a.broadcast_like(template).transpose("strategy", *cell_dims) for a in (loss, complexity)
    )
    if not (np.isfinite(loss.values).all() and (complexity.values > 0).all()):
        raise RiclError("strategy_loss must be finite and strategy_complexity positive")
    held_out = held_out_cells(
        behaviour.num_tasks.values, behaviour.checkpoint.values, settings.held_out_fraction
    )
    fit_mask = (~held_out) & observed.notnull() & _fitted_splits(observed.split, settings.splits)
    dropped = None
    if settings.drop_early:
        if "interpolation_distance" not in behaviour:
            raise RiclError("dropping early checkpoints needs interpolation_distance")
        dropped = early_cells(behaviour.interpolation_distance).transpose(*observed.dims)
        fit_mask = fit_mask & ~dropped
    fit_mask = fit_mask.transpose(*observed.dims)
    config_shape = tuple(behaviour.sizes[d] for d in config_dims)
    num_config = int(np.prod(config_shape)) if config_dims else 1

    def flat(values, leading=0):  # (lead..., config..., rest) -> (lead..., C, rest)
        values = np.asarray(values)
        return values.reshape(
            values.shape[:leading] + (num_config,) + values.shape[leading + len(config_dims) :]
        )

    kwargs = dict(
        strategy_loss=jnp.asarray(flat(loss.values, 1)),
        strategy_complexity=jnp.asarray(flat(complexity.values, 1)),
        checkpoint=jnp.asarray(behaviour.checkpoint.values, dtype=jnp.float64),
        fit_mask=jnp.asarray(flat(fit_mask.values)),
        ablation=settings.ablation,
        pooling=settings.pooling,
        priors=settings.priors,
    )
    if settings.observation == "relative-distance":
        kwargs["relative_distance"] = jnp.asarray(flat(np.nan_to_num(observed.values, nan=0.5)))
        key = "relative_distance"
        if settings.context_dependent:
            losses, size = _context_inputs(runs, strategies, cell_dims, config_dims)
            kwargs["context_loss"] = jnp.asarray(flat(losses.mean("sequence").values, 1))
            kwargs["context_size"] = jnp.asarray(size)
    else:
        key = "transformer_prediction"
        kwargs.update(_outputs_inputs(runs, strategies, cell_dims, config_dims, flat, settings))
    return _Inputs(kwargs, key, observed, fit_mask, held_out, dropped, config_dims, config_shape)


def context_loss(runs: xr.Dataset) -> xr.DataArray:
    """Mean loss of each strategy over the first t observations of every evaluation sequence.

    Categorical: log loss of the observed symbol; regression: squared error / (2 sigma^2)
    with sigma^2 the run's ``noise_variance``. Zero at t = 0 (no observations yet).

    Returns
    -------
    xr.DataArray (strategy, ..., split, sequence, position)
    """
    setting = runs.attrs.get("setting")
    prediction = runs.strategy_prediction
    if setting == "categorical-sequence":
        chosen = prediction.isel(outcome=runs.target.astype(int).compute())
        per_step = -np.log(np.clip(chosen, 1e-12, None))
    elif setting == "linear-regression":
        noise = formulas.run_noise_variance(runs)
        per_step = (prediction.squeeze("outcome", drop=True) - runs.target) ** 2 / (2 * noise)
    else:
        raise RiclError(
            f"context-dependent weights need a setting with a context of predictions "
            f"(categorical-sequence, linear-regression); got {setting!r}"
        )
    previous = per_step.cumsum("position").shift(position=1, fill_value=0.0)
    size = xr.DataArray(np.arange(runs.sizes["position"]), dims="position")
    return (previous / np.maximum(size, 1)).rename("context_loss")


def _context_inputs(runs, strategies, cell_dims, config_dims):
    if runs is None:
        raise RiclError("context-dependent weights need the predictions files, not only behaviour")
    if "context_length" in config_dims:
        raise RiclError("context-dependent weights need one context_length across the runs")
    losses = context_loss(runs).sel(strategy=strategies)
    losses = losses.transpose("strategy", *cell_dims, "split", "sequence", "position")
    return losses, np.arange(runs.sizes["position"], dtype=float)


def _outputs_inputs(runs, strategies, cell_dims, config_dims, flat, settings):
    if runs is None:
        raise RiclError("--observation outputs needs the predictions files, not only behaviour")
    if "transformer_prediction" not in runs:
        raise RiclError("--observation outputs needs transformer_prediction in the runs")
    order = ("split", "sequence", "position", "outcome")
    strategy = runs.strategy_prediction.sel(strategy=strategies)
    strategy = strategy.transpose("strategy", *cell_dims, *order)
    transformer = runs.transformer_prediction.transpose(*cell_dims, "checkpoint", *order)
    kind = "regression" if runs.attrs.get("setting") == "linear-regression" else "probabilities"
    strategy_values = flat(strategy.values, 1)
    transformer_values = flat(transformer.values)
    inputs = dict(outcome_kind=kind)
    if settings.context_dependent:  # weights per sequence and position: every prediction
        losses, size = _context_inputs(runs, strategies, cell_dims, config_dims)
        inputs["context_loss"] = jnp.asarray(flat(losses.values, 1))
        inputs["context_size"] = jnp.asarray(size)
        inputs["strategy_prediction"] = jnp.asarray(strategy_values, dtype=jnp.float32)
        inputs["transformer_prediction"] = jnp.asarray(transformer_values, dtype=jnp.float32)
    elif kind == "probabilities":  # per-cell sums, computed once (see outputs_model)
        inputs["statistics"] = rational.dirichlet_statistics(
            strategy_values, transformer_values, bin_width=settings.outputs_bin_width
        )
    else:
        inputs["statistics"] = rational.normal_statistics(strategy_values, transformer_values)
    return inputs


# ---------------------------------------------------------------------------------------
# inference


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
    inputs = _model_inputs(behaviour, settings, runs)
    model = (
        rational.relative_distance_model
        if settings.observation == "relative-distance"
        else rational.outputs_model
    )
    problem = _Problem(model, inputs.kwargs, inputs.observed_key)
    key = jax.random.PRNGKey(settings.seed)
    key_init, key_fit, key_predict = jax.random.split(key, 3)
    if settings.observation == "outputs":  # each candidate costs a pass over every sequence
        start = problem.best_prior_draw(
            key_init, 2, fixed=_relative_distance_map(behaviour, settings)
        )
    else:
        start = problem.best_prior_draw(key_init, 256)
    if settings.method == "nuts":
        latent, sample_stats = _nuts(problem, start, key_fit, settings)
    elif settings.method == "map":
        latent, sample_stats = _map_laplace(problem, start, key_fit, settings)
    else:
        latent, sample_stats = _svi(problem, start, key_fit, settings)
    return _datatree(problem, inputs, latent, sample_stats, key_predict, settings, behaviour)


def _relative_distance_map(behaviour, settings: FitSettings) -> dict:
    """MAP of the cheap relative-distance model: the start of the outputs model, whose
    likelihood over every sequence is costly and has poor local optima far from it."""
    cheap = dataclasses.replace(
        settings,
        observation="relative-distance",
        strategies=settings.strategies[:2],
        context_dependent=False,
        drop_early=False,
    )
    inputs = _model_inputs(behaviour, cheap)
    problem = _Problem(rational.relative_distance_model, inputs.kwargs, "relative_distance")
    optimum, _ = problem.map_estimate(
        problem.best_prior_draw(jax.random.PRNGKey(settings.seed), 256)
    )
    values = problem.constrain(problem.unravel(optimum))
    return {k: v for k, v in values.items() if k != "sigma"}


def _is_data(value) -> bool:
    """An array, or a pytree of arrays such as the outputs model's statistics."""
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(leaf, jax.Array) for leaf in leaves)


class _Problem:
    """A model with its data: latent sites, their transforms and the log joint density."""

    def __init__(self, model, kwargs, observed_key):
        # Arrays go into compiled functions as arguments (not as constants XLA would fold);
        # strings and settings are bound to the model.
        self.data = {k: v for k, v in kwargs.items() if _is_data(v)}
        self.model = functools.partial(
            model, **{k: v for k, v in kwargs.items() if k not in self.data}
        )
        self.kwargs, self.observed_key = kwargs, observed_key
        sites = {}

        def record_sites(data):  # traced abstractly: learns the sites without running the model
            trace = numpyro.handlers.trace(numpyro.handlers.seed(self.model, 0)).get_trace(**data)
            for name, site in trace.items():
                if site["type"] == "sample" and not site["is_observed"]:
                    sites[name] = (biject_to(site["fn"].support), site["value"].shape)
            return 0.0

        jax.make_jaxpr(record_sites)(self.data)
        self.latent = {name: transform for name, (transform, _) in sites.items()}
        self.shapes = {name: shape for name, (_, shape) in sites.items()}
        example = {name: jnp.zeros(shape) for name, shape in self.shapes.items()}
        _, self.unravel = ravel_pytree(example)
        self._objective = jax.jit(self._negative_log_joint)
        self._prior_draws = {}
        self._value_and_grad = jax.jit(jax.value_and_grad(self._negative_log_joint))

    def _negative_log_joint(self, x, data):
        values = self.constrain(self.unravel(x))
        return -log_density(self.model, (), data, values)[0]

    def objective(self, x):
        return self._objective(x, self.data)

    def value_and_grad(self, x):
        return self._value_and_grad(x, self.data)

    def constrain(self, unconstrained: dict) -> dict:
        return {name: t(unconstrained[name]) for name, t in self.latent.items()}

    def unconstrain(self, values: dict) -> dict:
        return {name: t.inv(values[name]) for name, t in self.latent.items()}

    def best_prior_draw(self, key, num_draws: int, fixed: dict | None = None):
        """The prior draw (flat, unconstrained) with the highest log joint: a start away
        from flat regions where every weight is 0 or 1 and the gradient vanishes.

        ``fixed`` sites (constrained values) replace those of every draw.
        """
        if num_draws not in self._prior_draws:  # compiled once per problem and size
            predictive = Predictive(
                self.model, num_samples=num_draws, return_sites=list(self.latent)
            )
            self._prior_draws[num_draws] = jax.jit(lambda k, data: predictive(k, **data))
        prior_data = {k: v for k, v in self.data.items() if k != self.observed_key}
        draws = self._prior_draws[num_draws](key, prior_data)
        for name, value in (fixed or {}).items():
            if name in draws:
                draws[name] = jnp.broadcast_to(value, draws[name].shape)
        flat = jax.vmap(lambda d: ravel_pytree(self.unconstrain(d))[0])(draws)
        scores = np.array([float(self.objective(x)) for x in flat])
        return flat[int(np.nanargmin(np.where(np.isfinite(scores), scores, np.inf)))]

    def map_estimate(self, start):
        """Minimise the negative log joint with L-BFGS on the unconstrained scale (no
        Jacobian term: the mode of the posterior density in the maths' units).

        Returns the optimum (flat unconstrained vector) and scipy's result.
        """

        def scipy_objective(x):
            value, grad = self.value_and_grad(jnp.asarray(x))
            if not np.isfinite(value):  # an overshooting line search step: make it backtrack
                return 1e300, np.zeros_like(x)
            return float(value), np.asarray(grad, dtype=np.float64)

        result = scipy.optimize.minimize(
            scipy_objective,
            np.asarray(start, dtype=np.float64),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-8},
        )
        return jnp.asarray(result.x), result

    def hessian(self, x, step: float = 1e-5):
        """Hessian of the objective by forward differences of the (compiled) gradient."""
        x = np.asarray(x, dtype=np.float64)
        centre = np.asarray(self.value_and_grad(jnp.asarray(x))[1])
        columns = []
        for i in range(x.size):
            shifted = x.copy()
            shifted[i] += step
            gradient = np.asarray(self.value_and_grad(jnp.asarray(shifted))[1])
            columns.append((gradient - centre) / step)
        hessian = np.stack(columns, axis=1)
        return 0.5 * (hessian + hessian.T)


def _nuts(problem: _Problem, start, key, settings: FitSettings):
    optimum, _ = problem.map_estimate(start)
    key_jitter, key_run = jax.random.split(key)
    noise = jax.random.normal(key_jitter, (settings.chains, optimum.size)) * 0.1
    init = jax.vmap(problem.unravel)(optimum + noise)
    if settings.chains == 1:  # numpyro takes one chain's start without the chain axis
        init = jax.tree.map(lambda v: v[0], init)
    chain_method = "parallel" if jax.local_device_count() >= settings.chains else "sequential"
    kernel = NUTS(problem.model, dense_mass=True, target_accept_prob=0.9)
    mcmc = MCMC(
        kernel,
        num_warmup=settings.warmup,
        num_samples=settings.draws,
        num_chains=settings.chains,
        chain_method=chain_method,
        progress_bar=settings.progress_bar,
        jit_model_args=True,
    )
    mcmc.run(
        key_run,
        init_params=init,
        extra_fields=("diverging", "energy", "num_steps", "accept_prob", "adapt_state.step_size"),
        **problem.data,
    )
    samples = mcmc.get_samples(group_by_chain=True)
    latent = {name: np.asarray(samples[name]) for name in problem.latent}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = xr.Dataset(
        {
            "diverging": (SAMPLE_DIMS, np.asarray(extra["diverging"])),
            "energy": (SAMPLE_DIMS, np.asarray(extra["energy"])),
            "n_steps": (SAMPLE_DIMS, np.asarray(extra["num_steps"])),
            "acceptance_rate": (SAMPLE_DIMS, np.asarray(extra["accept_prob"])),
            "step_size": (SAMPLE_DIMS, np.asarray(extra["adapt_state.step_size"])),
        },
        attrs={"inference": "NUTS", "num_warmup": settings.warmup, "chain_method": chain_method},
    )
    return latent, stats


def _map_laplace(problem: _Problem, start, key, settings: FitSettings):
    """MAP, then draws from the Laplace approximation on the unconstrained scale."""
    optimum, result = problem.map_estimate(start)
    hessian = problem.hessian(optimum)
    eigenvalues, eigenvectors = np.linalg.eigh(hessian)
    # a flat or non-convex direction gets unit variance rather than an infinite one
    scale = np.where(eigenvalues > 1e-8, 1.0 / np.sqrt(np.abs(eigenvalues)), 1.0)
    rng = np.random.default_rng([settings.seed, 1])
    noise = rng.standard_normal((settings.chains * settings.draws, optimum.size))
    flat = np.asarray(optimum) + (noise * scale) @ eigenvectors.T
    flat[0] = optimum  # the first draw is the MAP itself
    draws = jax.jit(jax.vmap(lambda x: problem.constrain(problem.unravel(x))))(flat)
    latent = {
        name: np.asarray(value).reshape(settings.chains, settings.draws, *value.shape[1:])
        for name, value in draws.items()
    }
    stats = xr.Dataset(
        {
            "optimizer_success": ((), _converged(result, hessian)),
            "optimizer_iterations": ((), int(result.nit)),
            "optimizer_message": ((), str(result.message)),
            "map_log_density": ((), float(-result.fun)),
        },
        attrs={"inference": "MAP with Laplace approximation"},
    )
    return latent, stats


def _converged(result, hessian, tolerance: float = 0.01) -> bool:
    """Whether the optimiser reached the mode: scipy says so, or the Newton step left is
    under ``tolerance`` posterior standard deviations (sqrt(g' H^-1 g), Laplace scale).

    The second case covers a line search that stops on rounding: the outputs model's log
    density is a sum of some 1e8 predictions' terms, whose last digits are noise.
    """
    if result.success:
        return True
    gradient = np.asarray(result.jac, dtype=np.float64)
    try:
        decrement = float(gradient @ np.linalg.solve(hessian, gradient))
    except np.linalg.LinAlgError:
        return False
    return bool(np.isfinite(decrement) and 0.0 <= decrement < tolerance**2)


def _svi(problem: _Problem, start, key, settings: FitSettings):
    start = problem.constrain(problem.unravel(start))
    guide = AutoMultivariateNormal(
        problem.model, init_loc_fn=numpyro.infer.init_to_value(values=start)
    )
    svi = SVI(problem.model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    key_run, key_draw = jax.random.split(key)
    result = svi.run(
        key_run, settings.svi_steps, progress_bar=settings.progress_bar, **problem.data
    )
    draws = guide.sample_posterior(
        key_draw, result.params, sample_shape=(settings.chains * settings.draws,)
    )
    latent = {
        name: np.asarray(draws[name]).reshape(
            settings.chains, settings.draws, *problem.shapes[name]
        )
        for name in problem.latent
    }
    stats = xr.Dataset(
        {"elbo_loss": (("svi_step",), np.asarray(result.losses))},
        attrs={"inference": "SVI, AutoMultivariateNormal guide, Adam(0.01)"},
    )
    return latent, stats


# ---------------------------------------------------------------------------------------
# the DataTree


def _datatree(problem, inputs: _Inputs, latent, sample_stats, key, settings, behaviour):
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


def _as_dataarray(name, values, leading_shape, leading_dims, inputs: _Inputs, dims=()):
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


# The authors' early-checkpoint tolerance p (find_approximate_interpolation_threshold).
AUTHORS_WITHIN = {"linear-regression": 0.1}


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


# ---------------------------------------------------------------------------------------
# metrics, diagnostics, LOO


def fit_metrics(tree: xr.DataTree) -> dict[str, float]:
    """How well the predicted (posterior mean) weight on memorizing matches the observed one.

    Our evaluation, per split, on held-out and on fitted cells: Pearson and Spearman
    correlation, mean TVD and R^2, and the same for a no-skill baseline that predicts each
    num_tasks' mean observed weight (``baseline_heldout_*``). The authors' evaluation
    (``authors_*``, where the fit has ``constant_data.authors_kept``): the id split, every
    checkpoint from their common early threshold on, pooled over num_tasks, per
    configuration then averaged; with the same baseline (``authors_baseline_*``) and the
    threshold itself (``authors_threshold``, the latest over configurations).
    """
    predicted = tree.posterior.expected_relative_distance.mean(SAMPLE_DIMS)
    observed = tree.observed_data.relative_distance
    constant = tree.constant_data
    usable = observed.notnull()
    if "dropped" in constant:
        usable = usable & ~constant.dropped
    metrics = {}
    for subset, mask in [("heldout", constant.held_out & usable), ("fitted", constant.fit_mask)]:
        for split in observed.split.values:
            cells = mask.broadcast_like(observed).sel(split=split)
            o, p = observed.sel(split=split), predicted.sel(split=split)
            metrics |= _agreement(p, o, cells, f"{subset}_{{}}_{split}")
            if subset == "heldout":
                baseline = _mean_per_num_tasks(o, cells)
                metrics |= _agreement(baseline, o, cells, f"baseline_heldout_{{}}_{split}")
    if "authors_kept" in constant and "id" in observed.split.values:
        kept = constant.authors_kept & usable.sel(split="id", drop=True)
        metrics |= _authors_metrics(predicted, observed, kept)
        threshold = constant.checkpoint.where(constant.authors_kept).min("checkpoint").max()
        metrics["authors_threshold"] = float(threshold)
    return metrics


def _authors_metrics(predicted, observed, kept) -> dict[str, float]:
    """The authors' pooled agreement on the id split, per configuration, then averaged."""
    o, p = observed.sel(split="id", drop=True), predicted.sel(split="id", drop=True)
    kept = kept.broadcast_like(o)
    configurations = [d for d in o.dims if d not in ("num_tasks", "checkpoint")]
    stacked = [(o, p, kept)]
    if configurations:
        stack = {"configuration": configurations}
        o, p, kept = (x.stack(stack) for x in (o, p, kept))
        stacked = [
            (o.isel(configuration=i), p.isel(configuration=i), kept.isel(configuration=i))
            for i in range(o.sizes["configuration"])
        ]
    per_configuration = []
    for o_c, p_c, kept_c in stacked:
        row = _agreement(p_c, o_c, kept_c, "authors_{}")
        row |= _agreement(_mean_per_num_tasks(o_c, kept_c), o_c, kept_c, "authors_baseline_{}")
        per_configuration.append(row)
    return {k: float(np.nanmean([r[k] for r in per_configuration])) for k in per_configuration[0]}


def _mean_per_num_tasks(observed: xr.DataArray, cells: xr.DataArray) -> xr.DataArray:
    """The no-skill prediction: each num_tasks' mean observed weight over ``cells``."""
    mean = observed.where(cells).mean("checkpoint", skipna=True)
    return mean.broadcast_like(observed)


def _agreement(predicted, observed, cells, name: str) -> dict[str, float]:
    """Pearson, Spearman, mean |difference| (TVD) and R^2 over the cells where ``cells``."""
    m = cells.broadcast_like(observed).values & observed.notnull().values
    p = predicted.broadcast_like(observed).values[m]
    o = observed.values[m]
    if p.size < 3 or np.std(p) == 0 or np.std(o) == 0:
        values = dict.fromkeys(("correlation", "spearman"), math.nan)
    else:
        values = {
            "correlation": scipy.stats.pearsonr(p, o).statistic,
            "spearman": scipy.stats.spearmanr(p, o).statistic,
        }
    values["tvd"] = float(np.mean(np.abs(p - o))) if p.size else math.nan
    total = np.sum((o - o.mean()) ** 2) if p.size else 0.0
    values["r2"] = 1.0 - np.sum((o - p) ** 2) / total if total > 0 else math.nan
    return {name.format(k): float(v) for k, v in values.items()}


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


# ---------------------------------------------------------------------------------------
# diagnostics, LOO and comparison (arviz-stats)

DERIVED = ("weight_memorizing", "log_posterior_odds", "expected_relative_distance")
RHAT_MAX = 1.01
ESS_MIN = 400
BFMI_MIN = 0.3


def parameter_names(tree: xr.DataTree) -> list[str]:
    """Posterior variables that are parameters (not per-cell derived quantities)."""
    return parameter_names_of(tree.posterior.ds)


def parameter_names_of(posterior: xr.Dataset) -> list[str]:
    return [name for name in posterior.data_vars if name not in DERIVED]


SUMMARY_INTERVAL = 0.9  # the report's intervals (ArviZ's default is 0.89)


def summary(tree: xr.DataTree):
    """Summary table of the parameters (pandas DataFrame from ``arviz_stats.summary``):
    mean, sd, 90% equal-tailed interval and, for NUTS, R-hat, bulk/tail ESS and MCSE."""
    kind = "all" if tree.attrs.get("inference_method") == "nuts" else "stats"
    return azs.summary(
        tree, var_names=parameter_names(tree), kind=kind, ci_prob=SUMMARY_INTERVAL, ci_kind="eti"
    )


def diagnostics(tree: xr.DataTree) -> xr.Dataset:
    """R-hat, bulk and tail ESS per parameter, divergences and E-BFMI per chain (NUTS)."""
    names = parameter_names(tree)
    result = xr.Dataset()
    for name in names:
        result[f"{name}_r_hat"] = azs.rhat(tree, var_names=[name])[name]
        result[f"{name}_ess_bulk"] = azs.ess(tree, var_names=[name], method="bulk")[name]
        result[f"{name}_ess_tail"] = azs.ess(tree, var_names=[name], method="tail")[name]
    stats = tree.sample_stats
    if "diverging" in stats:
        result["divergences"] = stats.diverging.sum("draw")
    if "energy" in stats:
        result["e_bfmi"] = azs.bfmi(tree)["energy"].variable  # per chain
    return result


@dataclass(frozen=True)
class Diagnostic:
    """One problem a fit's diagnostics found: its ``kind`` (``r-hat``, ``ess``,
    ``divergences``, ``e-bfmi`` or ``optimizer``) and a short text that names the numbers."""

    kind: str
    text: str

    @property
    def line(self) -> str:
        return f"warning: {self.text}"


def diagnostic_warnings(tree: xr.DataTree) -> list[Diagnostic]:
    """One Diagnostic per problem: R-hat > 1.01, ESS < 400, any divergence, E-BFMI < 0.3.

    Only for NUTS (MAP: whether the optimiser converged; SVI: nothing).
    """
    if tree.attrs.get("inference_method") == "map":
        if not bool(tree.sample_stats.optimizer_success):
            text = "the optimiser did not report convergence; try --method nuts"
            return [Diagnostic("optimizer", text)]
        return []
    if tree.attrs.get("inference_method") != "nuts":
        return []
    found = diagnostics(tree)
    problems = []
    for name in parameter_names(tree):
        worst_rhat = float(found[f"{name}_r_hat"].max())
        if worst_rhat > RHAT_MAX:
            problems.append(Diagnostic("r-hat", f"{name}: R-hat {worst_rhat:.3f} > {RHAT_MAX}"))
        for kind in ("bulk", "tail"):
            ess = float(found[f"{name}_ess_{kind}"].min())
            if ess < ESS_MIN:
                problems.append(Diagnostic("ess", f"{name}: {kind} ESS {ess:.0f} < {ESS_MIN}"))
    divergences = int(found["divergences"].sum()) if "divergences" in found else 0
    if divergences:
        text = f"{divergences} divergent transition(s) after warm-up"
        problems.append(Diagnostic("divergences", text))
    if "e_bfmi" in found and float(found.e_bfmi.min()) < BFMI_MIN:
        text = f"E-BFMI {float(found.e_bfmi.min()):.2f} < {BFMI_MIN} in a chain"
        problems.append(Diagnostic("e-bfmi", text))
    return problems


def loo(tree: xr.DataTree):
    """PSIS-LOO over the fitted cells (``arviz_stats.loo``, pointwise, with Pareto k).

    Cells whose log likelihood is (nearly) the same in every draw (a saturated weight
    observed at exactly 0 or 1) have uniform importance weights; arviz-stats refuses
    constant tails, so those cells get a 1e-10 jitter, which changes ELPD by ~1e-10.
    A log likelihood on thinned draws (``outputs`` fits) is matched by the same draws of
    the posterior, whose effective sample size sets the relative efficiency.
    """
    if "log_likelihood" not in tree.children:
        if tree.attrs.get("observation_model") == "outputs":
            raise RiclError(
                "the fit has no log_likelihood group: context-dependent outputs fits have no "
                "pointwise log likelihood; compare fits made without --context-dependent"
            )
        raise RiclError(
            f"the fit has no log_likelihood group (observation model "
            f"{tree.attrs.get('observation_model')!r})"
        )
    log_lik = tree.log_likelihood.ds.copy()
    (name,) = log_lik.data_vars
    values = log_lik[name]
    constant = (values.max(SAMPLE_DIMS) - values.min(SAMPLE_DIMS)) < 1e-8
    if bool(constant.any()):
        rng = np.random.default_rng(0)
        jitter = values.copy(data=1e-10 * rng.standard_normal(values.shape))
        log_lik[name] = values + jitter.where(constant, 0.0)
    tree = tree.copy()
    tree["log_likelihood"] = xr.DataTree(log_lik)
    if "thinned_from" in log_lik.attrs:
        tree["posterior"] = xr.DataTree(tree.posterior.ds.sel(draw=log_lik.draw.values))
    with warnings.catch_warnings():
        # arviz-stats warns about Pareto k on stderr; loo_problem says it in one line instead
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # k of degenerate weights: NaN
        return azs.loo(tree, pointwise=True)


# PSIS-LOO is trusted only where the importance weights are: a cell's estimate is
# unreliable when its Pareto k is above min(1 - 1/log10(S), 0.7) (arviz-stats' good_k,
# Vehtari et al. 2024). A few such cells are reported beside the ELPD; beyond this share of
# cells, or when p_loo (the effective number of parameters) exceeds the model's parameter
# count by this factor, the draws are far outside the LOO posteriors (typically Laplace or
# SVI draws of a poorly identified posterior) and the ELPD means nothing.
BAD_PARETO_K_SHARE = 0.1
P_LOO_FACTOR = 3


def num_parameters(tree: xr.DataTree) -> int:
    """Number of free scalar parameters (elements of the posterior's parameters that vary)."""
    posterior = tree.posterior.ds
    count = 0
    for name in parameter_names(tree):
        values = posterior[name]
        spread = values.max(SAMPLE_DIMS) - values.min(SAMPLE_DIMS)
        count += int((spread > 0).sum())  # an ablation's fixed parameter is not free
    return count


def loo_problem(tree: xr.DataTree, result) -> str | None:
    """Why the PSIS-LOO ``result`` of ``tree`` cannot be reported, or None when it can.

    Reasons: more than 10% of the fitted cells with Pareto k above ``result.good_k`` (or not
    finite), or p_loo more than 3 times the number of free parameters.
    """
    k = np.asarray(result.pareto_k, dtype=float).ravel()
    bad = int((~(k <= result.good_k)).sum())  # NaN counts as bad
    method = tree.attrs.get("inference_method", "?")
    advice = "" if method == "nuts" else f" (the {method} draws); refit with --method nuts"
    if bad > BAD_PARETO_K_SHARE * k.size:
        return (
            f"PSIS-LOO not reported: {bad} of {k.size} fitted cells have Pareto k above "
            f"{result.good_k:.2f}, so the importance weights are unreliable{advice}"
        )
    count = num_parameters(tree)
    if not np.isfinite(result.p) or result.p > P_LOO_FACTOR * count:
        return (
            f"PSIS-LOO not reported: p_loo exceeds {P_LOO_FACTOR} times the model's {count} "
            f"free parameters, so the importance weights are unreliable{advice}"
        )
    return None


def compare(fits: dict[str, xr.DataTree]):
    """Rank fits by ELPD (PSIS-LOO), best first (``arviz_stats.compare``, a DataFrame).

    Only fits whose LOO can be reported (``loo_problem``) are ranked; the others are left
    out, with the reason, in ``table.attrs["not_ranked"]`` (name -> reason). Raises
    RiclError when fewer than two fits remain.
    """
    if len(fits) < 2:
        raise RiclError("compare needs at least two fits")
    models = {name: tree.attrs.get("observation_model") for name, tree in fits.items()}
    if len(set(models.values())) > 1:
        found = ", ".join(f"{name}: {model}" for name, model in models.items())
        raise RiclError(
            f"compare needs fits of one observation model (their log likelihoods score "
            f"different data); got {found}"
        )
    results, not_ranked = {}, {}
    for name, tree in fits.items():
        result = loo(tree)
        problem = loo_problem(tree, result)
        if problem is None:
            results[name] = result
        else:
            not_ranked[name] = problem
    if len(results) < 2:
        reasons = "; ".join(f"{name}: {why}" for name, why in not_ranked.items())
        raise RiclError(f"fewer than two fits have a reliable PSIS-LOO, nothing to rank; {reasons}")
    table = azs.compare(results)
    table.attrs["not_ranked"] = not_ranked
    return table

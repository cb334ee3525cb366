"""The inference engines: NUTS, MAP with a Laplace approximation, and SVI.

They are built from NumPyro's parts: ``initialize_model`` finds a model's latent sites and
their transforms to the unconstrained scale, ``log_density`` gives its log joint, ``MCMC``
with ``NUTS`` and ``SVI`` sample and optimise. Each engine returns ``Draws``: the latent
sites' draws (chain, draw, ...), constrained, and the engine's own statistics.

All randomness comes from one ``jax.random.PRNGKey(seed)``, split once into ``Keys``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import scipy.optimize
import xarray as xr
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal
from numpyro.infer.reparam import LocScaleReparam
from numpyro.infer.util import constrain_fn, initialize_model, log_density, transform_fn

from rational_icl.fits.inputs import FitSettings
from rational_icl.vocabulary import SAMPLE_DIMS, form_of

LBFGS_ITERATIONS = 100  # then Newton steps (Target.map_estimate)

# Each run's level (``model.run_offsets``) is sampled by NUTS centred where the run's cells
# pin it and decentred where they do not (``Target(centring=...)``, inference.run_centring).
# A centred hierarchy has no mode, though: the density of levels sitting on the law grows
# without bound as ``offset_scale`` shrinks to 0, and the MAP collapses there (a MAP fit of the
# drift model ended at offset_scale 0, its forecast back at the law). Every optimisation
# (MAP, Laplace, SVI, the starts) works on the decentred form, each level as the law plus
# offset_scale times a standard normal (site ``run_log_prior_odds_decentered``).
LEVEL = "run_log_prior_odds"


class Keys(NamedTuple):
    """The random keys of one fit, all from ``jax.random.PRNGKey(seed)``."""

    start: jax.Array  # prior draws searched for a starting point
    engine: jax.Array  # NUTS: the chains' jittered starts; SVI: the optimisation
    draws: jax.Array  # NUTS: the sampler; MAP: the Laplace draws; SVI: the guide's draws
    predict: jax.Array  # the posterior predictive
    relative_distance_start: jax.Array  # outputs model: its start's relative-distance MAP

    @classmethod
    def of(cls, seed: int) -> Keys:
        # the split of earlier versions, so that their NUTS and SVI fits repeat bit for bit
        start, fit, predict = jax.random.split(jax.random.PRNGKey(seed), 3)
        engine, draws = jax.random.split(fit)
        return cls(start, engine, draws, predict, jax.random.fold_in(start, 1))


class Draws(NamedTuple):
    """An engine's result: constrained draws of every latent site, (chain, draw, ...) numpy
    arrays, and the engine's statistics (``sample_stats`` of the fit)."""

    latent: dict
    sample_stats: xr.Dataset


class Target:
    """A model with its data: the log joint density the engines explore.

    Arrays go into compiled functions as arguments (``data``; constants would be folded by
    XLA, slowly); strings and settings are bound to the model. The latent sites and their
    transforms come from NumPyro's ``initialize_model``, traced abstractly (``key`` is only
    traced: nothing is drawn, and the model is not evaluated on the data).
    """

    def __init__(self, model, kwargs: dict, observed: str, key, *, decentred=False, centring=None):
        self.data = {k: v for k, v in kwargs.items() if _is_data(v)}
        # the run levels' parameterization: 1 centred, 0 decentred, per run (``LEVEL``)
        self.centring = 0.0 if decentred else centring
        if self.centring is not None:
            reparam = {LEVEL: LocScaleReparam(centered=self.centring)}
            model = numpyro.handlers.reparam(model, config=reparam)
        self.model = functools.partial(
            model, **{k: v for k, v in kwargs.items() if k not in self.data}
        )
        self.observed = observed
        self.sites, self.transforms = {}, {}

        def structure(key, data):  # traced abstractly: the sites, not their values
            info = initialize_model(key, self.model, model_kwargs=data, dynamic_args=True)
            for name, site in info.model_trace.items():
                self.sites[name] = site["type"]
                if site["type"] == "sample" and not site["is_observed"]:
                    self.transforms[name] = biject_to(site["fn"].support)
            return info.param_info.z  # an unconstrained point

        example = jax.eval_shape(structure, key, self.data)
        flat, self.unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape), example))
        self.size = flat.size  # number of unconstrained scalars
        self._value_and_grad = jax.jit(jax.value_and_grad(self._negative_log_joint))
        self._hessian = jax.jit(jax.hessian(self._negative_log_joint))
        self._scores = jax.jit(jax.vmap(self._negative_log_joint, in_axes=(0, None)))
        self._prior_draws = {}
        self._last_hessian = None

    def with_data(self, **data) -> Target:
        """This target with some data arrays replaced by others of the same shapes (None
        leaves one out: the observation, say, which the model then predicts). The compiled
        functions take the data as an argument and are shared, so a second target of the
        same shapes costs no compilation."""
        other = copy.copy(self)
        replaced = {k: jnp.asarray(v) for k, v in data.items() if v is not None}
        other.data = {k: v for k, v in self.data.items() if k not in data} | replaced
        other._last_hessian = None
        return other

    def _negative_log_joint(self, x, data):
        """-log p(data, theta) at the flat unconstrained ``x``, without the transforms'
        Jacobian: its minimum is the posterior mode in the maths' units."""
        return -log_density(self.model, (), data, self.constrain(self.unravel(x)))[0]

    def constrain(self, unconstrained: dict) -> dict:
        return transform_fn(self.transforms, unconstrained)

    def point(self, flat) -> dict:
        """Every sample and deterministic site's value at the flat unconstrained ``flat``."""
        return constrain_fn(
            self.model, (), self.data, self.unravel(jnp.asarray(flat)), return_deterministic=True
        )

    def unconstrain(self, values: dict):
        """The flat unconstrained vector of this target at constrained ``values`` (of its
        latent sites, and maybe more): the way back from ``point``, into this target's
        parameterization (a decentred target's ``point`` carries the levels themselves)."""
        values = dict(values)
        if f"{LEVEL}_decentered" in self.transforms and self.centring is not None:
            centred = np.broadcast_to(self.centring, np.shape(values[LEVEL])) > 0
            name = f"{LEVEL}_decentered"
            values[name] = np.where(centred, values[LEVEL], values[name])
        latent = {name: values[name] for name in self.transforms}
        return ravel_pytree(transform_fn(self.transforms, latent, invert=True))[0]

    def constrain_flat(self, flat) -> dict:
        """Constrained latent sites of flat unconstrained vectors (draws, size)."""
        return jax.vmap(lambda x: self.constrain(self.unravel(x)))(jnp.asarray(flat))

    def hessian(self, x) -> np.ndarray:
        """Exact Hessian of the negative log joint (``jax.hessian``) at flat ``x``."""
        x = np.asarray(x, dtype=np.float64)
        if self._last_hessian is None or not np.array_equal(self._last_hessian[0], x):
            # the last Newton step's Hessian is the Laplace approximation's: kept, not redone
            self._last_hessian = (x, np.asarray(self._hessian(jnp.asarray(x), self.data)))
        return self._last_hessian[1]

    def best_prior_draw(self, key, num_draws: int, fixed: dict | None = None):
        """The prior draw (flat, unconstrained) with the highest log joint: a start away
        from flat regions where every weight is 0 or 1 and the gradient vanishes.

        ``fixed`` sites (constrained values) replace those of every draw.
        """
        if num_draws not in self._prior_draws:  # compiled once per target and size
            predictive = Predictive(
                self.model, num_samples=num_draws, return_sites=list(self.transforms)
            )
            self._prior_draws[num_draws] = jax.jit(lambda k, data: predictive(k, **data))
        prior_data = {k: v for k, v in self.data.items() if k != self.observed}
        draws = self._prior_draws[num_draws](key, prior_data)
        for name, value in (fixed or {}).items():
            if name in draws:
                draws[name] = jnp.broadcast_to(value, draws[name].shape)
        flat = jax.vmap(lambda d: ravel_pytree(transform_fn(self.transforms, d, invert=True))[0])(
            draws
        )
        scores = np.asarray(self._scores(flat, self.data))
        return flat[int(np.nanargmin(np.where(np.isfinite(scores), scores, np.inf)))]

    def map_estimate(self, start):
        """Minimise the negative log joint with L-BFGS on the unconstrained scale.

        Returns the optimum (flat unconstrained vector) and scipy's result.
        """

        objective = numpy_objective(self._value_and_grad, self.data)
        options = {"maxiter": LBFGS_ITERATIONS, "ftol": 1e-13, "gtol": 1e-8}
        result = lbfgs(objective, start, options)
        if not result.success:
            # L-BFGS crawls where curvatures span many orders (many configurations' alpha,
            # beta, gamma, each pinned by thousands of cells): Newton steps on the exact
            # Hessian, in a trust region, finish the job
            iterations = result.nit
            result = scipy.optimize.minimize(
                objective,
                result.x,
                jac=True,
                hess=self.hessian,
                method="trust-exact",
                options={"maxiter": 100, "gtol": 1e-8},
            )
            result.nit += iterations
        return jnp.asarray(result.x), result


def numpy_objective(value_and_grad, data) -> Callable:
    """``value_and_grad(x, data)`` (compiled JAX) as scipy minimises it: float64 numpy in
    and out, and an infinite value (an overshooting line search step) made huge and flat,
    so that the line search backtracks."""

    def objective(x):
        value, grad = value_and_grad(jnp.asarray(x), data)
        if not np.isfinite(value):
            return 1e300, np.zeros_like(x)
        return float(value), np.asarray(grad, dtype=np.float64)

    return objective


def lbfgs(objective, start, options: dict):
    """scipy's L-BFGS-B on ``objective`` (value and gradient) from ``start``."""
    start = np.asarray(start, dtype=np.float64)
    return scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B", options=options)


def _is_data(value) -> bool:
    """An array, or a pytree of arrays such as the outputs model's statistics."""
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(leaf, jax.Array) for leaf in leaves)


def target_acceptance(settings: FitSettings) -> float:
    """NUTS's target acceptance: ``settings.target_accept``, else 0.99 for the run-offset
    models (0.995 with partial pooling) and 0.9 otherwise.

    The offsets' posterior curves (each run's shift against the law's parameters); at 0.9
    the tiny presets' forecast fits had 11-37 divergent transitions, at 0.99 none, for about
    twice the time. Pooling training seeds adds the population's scales, which three seeds
    pin only loosely: at 0.99 the three-seed drift fits of tiny-regression and
    tiny-classification had 3 and 9 divergent transitions, at 0.995 none (and R-hat <= 1.01),
    in about the same time.
    """
    if settings.target_accept is not None:
        return settings.target_accept
    if not form_of(settings.model).offsets:
        return 0.9
    return 0.995 if settings.pooling == "partial" else 0.99


def nuts(target: Target, start, keys: Keys, settings: FitSettings, search=None) -> Draws:
    """NUTS (dense mass matrix, ``target_acceptance``), every chain started near the MAP.

    ``search``: the target whose MAP is found from ``start`` (the decentred form of
    ``target``), then carried into ``target``'s parameterization; None: ``target`` itself.

    ``settings.mass_matrix``: ``"adapted"`` learns the inverse mass matrix in NumPyro's
    warm-up windows, from the identity; ``"laplace"`` fixes it to the Laplace covariance
    (the inverse exact Hessian at the MAP) and adapts only the step size. The windows'
    first estimates come from 25 and 50 draws, too few for a dense matrix of many
    parameters (89 for 27 partially pooled configurations), and the draws in between then
    take hundreds of leapfrog steps each; the Laplace covariance of a posterior that
    thousands of cells make nearly normal is a good metric from the first draw.
    """
    if search is None or search is target:
        optimum, _ = target.map_estimate(start)
    else:
        optimum = target.unconstrain(search.point(search.map_estimate(start)[0]))
    noise = jax.random.normal(keys.engine, (settings.chains, optimum.size)) * 0.1
    init = jax.vmap(target.unravel)(optimum + noise)
    if settings.chains == 1:  # numpyro takes one chain's start without the chain axis
        init = jax.tree.map(lambda v: v[0], init)
    chain_method = "parallel" if jax.local_device_count() >= settings.chains else "sequential"
    metric = {}
    if settings.mass_matrix == "laplace":
        root = laplace_root(target.hessian(optimum))  # covariance = root @ root.T
        metric = {"inverse_mass_matrix": root @ root.T, "adapt_mass_matrix": False}
    accept = target_acceptance(settings)
    mcmc = MCMC(
        NUTS(target.model, dense_mass=True, target_accept_prob=accept, **metric),
        num_warmup=settings.warmup,
        num_samples=settings.draws,
        num_chains=settings.chains,
        chain_method=chain_method,
        progress_bar=settings.progress_bar,
        jit_model_args=True,
        # the latent sites only: the per-cell deterministic sites are computed afterwards,
        # in float32 chunks (rational_icl.fits.predictive), not kept in float64 per step
        postprocess_fn=target.constrain,
    )
    fields = ("diverging", "energy", "num_steps", "accept_prob", "adapt_state.step_size")
    # Warm-up, then sampling from its last state and key: the same draws as one run, but
    # with parallel chains XLA keeps a copy of the collected draws per iteration until the
    # loop ends (5.7 GB for 4 x 2000 iterations of 89 parameters), and the warm-up then
    # collects none
    mcmc.warmup(keys.draws, init_params=init, extra_fields=fields, **target.data)
    mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=fields, **target.data)
    latent = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    names = {
        "diverging": "diverging",
        "energy": "energy",
        "n_steps": "num_steps",
        "acceptance_rate": "accept_prob",
        "step_size": "adapt_state.step_size",
    }
    stats = xr.Dataset(
        {name: (SAMPLE_DIMS, np.asarray(extra[field])) for name, field in names.items()},
        attrs={
            "inference": "NUTS",
            "num_warmup": settings.warmup,
            "chain_method": chain_method,
            "mass_matrix": settings.mass_matrix,
            "target_accept_prob": accept,
        },
    )
    return Draws(latent, stats)


def map_laplace(target: Target, start, keys: Keys, settings: FitSettings) -> Draws:
    """MAP, then draws from the Laplace approximation on the unconstrained scale: a normal
    around the optimum whose precision is the exact Hessian of the negative log joint."""
    optimum, result = target.map_estimate(start)
    hessian = target.hessian(optimum)
    total = settings.chains * settings.draws
    noise = np.asarray(jax.random.normal(keys.draws, (total, optimum.size)))
    flat = np.asarray(optimum) + noise @ laplace_root(hessian).T  # (draws, size)
    flat[0] = optimum  # the first draw is the MAP itself
    stats = xr.Dataset(
        {
            "optimizer_success": ((), _converged(result, hessian)),
            "optimizer_iterations": ((), int(result.nit)),
            "optimizer_message": ((), str(result.message)),
            "map_log_density": ((), float(-result.fun)),
        },
        attrs={"inference": "MAP with Laplace approximation"},
    )
    return Draws(_by_chain(target.constrain_flat(flat), settings), stats)


def laplace_root(hessian) -> np.ndarray:
    """A square root R of the Laplace covariance, the inverse of ``hessian``: R @ R.T.

    A flat or non-convex direction gets unit variance rather than an infinite one.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(hessian)
    scale = np.where(eigenvalues > 1e-8, 1.0 / np.sqrt(np.abs(eigenvalues)), 1.0)
    return eigenvectors * scale


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


def svi(target: Target, start, keys: Keys, settings: FitSettings) -> Draws:
    """SVI with a multivariate normal guide (on the unconstrained scale) from ``start``."""
    start = target.constrain(target.unravel(start))
    guide = AutoMultivariateNormal(
        target.model, init_loc_fn=numpyro.infer.init_to_value(values=start)
    )
    optimiser = SVI(target.model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    result = optimiser.run(
        keys.engine, settings.svi_steps, progress_bar=settings.progress_bar, **target.data
    )
    draws = guide.sample_posterior(
        keys.draws, result.params, sample_shape=(settings.chains * settings.draws,)
    )
    stats = xr.Dataset(
        {"elbo_loss": (("svi_step",), np.asarray(result.losses))},
        attrs={"inference": "SVI, AutoMultivariateNormal guide, Adam(0.01)"},
    )
    return Draws(_by_chain({k: draws[k] for k in target.transforms}, settings), stats)


def _by_chain(flat: dict, settings: FitSettings) -> dict:
    """(chains * draws, ...) arrays as (chain, draw, ...) numpy arrays."""
    return {
        name: np.asarray(value).reshape(settings.chains, settings.draws, *value.shape[1:])
        for name, value in flat.items()
    }


ENGINES: dict[str, Callable[..., Draws]] = {"nuts": nuts, "map": map_laplace, "svi": svi}

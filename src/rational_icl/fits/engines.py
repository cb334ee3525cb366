"""The inference engines: NUTS, MAP with a Laplace approximation, and SVI.

Each takes a model with its data and returns the posterior draws of the latent sites
(chain, draw, ...) and the engine's own statistics (an ``xarray.Dataset``).
"""

from __future__ import annotations

import functools

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
from numpyro.infer.util import log_density

from rational_icl.fits.inputs import SAMPLE_DIMS, FitSettings


def _is_data(value) -> bool:
    """An array, or a pytree of arrays such as the outputs model's statistics."""
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(leaf, jax.Array) for leaf in leaves)


class Problem:
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


def nuts(problem: Problem, start, key, settings: FitSettings):
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


def map_laplace(problem: Problem, start, key, settings: FitSettings):
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


def svi(problem: Problem, start, key, settings: FitSettings):
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

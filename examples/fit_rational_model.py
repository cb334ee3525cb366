"""A researcher's own NumPyro fit of the rational model, without the ``ricl fit`` command.

The model functions of ``rational_icl.fits.model`` are plain NumPyro programs: import them,
feed them arrays, run any NumPyro inference, and change what you need. Here:

1. the packaged relative-distance model, run with NUTS on a behaviour dataset;
2. a variant written in a few lines: the same rational weights (``log_posterior``) with a
   different observation model (a Beta likelihood on weights pulled inside (0, 1)).

Usage::

    python examples/fit_rational_model.py RUNS_DIR     # a folder of trained run files
    python examples/fit_rational_model.py              # a small simulated behaviour dataset
"""

from __future__ import annotations

import sys

import arviz_base
import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

from rational_icl.pipeline import configure_jax

configure_jax(2)  # before JAX starts: float64, one CPU device per chain

from rational_icl.fits import model as rational  # noqa: E402
from rational_icl.fits.parameters import rational_parameters  # noqa: E402


def load_arrays(folder: str | None):
    """Model-layout arrays: loss, complexity (Q, C=1, D); steps (N,); weights (1, D, N, S)."""
    if folder is not None:
        from rational_icl.fits.behaviour import load_behaviour

        behaviour = load_behaviour(folder)
        strategies = ["memorizing", "generalizing"]
        loss = behaviour.strategy_loss.sel(strategy=strategies).transpose("strategy", "num_tasks")
        complexity = behaviour.strategy_complexity.sel(strategy=strategies)
        complexity = complexity.transpose("strategy", "num_tasks")
        observed = behaviour.relative_distance.transpose("num_tasks", "checkpoint", "split")
        return (
            loss.values[:, None],
            complexity.values[:, None],
            behaviour.checkpoint.values.astype(float),
            observed.values[None],
        )
    # Simulate from the model itself with alpha = 0.5, beta = 0.3, gamma = 3.
    num_tasks = 2.0 ** np.arange(1, 10)
    loss = np.stack([0.2 - 0.15 * (2 / num_tasks) ** 0.8, np.full_like(num_tasks, 0.2)])[:, None]
    complexity = np.stack([1500 + 512 * num_tasks, np.full_like(num_tasks, 1200.0)])[:, None]
    steps = np.geomspace(20, 1e5, 25).round()
    truth = {"alpha": 0.5, "beta": 0.3, "gamma": 3.0, "sigma": np.array([0.05, 0.05])}
    simulate = numpyro.handlers.seed(
        numpyro.handlers.condition(rational.relative_distance_model, data=truth), 0
    )
    trace = numpyro.handlers.trace(simulate).get_trace(loss, complexity, steps, num_splits=2)
    return loss, complexity, steps, np.asarray(trace["observed_weight"]["value"])


def beta_weight_model(strategy_loss, strategy_complexity, checkpoint, observed=None):
    """Variant: the rational weights with a Beta likelihood (weights squeezed into (0, 1))."""
    alpha, beta, gamma = rational_parameters()  # the documented priors
    log_post = rational.log_posterior(
        strategy_loss, strategy_complexity, checkpoint, alpha, beta, gamma
    )
    weight = jax.nn.softmax(log_post, axis=0)[0]  # (C, D, N)
    numpyro.deterministic("weight_memorizing", weight)
    precision = numpyro.sample("precision", dist.LogNormal(jnp.log(50.0), 1.0))
    mean = jnp.clip(weight, 1e-3, 1 - 1e-3)[..., None]  # (C, D, N, 1) against splits
    if observed is not None:
        observed = jnp.clip(observed, 1e-3, 1 - 1e-3)
    numpyro.sample(
        "observed_weight",
        dist.Beta(mean * precision, (1 - mean) * precision).expand([*weight.shape, 2]),
        obs=observed,
    )


def run(model, arrays, seed: int, start: dict | None = None):
    loss, complexity, steps, observed = arrays
    init = numpyro.infer.init_to_value(values=start) if start else numpyro.infer.init_to_median
    kernel = NUTS(model, dense_mass=True, init_strategy=init)
    mcmc = MCMC(kernel, num_warmup=500, num_samples=500, num_chains=2, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), loss, complexity, steps, observed)
    tree = arviz_base.from_numpyro(mcmc)
    print(arviz_stats.summary(tree, var_names=["alpha", "beta", "gamma"]))
    return tree


if __name__ == "__main__":
    arrays = load_arrays(sys.argv[1] if len(sys.argv) > 1 else None)
    print("relative-distance model (censored normal):")
    first = run(rational.relative_distance_model, arrays, seed=0)
    print("variant with a Beta likelihood, started at the first fit's posterior medians:")
    start = {n: float(first.posterior[n].median()) for n in ("alpha", "beta", "gamma")}
    run(beta_weight_model, arrays, seed=1, start=start)

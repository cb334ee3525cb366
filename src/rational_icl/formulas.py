"""The formulas every stage must agree on, each in one place (docs/science.md).

The rational model (Wurgaft et al. 2025), for strategy Q after N training steps:

    log prior(Q)      = -ln2 * K_Q ** beta          (linear-complexity ablation: -ln2 * beta * K_Q)
    log likelihood(Q) = -gamma * N ** (1 - alpha) * L_Q
    eta = log w_M - log w_G = log prior odds + gamma * N ** (1 - alpha) * (L_G - L_M)

The functions use arithmetic operators only, so the same code runs on numpy arrays, JAX
arrays (inside the NumPyro model) and xarray objects (in the figures); broadcasting is the
caller's. Also here: the regression noise default and the checkpoint schedule, which the
data, training and fits stages each need.
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)

# Where a run records its first checkpoint (training step).
FIRST_CHECKPOINT = 20
# The largest training step: checkpoint_steps spaces steps in float64, exact to 2^53 (at
# 2^63 - 1 the schedule wrapped to negative steps).
MAX_STEPS = 2**53


def log_prior(complexity, beta, linear_complexity: bool = False):
    """-ln2 * K ** beta: the log prior of a strategy of complexity K bits (unnormalised)."""
    if linear_complexity:
        return -LN2 * beta * complexity
    return -LN2 * _power(complexity, beta)


def _power(base, exponent):
    """``base ** exponent``. On JAX arrays it is computed as exp(exponent * log(base)), the
    form the NumPyro model has always used: the value differs from JAX's ``**`` in the last
    bit, and NUTS amplifies such bits, so this keeps fits identical to earlier versions."""
    for x in (base, exponent):
        namespace = getattr(x, "__array_namespace__", None)
        if namespace is not None and namespace().__name__.startswith("jax"):
            xp = namespace()
            return xp.exp(exponent * xp.log(base))
    return base**exponent


def evidence(num_steps, alpha, gamma):
    """gamma * N ** (1 - alpha): the evidence one nat of loss is worth after N steps."""
    return gamma * num_steps ** (1 - alpha)


def log_posterior(num_steps, loss, complexity, alpha, beta, gamma, linear_complexity=False):
    """Unnormalised log posterior of a strategy: log prior - evidence * L."""
    return log_prior(complexity, beta, linear_complexity) - evidence(num_steps, alpha, gamma) * loss


def log_bayes_factor(num_steps, loss_memorizing, loss_generalizing, alpha, gamma):
    """gamma * N ** (1 - alpha) * (L_G - L_M): the evidence for M over G."""
    return evidence(num_steps, alpha, gamma) * (loss_generalizing - loss_memorizing)


def transition_step(
    loss_memorizing,
    loss_generalizing,
    complexity_memorizing,
    complexity_generalizing,
    alpha,
    beta,
    gamma,
    linear_complexity: bool = False,
):
    """N*(D) = [ln2 (K_M^beta - K_G^beta) / (gamma (L_G - L_M))] ** (1 / (1 - alpha)).

    The step where the posterior odds of M over G cross zero; NaN where M is not both more
    complex and better, so that no switch to it happens. Arrays: numpy or xarray.
    """
    penalty = _prior_penalty(
        complexity_memorizing, complexity_generalizing, beta, linear_complexity
    )
    ratio = penalty / (gamma * (loss_generalizing - loss_memorizing))
    positive = (
        ratio.where(ratio > 0) if hasattr(ratio, "dims") else np.where(ratio > 0, ratio, np.nan)
    )
    return positive ** (1 / (1 - alpha))


def _prior_penalty(complexity_memorizing, complexity_generalizing, beta, linear_complexity):
    """ln2 (K_M^beta - K_G^beta): the log prior odds against M."""
    return log_prior(complexity_generalizing, beta, linear_complexity) - log_prior(
        complexity_memorizing, beta, linear_complexity
    )


def default_noise_variance(num_dims: int) -> float:
    """Regression observation-noise variance when a spec does not set one: sigma^2 = d / 256."""
    return num_dims / 256


def run_noise_variance(runs):
    """The noise variance of regression runs (an xarray Dataset): its ``noise_variance``
    attribute, else the default of its ``num_dims`` (a coordinate where a grid varies it,
    so the result is then a DataArray over num_dims)."""
    if runs.attrs.get("noise_variance") is not None:
        return float(runs.attrs["noise_variance"])
    num_dims = runs["num_dims"] if "num_dims" in runs.coords else runs.attrs["num_dims"]
    return default_noise_variance(num_dims)


def checkpoint_steps(max_steps: int, num_checkpoints: int, first: int = FIRST_CHECKPOINT):
    """About ``num_checkpoints`` steps spaced evenly in sqrt(step) from ``first`` to
    ``max_steps``, always including ``max_steps``. Returns sorted unique int64 steps."""
    if max_steps < 1 or num_checkpoints < 1:
        raise ValueError(
            f"need max_steps >= 1 and num_checkpoints >= 1, got {max_steps}, {num_checkpoints}"
        )
    if max_steps <= first or num_checkpoints == 1:
        return np.array([max_steps], dtype=np.int64)
    roots = np.linspace(math.sqrt(first), math.sqrt(max_steps), num_checkpoints)
    steps = np.unique(np.round(roots**2).astype(np.int64))
    steps[-1] = max_steps  # guard against rounding
    return np.unique(steps)

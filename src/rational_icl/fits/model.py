"""The rational model of in-context-learning strategies as plain NumPyro functions.

Training is read as Bayesian updating over strategies Q (DESIGN.md). After N training steps
with D tasks::

    log prior(Q)      = -ln 2 * K_Q(D) ** beta        # K_Q: complexity in bits
    log likelihood(Q) = -gamma * N ** (1 - alpha) * L_Q(D)
    w_Q               = softmax over Q of (log prior + log likelihood)

Every function here is public and can be used in a researcher's own NumPyro script (see
``examples/fit_rational_model.py``). Array conventions, with a leading configuration axis C
(C = 1 for a single model configuration):

- ``strategy_loss``, ``strategy_complexity``: (Q, C, D), nats and bits, strategies in the
  order memorizing, generalizing[, constant];
- ``checkpoint``: (N,) training steps;
- ``relative_distance``: (C, D, N, S) observed weight on memorizing per split S;
- ``strategy_prediction``: (Q, C, D, S, B, P, O) and ``transformer_prediction``:
  (C, D, N, S, B, P, O) for the ``outputs`` observation model (B sequences, P positions,
  O outcomes).

Priors (weakly informative, in the maths' units; NUTS works on the unconstrained logit/log
scale that NumPyro derives from each prior's support, which is what keeps the sampler happy
when K is thousands of bits and N thousands of steps):

- ``alpha`` ~ LogitNormal(0, 1.5): sublinear sample efficiency in (0, 1), roughly flat;
- ``beta`` ~ LogNormal(log 0.5, 1): complexity exponent, 95% in (0.07, 3.6);
  under the ``linear-complexity`` ablation beta is a per-bit price, LogNormal(log 1e-3, 3);
- ``gamma`` ~ LogNormal(0, 3): evidence scale, 95% in (0.003, 360);
- ``sigma`` ~ HalfNormal(0.2) per split: noise of the observed weight;
- ``concentration`` ~ LogNormal(log 100, 2): Dirichlet concentration (``outputs``,
  probabilities); ``output_sigma`` ~ HalfNormal(1) (``outputs``, regression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints
from numpyro.distributions.transforms import SigmoidTransform

STRATEGIES = ("memorizing", "generalizing", "constant")
ABLATIONS = ("none", "linear-likelihood", "fixed-complexity", "unit-gamma", "linear-complexity")
POOLINGS = ("complete", "none", "partial")
OUTCOME_KINDS = ("probabilities", "regression")
LN2 = math.log(2.0)
_PROBABILITY_FLOOR = 1e-6  # transformer probabilities below this are floored for the Dirichlet


@dataclass(frozen=True)
class Priors:
    """Locations and scales of the weakly-informative priors (see the module docstring)."""

    alpha_logit_loc: float = 0.0
    alpha_logit_scale: float = 1.5
    beta_log_loc: float = math.log(0.5)
    beta_log_scale: float = 1.0
    linear_beta_log_loc: float = math.log(1e-3)
    linear_beta_log_scale: float = 3.0
    gamma_log_loc: float = 0.0
    gamma_log_scale: float = 3.0
    sigma_scale: float = 0.2
    concentration_log_loc: float = math.log(100.0)
    concentration_log_scale: float = 2.0
    output_sigma_scale: float = 1.0
    population_scale: float = 0.5  # half-normal scale of the between-configuration spread


class ClippedNormal(dist.Distribution):
    """``clip(Normal(loc, scale), 0, 1)``: a normal censored to the unit interval.

    The observed weight on memorizing is (r + 1)/2 with r clipped to [-1, 1], so exact 0s
    and 1s happen; a censored normal gives them the probability mass of the clipped tails,
    and the normal density inside (0, 1).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    reparametrized_params = ["loc", "scale"]

    def __init__(self, loc, scale, *, validate_args=None):
        self.loc, self.scale = dist.util.promote_shapes(loc, scale)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        noise = jax.random.normal(key, sample_shape + self.batch_shape)
        return jnp.clip(self.loc + self.scale * noise, 0.0, 1.0)

    def log_prob(self, value):
        z = (value - self.loc) / self.scale
        inside = -0.5 * z**2 - jnp.log(self.scale) - 0.5 * math.log(2 * math.pi)
        below = log_ndtr(-self.loc / self.scale)  # P(loc + noise <= 0)
        above = log_ndtr((self.loc - 1.0) / self.scale)  # P(loc + noise >= 1)
        return jnp.where(value <= 0.0, below, jnp.where(value >= 1.0, above, inside))

    @property
    def mean(self):  # not needed for fitting; the unclipped mean is a fair summary
        return self.loc


def log_posterior(
    strategy_loss,
    strategy_complexity,
    num_steps,
    alpha,
    beta,
    gamma,
    *,
    linear_complexity: bool = False,
):
    """Unnormalised log posterior of each strategy after ``num_steps`` training steps.

    Parameters
    ----------
    strategy_loss, strategy_complexity : array (Q, C, D)
        L_Q in nats per prediction and K_Q in bits.
    num_steps : array (N,)
        Training steps N (the checkpoints).
    alpha, beta, gamma : scalar or array (C,)
        Parameters, one value or one per configuration.
    linear_complexity : bool
        Price complexity as ``beta * K`` instead of ``K ** beta`` (an ablation).

    Returns
    -------
    array (Q, C, D, N)
        ``-ln2 * K_Q ** beta - gamma * N ** (1 - alpha) * L_Q``.
    """
    beta = _per_configuration(beta, trailing=1)  # against (Q, C, D)
    alpha, gamma = (_per_configuration(p, trailing=2) for p in (alpha, gamma))  # (Q, C, D, N)
    if linear_complexity:
        log_prior = -LN2 * beta * strategy_complexity
    else:
        log_prior = -LN2 * jnp.exp(beta * jnp.log(strategy_complexity))
    evidence = gamma * jnp.power(num_steps, 1.0 - alpha)  # (C, 1, N)
    return log_prior[..., None] - evidence * strategy_loss[..., None]


def context_evidence(context_loss, context_size, alpha, gamma):
    """Evidence from the context: ``-gamma * t ** (1 - alpha) * mean loss over first t``.

    Parameters
    ----------
    context_loss : array (Q, C, D, S, ..., P)
        Mean loss of each strategy over the first t observations of the context (0 at t = 0).
    context_size : array (P,)
        t, the number of observations before each prediction.
    alpha, gamma : scalar or array (C,)

    Returns
    -------
    array shaped like ``context_loss``
    """
    trailing = context_loss.ndim - 2  # axes after C
    alpha = _per_configuration(alpha, trailing=trailing)
    gamma = _per_configuration(gamma, trailing=trailing)
    return -gamma * jnp.power(context_size, 1.0 - alpha) * context_loss


def rational_parameters(
    *,
    ablation: str = "none",
    pooling: str = "complete",
    num_configurations: int = 1,
    priors: Priors = Priors(),
):
    """Sample sites ``alpha``, ``beta``, ``gamma`` (deterministic where an ablation fixes one).

    ``pooling="complete"`` gives scalars; ``"none"`` independent values per configuration;
    ``"partial"`` per-configuration values drawn from a population (non-centred: on the
    logit/log scale, ``loc + scale * offset`` with ``offset ~ Normal(0, 1)``), with sites
    ``alpha_loc``, ``alpha_scale``, ``alpha_offset`` and the like.
    """
    _check_choice("ablation", ablation, ABLATIONS)
    _check_choice("pooling", pooling, POOLINGS)
    shape = () if pooling == "complete" else (num_configurations,)
    if ablation == "linear-complexity":
        beta_prior = (priors.linear_beta_log_loc, priors.linear_beta_log_scale)
    else:
        beta_prior = (priors.beta_log_loc, priors.beta_log_scale)
    specs = {
        "alpha": ((priors.alpha_logit_loc, priors.alpha_logit_scale), jax.nn.sigmoid, 0.0),
        "beta": (beta_prior, jnp.exp, 1.0),
        "gamma": ((priors.gamma_log_loc, priors.gamma_log_scale), jnp.exp, 1.0),
    }
    fixed_name = {"linear-likelihood": "alpha", "fixed-complexity": "beta", "unit-gamma": "gamma"}
    values = []
    for name, ((loc, scale), link, fixed) in specs.items():
        if fixed_name.get(ablation) == name:
            values.append(numpyro.deterministic(name, jnp.full(shape, fixed)))
        elif pooling == "partial":
            values.append(_population_site(name, loc, scale, link, num_configurations, priors))
        else:
            prior = dist.Normal(loc, scale)
            prior = (
                dist.TransformedDistribution(prior, SigmoidTransform())
                if name == "alpha"
                else dist.LogNormal(loc, scale)
            )
            if shape:
                prior = prior.expand(shape).to_event(1)
            values.append(numpyro.sample(name, prior))
    return tuple(values)


def relative_distance_model(
    strategy_loss,
    strategy_complexity,
    checkpoint,
    relative_distance=None,
    *,
    num_splits: int = 2,
    fit_mask=None,
    context_loss=None,
    context_size=None,
    ablation: str = "none",
    pooling: str = "complete",
    priors: Priors = Priors(),
):
    """The rational model observed through the relative distance (the default model).

    The observed weight on memorizing of every cell (configuration, num_tasks, checkpoint,
    split) is ``ClippedNormal(w_M, sigma[split])``: a normal around the predicted weight,
    censored to [0, 1] as the observed weight itself is clipped. With ``context_loss`` the
    weights also accumulate evidence along the context (``context_evidence``) and the
    prediction for a cell is the mean of ``w_M`` over positions.

    Parameters
    ----------
    strategy_loss, strategy_complexity : array (Q, C, D)
    checkpoint : array (N,)
    relative_distance : array (C, D, N, S) or None
        Observed weights; None simulates them.
    num_splits : int
        S, used when simulating without a ``fit_mask`` (which gives S otherwise).
    fit_mask : bool array (C, D, N, S) or None
        Cells that enter the likelihood (the rest are held out); None fits every cell.
    context_loss : array (Q, C, D, S, P) or None
    context_size : array (P,) or None
    ablation, pooling, priors
        See ``rational_parameters``.

    Sites
    -----
    ``alpha``, ``beta``, ``gamma``, ``sigma`` (S,), deterministic ``weight_memorizing`` and
    ``log_posterior_odds`` (C, D, N), ``expected_relative_distance`` (C, D, N, S) when
    context-dependent, observed ``relative_distance`` (C, D, N, S).
    """
    log_post, alpha, gamma = _training_log_posterior(
        strategy_loss, strategy_complexity, checkpoint, ablation, pooling, priors
    )
    if relative_distance is not None:
        num_splits = relative_distance.shape[-1]
    elif fit_mask is not None:  # simulating the cells of a real grid (e.g. a prior draw)
        num_splits = fit_mask.shape[-1]
    if context_loss is None:
        weight_memorizing = jax.nn.softmax(log_post, axis=0)[0]  # (C, D, N)
        expected = jnp.broadcast_to(
            weight_memorizing[..., None], (*weight_memorizing.shape, num_splits)
        )
    else:
        log_w = (
            log_post[..., None, None]
            + context_evidence(context_loss, context_size, alpha, gamma)[:, :, :, None]
        )  # (Q, C, D, N, S, P)
        expected = jax.nn.softmax(log_w, axis=0)[0].mean(-1)  # (C, D, N, S)
        expected = numpyro.deterministic("expected_relative_distance", expected)
    sigma = numpyro.sample(
        "sigma", dist.HalfNormal(priors.sigma_scale).expand([num_splits]).to_event(1)
    )
    _observe(
        "relative_distance", ClippedNormal(expected, sigma), relative_distance, fit_mask, fill=0.5
    )


def outputs_model(
    strategy_loss,
    strategy_complexity,
    checkpoint,
    strategy_prediction,
    transformer_prediction=None,
    *,
    outcome_kind: str = "probabilities",
    fit_mask=None,
    context_loss=None,
    context_size=None,
    ablation: str = "none",
    pooling: str = "complete",
    priors: Priors = Priors(),
):
    """The rational model observed through the transformer's own predictions.

    Each prediction (sequence, position) is distributed around the mixture
    ``h = sum_Q w_Q * Q(x)`` of the strategies' predictions: for probabilities
    ``Dirichlet(concentration * h)`` (the transformer's probabilities are floored at 1e-6 and
    renormalised), for regression ``Normal(h, output_sigma)``.

    Parameters
    ----------
    strategy_loss, strategy_complexity : array (Q, C, D)
    checkpoint : array (N,)
    strategy_prediction : array (Q, C, D, S, B, P, O)
    transformer_prediction : array (C, D, N, S, B, P, O) or None
        None simulates it.
    outcome_kind : "probabilities" or "regression"
    fit_mask : bool array (C, D, N, S) or None
        Cells that enter the likelihood.
    context_loss : array (Q, C, D, S, B, P) or None
        Per-sequence mean loss over the first t observations: context-dependent weights.
    context_size : array (P,) or None

    Sites
    -----
    ``alpha``, ``beta``, ``gamma``, ``concentration`` or ``output_sigma``, deterministic
    ``weight_memorizing`` and ``log_posterior_odds`` (C, D, N), observed
    ``transformer_prediction`` (C, D, N, S, B, P, O).
    """
    _check_choice("outcome_kind", outcome_kind, OUTCOME_KINDS)
    log_post, alpha, gamma = _training_log_posterior(
        strategy_loss, strategy_complexity, checkpoint, ablation, pooling, priors
    )
    dtype = strategy_prediction.dtype
    if context_loss is None:
        # (Q, C, D, N, 1, 1, 1, 1) x (Q, C, D, 1, S, B, P, O), summed over Q
        weights = jax.nn.softmax(log_post, axis=0).astype(dtype)[..., None, None, None, None]
    else:
        log_w = (
            log_post[..., None, None, None]
            + context_evidence(context_loss, context_size, alpha, gamma)[:, :, :, None]
        )  # (Q, C, D, N, S, B, P)
        weights = jax.nn.softmax(log_w, axis=0).astype(dtype)[..., None]
    mixture = jnp.sum(weights * strategy_prediction[:, :, :, None], axis=0)
    if outcome_kind == "probabilities":
        concentration = numpyro.sample(
            "concentration",
            dist.LogNormal(priors.concentration_log_loc, priors.concentration_log_scale),
        )
        mixture = jnp.clip(mixture, _PROBABILITY_FLOOR, None)
        observed = transformer_prediction
        if observed is not None:
            observed = jnp.clip(observed, _PROBABILITY_FLOOR, None)
            observed = observed / observed.sum(-1, keepdims=True)
        likelihood = dist.Dirichlet(concentration.astype(dtype) * mixture)
    else:
        output_sigma = numpyro.sample("output_sigma", dist.HalfNormal(priors.output_sigma_scale))
        likelihood = dist.Normal(mixture, output_sigma.astype(dtype)).to_event(1)
        observed = transformer_prediction
    likelihood = likelihood.to_event(2)  # sequences and positions belong to one cell
    _observe("transformer_prediction", likelihood, observed, fit_mask, fill=None)


# ---------------------------------------------------------------------------------------
# private helpers


def _training_log_posterior(
    strategy_loss, strategy_complexity, checkpoint, ablation, pooling, priors
):
    """Sample the parameters, record ``weight_memorizing`` and ``log_posterior_odds``.

    Returns the log posterior (Q, C, D, N) and alpha, gamma for the context evidence.
    """
    alpha, beta, gamma = rational_parameters(
        ablation=ablation,
        pooling=pooling,
        num_configurations=strategy_loss.shape[1],
        priors=priors,
    )
    log_post = log_posterior(
        strategy_loss,
        strategy_complexity,
        checkpoint,
        alpha,
        beta,
        gamma,
        linear_complexity=ablation == "linear-complexity",
    )
    numpyro.deterministic("weight_memorizing", jax.nn.softmax(log_post, axis=0)[0])
    numpyro.deterministic("log_posterior_odds", log_post[0] - log_post[1])
    return log_post, alpha, gamma


def _population_site(name, loc, scale, link, num_configurations, priors):
    """Non-centred hierarchical parameter on the logit (alpha) or log (beta, gamma) scale."""
    population_loc = numpyro.sample(f"{name}_loc", dist.Normal(loc, scale))
    population_scale = numpyro.sample(f"{name}_scale", dist.HalfNormal(priors.population_scale))
    offset = numpyro.sample(
        f"{name}_offset", dist.Normal(0.0, 1.0).expand([num_configurations]).to_event(1)
    )
    return numpyro.deterministic(name, link(population_loc + population_scale * offset))


def _per_configuration(parameter, *, trailing: int):
    """Shape a scalar or (C,) parameter to broadcast against (..., C, <trailing axes>)."""
    parameter = jnp.asarray(parameter)
    if parameter.ndim == 0:
        return parameter
    return parameter.reshape(parameter.shape + (1,) * trailing)


def _observe(name, likelihood, observed, fit_mask, *, fill):
    """Observe the cells of ``fit_mask`` (all when None); simulate every cell when unobserved."""
    if observed is not None and fit_mask is not None and fill is not None:
        observed = jnp.where(fit_mask, observed, fill)  # keep held-out NaNs out of gradients
    if fit_mask is None:
        return numpyro.sample(name, likelihood, obs=observed)
    with numpyro.handlers.mask(mask=fit_mask):
        return numpyro.sample(name, likelihood, obs=observed)


def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

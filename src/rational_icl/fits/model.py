"""The rational model of in-context-learning strategies as plain NumPyro functions.

Training is read as Bayesian updating over strategies Q (docs/science.md). After N training steps
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
  O outcomes). To fit it, reduce them once to per-cell sums (``dirichlet_statistics``,
  ``normal_statistics``) and pass those as ``statistics``: a fit then never revisits the
  B x P x O predictions of each of the C x D x N x S cells.

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

import contextlib
import functools
import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints
from numpyro.distributions.transforms import SigmoidTransform

from rational_icl import formulas

STRATEGIES = ("memorizing", "generalizing", "constant")
ABLATIONS = ("none", "linear-likelihood", "fixed-complexity", "unit-gamma", "linear-complexity")
POOLINGS = ("complete", "none", "partial")
OUTCOME_KINDS = ("probabilities", "regression")
_SHIFT = 6  # recurrence steps before the asymptotic series of log_gamma, polygamma
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66)  # B_2, B_4, ... B_10
_PROBABILITY_FLOOR = 1e-6  # probabilities below this are floored for the Dirichlet


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
    log_prior = formulas.log_prior(strategy_complexity, beta, linear_complexity)  # (Q, C, D)
    evidence = formulas.evidence(jnp.asarray(num_steps), alpha, gamma)  # (C, 1, N)
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
    return -formulas.evidence(jnp.asarray(context_size), alpha, gamma) * context_loss


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


class DirichletStatistics(NamedTuple):
    """Data-only sums of the Dirichlet ``outputs`` likelihood per cell (``dirichlet_statistics``).

    For one prediction with observed probabilities y and mixture h = sum_Q w_Q * Q(x),
    ``log Dirichlet(y | kappa * h) = lgamma(kappa) - sum_o lgamma(kappa * h_o)
    + sum_o (kappa * h_o - 1) * log y_o``. Summed over the sequences and positions of a
    cell, the last term is linear in the cell's weights w and needs only
    ``strategy_log_observed`` and ``log_observed``; the normaliser ``sum lgamma(kappa * h)``
    needs only the strategies' predictions, which have no checkpoint axis, and is summed over
    quadrature nodes (``node_*``) instead of every prediction.
    """

    num_predictions: jax.Array  # (): B * P predictions per cell
    log_observed: jax.Array  # (C, D, N, S): sum of log y over sequences, positions, outcomes
    strategy_log_observed: jax.Array  # (Q, C, D, N, S): sum of Q_o(x) * log y_o
    node_count: jax.Array  # (C, D, S, K): predictions (b, p, o) of each node
    node_mean: jax.Array  # (Q, C, D, S, K): mean of Q_o(x) over a node's predictions
    node_moments: tuple  # (Q^r, C, D, S, K) central moments, r = 2, 3, ...; () when exact


class NormalStatistics(NamedTuple):
    """Data-only sums of the Normal ``outputs`` likelihood per cell (``normal_statistics``).

    ``sum (y - h)^2 = sum y^2 - 2 * sum_Q w_Q * sum Q(x) y + sum_QR w_Q w_R * sum Q(x) R(x)``
    over the sequences, positions and outcomes of a cell: exact.
    """

    num_values: jax.Array  # (): B * P * O values per cell
    squared_observed: jax.Array  # (C, D, N, S): sum of y^2
    strategy_observed: jax.Array  # (Q, C, D, N, S): sum of Q(x) * y
    strategy_cross: jax.Array  # (Q, Q, C, D, S): sum of Q(x) * R(x)


def dirichlet_statistics(
    strategy_prediction, transformer_prediction, *, bin_width=0.25, order: int = 4
):
    """Sufficient statistics of the Dirichlet ``outputs`` likelihood, computed once.

    The normaliser ``sum over (b, p, o) of lgamma(kappa * h_o)`` is the only part of the
    log density that is not linear in the weights. It is approximated on quadrature nodes:
    the predictions of a (configuration, num_tasks, split) are grouped into boxes of side
    ``bin_width`` in (log M_o(x), log G_o(x)[, log C_o(x)]), and each box of n predictions
    contributes the Taylor expansion of their lgamma around the box mean hbar = w' mean,
    ``n * [lgamma(kappa hbar) + sum_{r=2..order} kappa^r psi^(r-2)(kappa hbar) / r! * m_r(w)]``,
    with m_r(w) the box's r-th central moment of h, a polynomial in w whose coefficients
    (the strategies' joint central moments) are stored. The first-order term vanishes; with
    ``order=4`` the error is of sixth order in the box side (relative differences within a
    box are below ``bin_width``). Tested against the exact sum in float64: for 64 x 128 x 8
    random predictions per group, some 1000 nodes in place of 65536 change the log
    likelihood by a relative 1e-7 and move its optimum by ~1e-7, far inside the posterior.
    ``bin_width=None`` makes every prediction its own node: exact, and as slow as the
    plain likelihood.

    Parameters
    ----------
    strategy_prediction : array (Q, C, D, S, B, P, O)
    transformer_prediction : array (C, D, N, S, B, P, O)
        Both are floored at 1e-6 and renormalised, as in ``outputs_model``.
    bin_width : float or None
        Side of the quadrature boxes in natural-log units.
    order : int
        Highest central moment of the expansion (at least 2).

    Returns
    -------
    DirichletStatistics
    """
    if order < 2:
        raise ValueError(f"order must be at least 2; got {order}")
    strategy = np.asarray(strategy_prediction, dtype=np.float64)
    # a configuration absent from the grid (NaN) gets uniform nodes; its cells are not fitted
    strategy = _floored(np.where(np.isfinite(strategy), strategy, 1.0))
    sums = _dirichlet_sums(jnp.asarray(strategy), jnp.asarray(transformer_prediction))
    log_observed, strategy_log_observed = sums
    q, c, d, s, b, p, o = strategy.shape
    elements = strategy.reshape(q, c * d * s, b * p * o)
    if bin_width is None:
        count, mean, moments = np.ones(elements.shape[1:]), elements, ()
    else:
        count, mean, moments = _quadrature_nodes(elements, bin_width, order)
    return DirichletStatistics(
        num_predictions=jnp.asarray(float(b * p)),
        log_observed=log_observed,
        strategy_log_observed=strategy_log_observed,
        node_count=jnp.asarray(count.reshape(c, d, s, -1)),
        node_mean=jnp.asarray(mean.reshape(q, c, d, s, -1)),
        node_moments=tuple(jnp.asarray(m.reshape(-1, c, d, s, count.shape[-1])) for m in moments),
    )


def normal_statistics(strategy_prediction, transformer_prediction):
    """Sufficient statistics of the Normal ``outputs`` likelihood (exact), computed once.

    Parameters
    ----------
    strategy_prediction : array (Q, C, D, S, B, P, O)
    transformer_prediction : array (C, D, N, S, B, P, O)

    Returns
    -------
    NormalStatistics
    """
    strategy = jnp.nan_to_num(jnp.asarray(strategy_prediction, dtype=jnp.float64))
    squared, cross_observed = _normal_sums(strategy, jnp.asarray(transformer_prediction))
    b, p, o = strategy.shape[-3:]
    return NormalStatistics(
        num_values=jnp.asarray(float(b * p * o)),
        squared_observed=squared,
        strategy_observed=cross_observed,
        strategy_cross=jnp.einsum("qcdsbpo,rcdsbpo->qrcds", strategy, strategy),
    )


def outputs_log_likelihood(weights, scale, statistics):
    """Log likelihood of every cell's predictions from its sufficient statistics.

    Parameters
    ----------
    weights : array (Q, C, D, N) or (Q, C, D, N, S)
        w_Q of every cell.
    scale : scalar
        ``concentration`` (Dirichlet) or ``output_sigma`` (Normal).
    statistics : DirichletStatistics or NormalStatistics

    Returns
    -------
    array (C, D, N, S)
        Summed over the sequences and positions (and outcomes) of each cell.
    """
    if weights.ndim == 4:
        weights = weights[..., None]  # the same weights for every split
    if isinstance(statistics, NormalStatistics):
        linear = jnp.sum(weights * statistics.strategy_observed, axis=0)
        pairs = weights[:, None] * weights[None, :]  # (Q, Q, C, D, N, S)
        quadratic = jnp.sum(pairs * statistics.strategy_cross[:, :, :, :, None], axis=(0, 1))
        squares = statistics.squared_observed - 2.0 * linear + quadratic
        return -0.5 * statistics.num_values * jnp.log(2 * math.pi * scale**2) - squares / (
            2.0 * scale**2
        )
    kappa = scale
    weights = jnp.broadcast_to(weights, statistics.strategy_log_observed.shape)
    # batched matrix products over (C, D, S): no (Q, ..., N, S, K) temporaries
    node_value = kappa * jnp.einsum("qcdns,qcdsk->cdnsk", weights, statistics.node_mean)
    terms = log_gamma(node_value)  # (C, D, N, S, K)
    products = weights
    for r, moment in enumerate(statistics.node_moments, start=2):
        products = (products[:, None] * weights[None, :]).reshape(-1, *weights.shape[1:])
        central = jnp.einsum("acdns,acdsk->cdnsk", products, moment)  # m_r(w) of every node
        scale = kappa**r / math.factorial(r)
        terms = terms + scale * polygamma(r - 1, node_value) * central
    normaliser = jnp.einsum("cdnsk,cdsk->cdns", terms, statistics.node_count)
    linear = jnp.sum(weights * statistics.strategy_log_observed, axis=0)
    return (
        statistics.num_predictions * log_gamma(kappa)
        - normaliser
        + kappa * linear
        - statistics.log_observed
    )


def log_gamma(x):
    """ln Gamma(x) for x > 0: six recurrence steps, then Stirling's series (error < 1e-10).

    Cheaper than ``jax.scipy.special.gammaln`` in float64, and differentiable into a
    digamma of the same accuracy.
    """
    shifted = x + _SHIFT
    product = x * (x + 1) * (x + 2) * (x + 3) * (x + 4) * (x + 5)
    inverse, inverse_square = 1.0 / shifted, 1.0 / shifted**2
    series = inverse * (
        1 / 12 - inverse_square * (1 / 360 - inverse_square * (1 / 1260 - inverse_square / 1680))
    )
    return (
        (shifted - 0.5) * jnp.log(shifted)
        - shifted
        + 0.5 * math.log(2 * math.pi)
        + series
        - jnp.log(product)
    )


def polygamma(order: int, x):
    """psi^(order)(x), the derivatives of digamma, for x > 0 and order >= 1: six
    recurrence steps, then the asymptotic series (relative error < 1e-9)."""
    sign, factorial = (-1.0) ** (order + 1), math.factorial(order)
    recurrence = sum((x + j) ** -(order + 1) for j in range(_SHIFT))
    inverse = 1.0 / (x + _SHIFT)
    series = math.factorial(order - 1) * inverse**order + factorial / 2 * inverse ** (order + 1)
    for k, bernoulli in enumerate(_BERNOULLI, start=1):
        coefficient = bernoulli * math.factorial(2 * k + order - 1) / math.factorial(2 * k)
        series = series + coefficient * inverse ** (2 * k + order)
    return sign * (factorial * recurrence + series)


def outputs_model(
    strategy_loss,
    strategy_complexity,
    checkpoint,
    strategy_prediction=None,
    transformer_prediction=None,
    *,
    statistics=None,
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
    ``Dirichlet(concentration * h)`` (every prediction, the strategies' and the
    transformer's, floored at 1e-6 and renormalised), for regression
    ``Normal(h, output_sigma)``.

    Fitting with the predictions themselves evaluates the density of every prediction at
    every step. Pass ``statistics`` instead (``dirichlet_statistics`` or
    ``normal_statistics``, computed once): the cells' log likelihoods then come from
    per-cell sums (``outputs_log_likelihood``), exact for the Normal and, for the
    Dirichlet, with its normaliser on quadrature nodes. With ``statistics`` the observation
    is a factor site ``transformer_prediction`` (one term per cell); with neither
    ``statistics`` nor ``transformer_prediction`` the model simulates predictions.

    Parameters
    ----------
    strategy_loss, strategy_complexity : array (Q, C, D)
    checkpoint : array (N,)
    strategy_prediction : array (Q, C, D, S, B, P, O) or None
        Needed unless ``statistics`` is given.
    transformer_prediction : array (C, D, N, S, B, P, O) or None
        None simulates it (unless ``statistics`` is given).
    statistics : DirichletStatistics, NormalStatistics or None
    outcome_kind : "probabilities" or "regression"
    fit_mask : bool array (C, D, N, S) or None
        Cells that enter the likelihood.
    context_loss : array (Q, C, D, S, B, P) or None
        Per-sequence mean loss over the first t observations: context-dependent weights
        (the weights then vary by sequence and position: not with ``statistics``).
    context_size : array (P,) or None

    Sites
    -----
    ``alpha``, ``beta``, ``gamma``, ``concentration`` or ``output_sigma``, deterministic
    ``weight_memorizing`` and ``log_posterior_odds`` (C, D, N), observed
    ``transformer_prediction`` (C, D, N, S, B, P, O), or a factor of that name (C, D, N, S).
    """
    _check_choice("outcome_kind", outcome_kind, OUTCOME_KINDS)
    if statistics is None and strategy_prediction is None:
        raise ValueError("outputs_model needs strategy_prediction or statistics")
    if statistics is not None:
        expected = DirichletStatistics if outcome_kind == "probabilities" else NormalStatistics
        if not isinstance(statistics, expected):
            raise ValueError(f"outcome_kind {outcome_kind!r} needs {expected.__name__}")
        if context_loss is not None:
            raise ValueError(
                "context-dependent weights vary by sequence and position: pass "
                "strategy_prediction and transformer_prediction, not statistics"
            )
    log_post, alpha, gamma = _training_log_posterior(
        strategy_loss, strategy_complexity, checkpoint, ablation, pooling, priors
    )
    if outcome_kind == "probabilities":
        scale = numpyro.sample(
            "concentration",
            dist.LogNormal(priors.concentration_log_loc, priors.concentration_log_scale),
        )
    else:
        scale = numpyro.sample("output_sigma", dist.HalfNormal(priors.output_sigma_scale))
    if statistics is not None:
        if fit_mask is not None:  # held-out cells may be NaN: keep them out of gradients
            statistics = _fitted_cells_only(statistics, fit_mask)
        cell = outputs_log_likelihood(jax.nn.softmax(log_post, axis=0), scale, statistics)
        _observe_factor("transformer_prediction", cell, fit_mask)
        return
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
    observed = transformer_prediction
    if outcome_kind == "probabilities":
        strategy_prediction = _floored(strategy_prediction)
        if observed is not None:
            observed = _floored(observed)
    mixture = jnp.sum(weights * strategy_prediction[:, :, :, None], axis=0)
    if outcome_kind == "probabilities":
        likelihood = dist.Dirichlet(jnp.asarray(scale, dtype) * mixture)
    else:
        likelihood = dist.Normal(mixture, jnp.asarray(scale, dtype)).to_event(1)
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


def _floored(probabilities):
    """Floor probabilities at 1e-6 and renormalise (numpy or JAX arrays, last axis)."""
    probabilities = probabilities.clip(_PROBABILITY_FLOOR, None)
    return probabilities / probabilities.sum(-1, keepdims=True)


def _per_run_sums(per_run, strategy, transformer):
    """Apply ``per_run`` to one (configuration, num_tasks) at a time (float64 temporaries of
    one run instead of the whole grid) and lay its two sums out per cell.

    ``per_run`` maps (Q, S, B, P, O) strategy and (N, S, B, P, O) transformer predictions to
    a data-only sum (N, S) and a per-strategy sum (Q, N, S); returned as (C, D, N, S) and
    (Q, C, D, N, S).
    """
    q, c, d = strategy.shape[:3]
    strategy = strategy.reshape(q, c * d, *strategy.shape[3:]).swapaxes(0, 1)
    transformer = transformer.reshape(c * d, *transformer.shape[2:])
    observed, per_strategy = jax.lax.map(lambda pair: per_run(*pair), (strategy, transformer))
    n, s = observed.shape[1:]
    return observed.reshape(c, d, n, s), per_strategy.swapaxes(0, 1).reshape(q, c, d, n, s)


def _dirichlet_run_sums(strategy, observed):
    """sum log y and sum_o Q_o log y_o of one run's cells."""
    log_observed = jnp.log(_floored(observed.astype(jnp.float64)))
    per_strategy = jnp.einsum("qsbpo,nsbpo->qns", strategy, log_observed)
    return log_observed.sum((-3, -2, -1)), per_strategy


def _normal_run_sums(strategy, observed):
    """sum y^2 and sum Q(x) y of one run's cells."""
    observed = observed.astype(jnp.float64)
    per_strategy = jnp.einsum("qsbpo,nsbpo->qns", strategy, observed)
    return (observed**2).sum((-3, -2, -1)), per_strategy


_dirichlet_sums = jax.jit(functools.partial(_per_run_sums, _dirichlet_run_sums))
_normal_sums = jax.jit(functools.partial(_per_run_sums, _normal_run_sums))


def _quadrature_nodes(elements, bin_width, order):
    """Group the predictions of every group into log-spaced boxes: count, mean, moments.

    ``elements`` (Q, G, E): the strategies' predictions, G groups of E predictions each.
    Returns count (G, K), mean (Q, G, K) and the central moments of orders 2 ... ``order``,
    each (Q^r, G, K) with the strategy indices flattened in C order; K is the most boxes
    of any group, and unused slots have count 0 (and mean 1, so that lgamma stays finite).
    """
    num_strategies, num_groups, _ = elements.shape
    codes = np.floor(np.log(elements) / bin_width).astype(np.int64)
    codes -= codes.min()
    base = int(codes.max()) + 1
    if num_groups * float(base) ** num_strategies >= 2**62:
        raise ValueError(f"bin_width {bin_width} is too small for the quadrature keys")
    key = np.arange(num_groups)[:, None] * base**num_strategies
    for q in range(num_strategies):
        key = key + codes[q] * base**q
    boxes, box_of = np.unique(key.ravel(), return_inverse=True)  # sorted group by group
    box_group = boxes // base**num_strategies
    slot = np.arange(boxes.size) - np.searchsorted(box_group, box_group)
    num_slots = int(slot.max()) + 1

    def box_mean(values):
        return np.bincount(box_of, weights=values, minlength=boxes.size) / count

    flat = elements.reshape(num_strategies, -1)
    count = np.bincount(box_of, minlength=boxes.size).astype(np.float64)
    mean = np.stack([box_mean(v) for v in flat])
    centred = flat - mean[:, box_of]
    moments, known = [], {}
    for r in range(2, order + 1):
        indices = list(itertools.product(range(num_strategies), repeat=r))
        for index in {tuple(sorted(i)) for i in indices}:  # each moment once, by symmetry
            known[index] = box_mean(np.prod(centred[list(index)], axis=0))
        moments.append(np.stack([known[tuple(sorted(i))] for i in indices]))

    def padded(values, fill):  # (..., boxes) -> (..., G, K)
        out = np.full((*values.shape[:-1], num_groups, num_slots), fill, dtype=np.float64)
        out[..., box_group, slot] = values
        return out

    return padded(count, 0.0), padded(mean, 1.0), [padded(m, 0.0) for m in moments]


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
    with _cells(fit_mask):
        return numpyro.sample(name, likelihood, obs=observed)


def _fitted_cells_only(statistics, fit_mask):
    """Zero the per-cell sums of the cells outside ``fit_mask`` (C, D, N, S)."""
    names = {
        DirichletStatistics: ("log_observed", "strategy_log_observed"),
        NormalStatistics: ("squared_observed", "strategy_observed"),
    }[type(statistics)]
    return statistics._replace(
        **{name: jnp.where(fit_mask, getattr(statistics, name), 0.0) for name in names}
    )


def _observe_factor(name, log_factor, fit_mask):
    """A per-cell log-likelihood term, masked like ``_observe`` (pointwise for LOO)."""
    with _cells(fit_mask):
        return numpyro.factor(name, log_factor)


def _cells(fit_mask):
    """Mask the sites inside to the cells of ``fit_mask``; no mask when it is None."""
    return contextlib.nullcontext() if fit_mask is None else numpyro.handlers.mask(mask=fit_mask)


def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

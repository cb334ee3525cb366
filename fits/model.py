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
- ``observed_weight``: (C, D, N, S) observed weight on memorizing per split S;
- ``strategy_prediction``: (Q, C, D, S, B, P, O) and ``transformer_prediction``:
  (C, D, N, S, B, P, O) for the ``outputs`` observation model (B sequences, P positions,
  O outcomes). To fit it, reduce them once to per-cell sums (``dirichlet_statistics``,
  ``normal_statistics`` in ``rational_icl.fits.sufficient``) and pass those as
  ``statistics``: a fit then never revisits the B x P x O predictions of each of the
  C x D x N x S cells.

The parameters and their priors are in ``rational_icl.fits.parameters``.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints

from rational_icl import formulas
from rational_icl.fits.parameters import Priors, check_choice, rational_parameters
from rational_icl.fits.sufficient import (
    DirichletStatistics,
    NormalStatistics,
    fitted_cells_only,
    floored,
    outputs_log_likelihood,
)
from rational_icl.vocabulary import form_of

OUTCOME_KINDS = ("probabilities", "regression")


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


def relative_distance_model(
    strategy_loss,
    strategy_complexity,
    checkpoint,
    observed_weight=None,
    *,
    num_splits: int = 2,
    fit_mask=None,
    context_loss=None,
    context_size=None,
    ablation: str = "none",
    pooling: str = "complete",
    priors: Priors = Priors(),
    centred: bool = False,
    model: str = "paper",
    weight_history=None,
    num_tasks=None,
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
    observed_weight : array (C, D, N, S) or None
        Observed weights; None simulates them.
    num_splits : int
        S, used when simulating without a ``fit_mask`` (which gives S otherwise).
    fit_mask : bool array (C, D, N, S) or None
        Cells that enter the likelihood (the rest are held out); None fits every cell.
    context_loss : array (Q, C, D, S, P) or None
    context_size : array (P,) or None
    ablation, pooling, priors, centred
        See ``rational_parameters``.
    model : str
        One of ``parameters.MODELS``: the evidence at a reference step in place of gamma,
        run offsets, a drift.
    weight_history : array (C, D, N, S) or None
        The observed weights, for the ``drift`` models to condition on when
        ``observed_weight`` is left out (the posterior predictive); ignored otherwise.
    num_tasks : array (D,) or None
        The num_tasks values D, which the ``smooth`` models' offsets follow (needed there,
        ignored otherwise).

    Sites
    -----
    ``alpha``, ``beta``, ``gamma``, ``sigma`` (S,), deterministic ``weight_memorizing`` and
    ``log_posterior_odds`` (C, D, N), ``expected_weight`` (C, D, N, S) when
    context-dependent, and the observed site ``observed_weight`` (C, D, N, S). The ``drift``
    models add ``drift_scale``, ``drift_length`` and ``expected_weight``, the law plus the
    drift predicted from the run's other fitted cells (``drift``).
    """
    law = (ablation, pooling, priors, centred, model, num_tasks)
    log_post, alpha, gamma = _training_log_posterior(
        strategy_loss, strategy_complexity, checkpoint, *law
    )
    drifts = form_of(model).drift
    if observed_weight is not None:
        num_splits = observed_weight.shape[-1]
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
        if not drifts:
            expected = numpyro.deterministic("expected_weight", expected)
    sigma = numpyro.sample(
        "sigma", dist.HalfNormal(priors.sigma_scale).expand([num_splits]).to_event(1)
    )
    if not drifts:
        likelihood = ClippedNormal(expected, sigma)
    else:
        likelihood = drifting(
            expected, observed_weight, weight_history, checkpoint, fit_mask, sigma, priors
        )
    _observe("observed_weight", likelihood, observed_weight, fit_mask, fill=0.5)


def drifting(expected, observed_weight, weight_history, checkpoint, fit_mask, sigma, priors):
    """The observation of the ``drift`` models: each cell's ``ClippedNormal`` around
    ``expected`` (C, D, N, S) plus its run's drift, conditioned on ``observed_weight``
    when fitting, else on ``weight_history`` (``drift``); records deterministic
    ``expected_weight``, the prediction of each cell from its run's other fitted cells."""
    history = observed_weight if observed_weight is not None else weight_history
    fitting = observed_weight is not None
    loc, scale, predicted = drift(
        expected, history, checkpoint, fit_mask, sigma, priors, fitting=fitting
    )
    numpyro.deterministic("expected_weight", predicted)
    return ClippedNormal(loc, scale)


def drift(expected, history, checkpoint, fit_mask, sigma, priors: Priors, *, fitting=False):
    """Each run's observed weight drifts from the law along training: a Gaussian process in
    log training steps (exponential kernel, sites ``drift_scale`` and ``drift_length``) on
    top of the per-cell noise ``sigma``, one path per run and split (``drift_scale`` per
    split, as ``sigma``).

    Returns the observation's location and scale for every cell: for a fitted cell the
    normal conditional on the fitted cells before it (their product is the joint density
    of the fitted cells), for a held-out cell the conditional on every fitted cell of its
    run (``fitting``: on those before it, which is all the likelihood needs, and cheaper);
    and ``predicted``, the law plus the drift's conditional mean given the fitted cells
    other than the cell itself (the model's prediction of a cell it has not seen; for a
    fitted cell, its leave-one-out prediction), kept in [0, 1] (the median of the censored
    observation, which is where the weight lies). Without ``history`` (simulating from
    scratch) each cell is drawn from its marginal.

    The exponential kernel makes the drift a Markov process in log N (Ornstein-Uhlenbeck),
    so every conditional comes from two Kalman filters along the checkpoints, one forward
    and one backward in time: O(N) per run, no N x N matrix (``_drift_given_others``).

    Shapes: expected, history, fit_mask (C, D, N, S); sigma (S,).
    """
    num_splits = sigma.shape[-1]
    size = numpyro.sample(  # per split, as sigma: a split's weights may wander more
        "drift_scale", dist.HalfNormal(priors.drift_scale).expand([num_splits]).to_event(1)
    )
    length = numpyro.sample(
        "drift_length", dist.LogNormal(priors.drift_length_log_loc, priors.drift_length_log_scale)
    )
    if history is None:
        return expected, jnp.sqrt(size**2 + sigma**2), expected
    time = jnp.log(checkpoint)  # (N,)
    fitted = jnp.ones(expected.shape, bool) if fit_mask is None else fit_mask
    fitted = jnp.moveaxis(fitted, 2, -1)  # (C, D, S, N)
    residual = jnp.where(fitted, jnp.moveaxis(history - expected, 2, -1), 0.0)  # (C, D, S, N)
    noise = sigma**2  # (S,)
    # (C, D, S, N) each: the drift given the fitted cells before each cell
    earlier_mean, earlier_variance = _drift_filter(residual, fitted, time, size**2, length, noise)
    loc, scale = earlier_mean, jnp.sqrt(earlier_variance + noise[:, None])
    others_mean, others_variance = _drift_given_others(
        residual, fitted, time, size**2, length, noise, earlier_mean, earlier_variance
    )
    if not fitting:
        loc = jnp.where(fitted, loc, others_mean)
        scale = jnp.where(fitted, scale, jnp.sqrt(others_variance + noise[:, None]))
    back = lambda a: jnp.moveaxis(a, -1, 2)  # noqa: E731
    return expected + back(loc), back(scale), jnp.clip(expected + back(others_mean), 0.0, 1.0)


def _drift_filter(residual, fitted, time, variance_limit, length, noise):
    """The Kalman filter of the drift along checkpoints: each cell's drift given the fitted
    cells before it in its run (before its own observation). The drift is an
    Ornstein-Uhlenbeck process in ``time`` (one number of state, stationary variance
    ``variance_limit``, (S,)) observed with noise ``noise`` (S,) at the fitted cells.

    residual, fitted: (..., N), ``time`` (N,) increasing. Returns the conditional means and
    variances (..., N), one ``lax.scan`` step per checkpoint.
    """

    def step(state, cell):
        mean, variance, previous = state
        value, kept, now = cell
        carry = jnp.exp(-(now - previous) / length)  # how much of the drift survives
        mean = carry * mean  # (..., S)
        variance = carry**2 * variance + variance_limit * (1 - carry**2)
        gain = jnp.where(kept, variance / (variance + noise), 0.0)
        updated = (mean + gain * (value - mean), (1 - gain) * variance, now)
        return updated, (mean, variance)

    start = jnp.zeros_like(residual[..., 0])
    first = (start, start + variance_limit, time[0])
    cells = (jnp.moveaxis(residual, -1, 0), jnp.moveaxis(fitted, -1, 0), time)
    _, (mean, variance) = jax.lax.scan(step, first, cells)
    return jnp.moveaxis(mean, 0, -1), jnp.moveaxis(variance, 0, -1)


def _drift_given_others(
    residual, fitted, time, variance_limit, length, noise, earlier_mean, earlier_variance
):
    """Each cell's drift given every fitted cell of its run other than itself: for a
    held-out cell, all the fitted ones; for a fitted cell, its leave-one-out conditional.

    The drift is Markov, so the cells before and after a cell are independent given its
    drift: p(x | before, after) is proportional to p(x | before) p(x | after) / p(x). The
    filter gives p(x | before) (``earlier_*``); the same filter run backward in time gives
    p(x | after), since a stationary Ornstein-Uhlenbeck process reversed in time is the
    same process. Precisions add (each is at least the prior's 1 / variance_limit, so the
    difference does not cancel). Returns means and variances (..., N).
    """
    flip = lambda a: jnp.flip(a, axis=-1)  # noqa: E731
    later_mean, later_variance = _drift_filter(
        flip(residual), flip(fitted), -flip(time), variance_limit, length, noise
    )
    later_mean, later_variance = flip(later_mean), flip(later_variance)
    precision = 1 / earlier_variance + 1 / later_variance - 1 / variance_limit[..., None]
    mean = (earlier_mean / earlier_variance + later_mean / later_variance) / precision
    return mean, 1 / precision


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
    centred: bool = False,
    model: str = "paper",
    num_tasks=None,
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
    ablation, pooling, priors, centred
        See ``rational_parameters``.
    model : str
        One of ``parameters.MODELS``: the evidence at a reference step in place of gamma,
        run offsets (a drift is of observed weights, which this model does not observe).
    num_tasks : array (D,) or None
        The num_tasks values, for the ``smooth`` models' offsets.

    Sites
    -----
    ``alpha``, ``beta``, ``gamma``, ``concentration`` or ``output_sigma``, deterministic
    ``weight_memorizing`` and ``log_posterior_odds`` (C, D, N), observed
    ``transformer_prediction`` (C, D, N, S, B, P, O), or a factor of that name (C, D, N, S).
    """
    _check_outputs_arguments(statistics, strategy_prediction, outcome_kind, context_loss)
    law = (ablation, pooling, priors, centred, model, num_tasks)
    log_post, alpha, gamma = _training_log_posterior(
        strategy_loss, strategy_complexity, checkpoint, *law
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
            statistics = fitted_cells_only(statistics, fit_mask)
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
    _observe_predictions(
        weights, strategy_prediction, transformer_prediction, scale, outcome_kind, fit_mask
    )


def _check_outputs_arguments(statistics, strategy_prediction, outcome_kind, context_loss):
    """``outputs_model`` takes either the predictions or their per-cell statistics."""
    check_choice("outcome_kind", outcome_kind, OUTCOME_KINDS)
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


def _observe_predictions(weights, strategy_prediction, observed, scale, outcome_kind, fit_mask):
    """Every prediction around the strategies' mixture under ``weights`` (Q, C, D, N, ...):
    Dirichlet for probabilities, Normal for regression; one event per cell."""
    dtype = strategy_prediction.dtype
    if outcome_kind == "probabilities":
        strategy_prediction = floored(strategy_prediction)
        if observed is not None:
            observed = floored(observed)
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
    strategy_loss,
    strategy_complexity,
    checkpoint,
    ablation,
    pooling,
    priors,
    centred,
    model,
    num_tasks=None,
):
    """Sample the parameters, record ``weight_memorizing`` and ``log_posterior_odds``.

    ``model`` (``parameters.MODELS``) chooses gamma or the evidence at a reference step,
    and whether the run offsets are added, independent or smooth in log ``num_tasks``.
    Returns the log posterior (Q, C, D, N) and alpha, gamma for the context evidence.
    """
    form = form_of(model)  # a ValueError naming the family for any other name
    linear = ablation == "linear-complexity"
    alpha, beta, gamma = rational_parameters(
        ablation=ablation,
        pooling=pooling,
        num_configurations=strategy_loss.shape[1],
        priors=priors,
        centred=centred,
        anchored=form.anchored,
    )
    if form.anchored:  # gamma * N ** (1 - alpha) = evidence_scale * (N / N_ref) ** ...
        reference_step = jnp.exp(jnp.mean(jnp.log(checkpoint)))
        gamma = numpyro.deterministic("gamma", gamma / reference_step ** (1 - alpha))
    log_post = log_posterior(
        strategy_loss,
        strategy_complexity,
        checkpoint,
        alpha,
        beta,
        gamma,
        linear_complexity=linear,
    )
    if form.offsets:
        law_prior = formulas.log_prior(
            strategy_complexity, _per_configuration(beta, trailing=1), linear
        )
        if form.smooth:
            if num_tasks is None:
                raise ValueError(f"model {model!r} needs num_tasks (its offsets follow it)")
            offsets = smooth_run_offsets(law_prior, num_tasks, priors)
        else:
            offsets = run_offsets(law_prior, priors)
        log_post = log_post + offsets[..., None]
    numpyro.deterministic("weight_memorizing", jax.nn.softmax(log_post, axis=0)[0])
    numpyro.deterministic("log_posterior_odds", log_post[0] - log_post[1])
    return log_post, alpha, gamma


def run_offsets(law_log_prior, priors: Priors):
    """Per-run shifts of each strategy's log posterior against generalizing, (Q, C, D).

    A run (a configuration at one num_tasks) sits above or below the law for all of its
    training (a capacity plateau, a seed's luck, an error in the complexity estimate of its
    num_tasks): one shift per run and strategy, zero for generalizing (the reference; the
    softmax sees only differences). Shifts are independent across runs, Normal(0,
    ``offset_scale``), so the law, not the shifts, has to carry what num_tasks changes: a
    run without fitted cells is predicted by the law, its interval widened by the spread.

    Sampled as each run's level, ``run_log_prior_odds`` ~ Normal(the law's log prior odds,
    ``offset_scale``), the shift being the difference. The same model as shifts drawn
    around zero, but a run's fitted cells pin its level, not its shift: the shift moves
    with beta, since the law's log prior odds -ln2 (K_M ** beta - K_G ** beta) are constant
    along a run, as the shift is. Sampled as shifts (``offset_scale`` times a standard
    normal), NUTS had to move every run's shift with beta, through ``offset_scale``: on
    tiny-categorical's default fit 121 leapfrog steps per draw at target acceptance 0.99 and
    R-hat up to 1.02 (docs/science.md). The engines choose how to sample this site
    (``engines.LEVEL``): NUTS centred for the runs whose cells pin their level and decentred
    (the level as the law's plus ``offset_scale`` times a standard normal, site
    ``run_log_prior_odds_decentered``) for the others; MAP, Laplace, SVI and the starts of NUTS
    decentred, since a centred hierarchy has no mode.

    Parameters
    ----------
    law_log_prior : array (Q, C, D)
        The law's log prior of each strategy, -ln2 * K ** beta (``formulas.log_prior``).
    priors : Priors

    Sites ``offset_scale`` ~ HalfNormal(priors.offset_scale), ``run_log_prior_odds``
    (C, D, Q - 1) and deterministic ``run_offset`` (C, D, Q - 1).
    """
    scale = numpyro.sample("offset_scale", dist.HalfNormal(priors.offset_scale))
    law_odds = _law_odds(law_log_prior)  # (C, D, Q - 1)
    level = numpyro.sample("run_log_prior_odds", dist.Normal(law_odds, scale).to_event(3))
    offset = numpyro.deterministic("run_offset", level - law_odds)  # (C, D, Q - 1)
    return _with_generalizing(offset)


def _law_odds(law_log_prior):
    """The law's log prior odds of each strategy against generalizing, (C, D, Q - 1)."""
    law_odds = jnp.delete(law_log_prior - law_log_prior[1], 1, axis=0)  # (Q - 1, C, D)
    return jnp.moveaxis(law_odds, 0, -1)


def _with_generalizing(offset):
    """(C, D, Q - 1) offsets as (Q, C, D), zero for generalizing (the second strategy)."""
    offset = jnp.moveaxis(offset, -1, 0)  # (Q - 1, C, D)
    zero = jnp.zeros_like(offset[:1])
    return jnp.concatenate([offset[:1], zero, offset[1:]], axis=0)


def smooth_run_offsets(law_log_prior, num_tasks, priors: Priors):
    """Per-run shifts of each strategy's log posterior against generalizing, (Q, C, D), that
    vary smoothly in log num_tasks (the ``smooth`` models).

    The independent offsets of ``run_offsets`` leave a num_tasks without fitted cells at the
    law alone, its interval widened by their whole spread. Here the offsets of one
    configuration and strategy are a Gaussian random walk (a Brownian motion) in x = log D:
    at the smallest D Normal(0, ``offset_scale``), then from each D to the next an increment
    Normal(0, ``smooth_scale`` ** 2 * (x_next - x)). Their covariance is
    ``smooth_offset_covariance``; a D between two others is, given theirs, their linear
    interpolation in log D with the Brownian bridge's variance ``smooth_scale ** 2 *
    (x - x_a) (x_b - x) / (x_b - x_a)``, and a D beyond the largest keeps the last offset with
    a variance growing as ``smooth_scale ** 2 * (x - x_last)``.

    Sampled non-centred, one standard normal per run, ``run_offset_innovation`` (C, D, Q - 1):
    the increment that arrives at the run's D (at the smallest D, the offset itself) over its
    scale; every engine samples it as it is.

    Parameters
    ----------
    law_log_prior : array (Q, C, D)
    num_tasks : array (D,)
        The num_tasks values, in the order of the D axis (any order).
    priors : Priors

    Sites ``offset_scale`` ~ HalfNormal(priors.offset_scale), ``smooth_scale`` ~
    HalfNormal(priors.smooth_scale) (log odds per unit of natural-log num_tasks, squared
    per unit), ``run_offset_innovation`` (C, D, Q - 1), deterministic ``run_offset`` and
    ``run_log_prior_odds`` (C, D, Q - 1).
    """
    scale = numpyro.sample("offset_scale", dist.HalfNormal(priors.offset_scale))
    smooth = numpyro.sample("smooth_scale", dist.HalfNormal(priors.smooth_scale))
    law_odds = _law_odds(law_log_prior)
    innovation = numpyro.sample(
        "run_offset_innovation", dist.Normal(0.0, 1.0).expand(law_odds.shape).to_event(3)
    )
    offset = _random_walk(innovation, jnp.log(jnp.asarray(num_tasks)), scale, smooth)
    numpyro.deterministic("run_log_prior_odds", law_odds + offset)
    offset = numpyro.deterministic("run_offset", offset)
    return _with_generalizing(offset)


def _random_walk(innovation, x, scale, smooth):
    """The random walk of ``smooth_run_offsets`` along axis 1 of ``innovation`` (C, D, ...)
    at the points ``x`` (D,), in any order."""
    order = jnp.argsort(x)
    step = jnp.sqrt(jnp.diff(x[order]))  # (D - 1,)
    width = jnp.concatenate([jnp.reshape(scale, (1,)), smooth * step])  # (D,), sorted
    width = jnp.reshape(width, (1, -1) + (1,) * (innovation.ndim - 2))
    walk = jnp.cumsum(width * innovation[:, order], axis=1)
    return walk[:, jnp.argsort(order)]


def smooth_offset_covariance(num_tasks, offset_scale, smooth_scale):
    """The prior covariance (D, D) of one configuration's smooth offsets at ``num_tasks``:
    ``offset_scale ** 2 + smooth_scale ** 2 * (min(x_i, x_j) - min x)``, x = log D."""
    x = jnp.log(jnp.asarray(num_tasks, dtype=float))
    return offset_scale**2 + smooth_scale**2 * (jnp.minimum(x[:, None], x[None, :]) - x.min())


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


def _observe_factor(name, log_factor, fit_mask):
    """A per-cell log-likelihood term, masked like ``_observe`` (pointwise for LOO)."""
    with _cells(fit_mask):
        return numpyro.factor(name, log_factor)


def _cells(fit_mask):
    """Mask the sites inside to the cells of ``fit_mask``; no mask when it is None."""
    return contextlib.nullcontext() if fit_mask is None else numpyro.handlers.mask(mask=fit_mask)

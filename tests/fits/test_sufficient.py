"""The outputs model's sufficient statistics: exact against the plain likelihood, the
Dirichlet quadrature close to the exact normaliser, the model's checks of them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import scipy.stats

from rational_icl.fits import model as rational
from rational_icl.fits import sufficient
from tests.fits.test_model import COMPLEXITY, LOSS, STEPS, _trace

numpyro.enable_x64()


def _outputs_case(seed, num_sequences=5, num_positions=6, num_outcomes=4, num_strategies=2):
    rng = np.random.default_rng(seed)
    cell = (1, 3, 2, num_sequences, num_positions)  # (C, D, S, B, P)
    strategy = rng.dirichlet(np.ones(num_outcomes), size=(num_strategies, *cell))
    strategy[0, 0, 0, 0, 0, 0, :2] = [1e-9, 0.0]  # below the floor
    strategy /= strategy.sum(-1, keepdims=True)
    transformer = rng.dirichlet(np.ones(num_outcomes), size=(1, 3, 4, *cell[2:]))
    loss = np.concatenate([LOSS, np.full((num_strategies - 2, 1, 3), 0.3)])
    complexity = np.concatenate([COMPLEXITY, np.full((num_strategies - 2, 1, 3), 600.0)])
    return strategy, transformer, loss, complexity


def _weights(loss, complexity, alpha=0.5, beta=0.3, gamma=2.0):
    return jax.nn.softmax(
        rational.log_posterior(loss, complexity, STEPS, alpha, beta, gamma), axis=0
    )


@pytest.mark.slow
@pytest.mark.parametrize("num_strategies", [2, 3])
def test_dirichlet_statistics_give_the_plain_likelihood(num_strategies):
    strategy, transformer, loss, complexity = _outputs_case(4, num_strategies=num_strategies)
    values = {"alpha": 0.5, "beta": 0.3, "gamma": 2.0, "concentration": 40.0}
    plain = numpyro.infer.util.log_likelihood(
        rational.outputs_model,
        {k: jnp.asarray(v)[None] for k, v in values.items()},
        strategy_loss=loss,
        strategy_complexity=complexity,
        checkpoint=STEPS,
        strategy_prediction=strategy,
        transformer_prediction=transformer,
    )["transformer_prediction"][0]
    exact = sufficient.dirichlet_statistics(strategy, transformer, bin_width=None)
    fast = sufficient.outputs_log_likelihood(_weights(loss, complexity), 40.0, exact)
    assert fast.shape == (1, 3, 4, 2)
    np.testing.assert_allclose(fast, plain, rtol=1e-10)
    # the model takes the statistics in place of the predictions, masking cells alike
    mask = np.ones((1, 3, 4, 2), dtype=bool)
    mask[0, 2] = False

    def density(**data):
        kwargs = dict(strategy_loss=loss, strategy_complexity=complexity, checkpoint=STEPS)
        return numpyro.infer.util.log_density(
            rational.outputs_model, (), kwargs | data | {"fit_mask": mask}, values
        )[0]

    with_statistics = density(statistics=exact)
    with_predictions = density(strategy_prediction=strategy, transformer_prediction=transformer)
    assert float(with_statistics) == pytest.approx(float(with_predictions), rel=1e-10)
    # a held-out cell without predictions leaves the density and its gradient finite
    missing = transformer.copy()
    missing[0, 2, 1] = np.nan
    statistics = sufficient.dirichlet_statistics(strategy, missing, bin_width=None)
    assert float(density(statistics=statistics)) == pytest.approx(float(with_statistics))
    gradient = jax.grad(
        lambda v: numpyro.infer.util.log_density(
            rational.outputs_model,
            (),
            dict(
                strategy_loss=loss,
                strategy_complexity=complexity,
                checkpoint=STEPS,
                statistics=statistics,
                fit_mask=mask,
            ),
            v,
        )[0]
    )({k: jnp.asarray(v) for k, v in values.items()})
    assert all(np.isfinite(float(g)) for g in gradient.values())


@pytest.mark.slow
def test_dirichlet_quadrature_is_close_to_the_exact_normaliser():
    # 32 x 64 x 8 predictions per (num_tasks, split): some 800 nodes (boxes of side 0.25 in
    # log probability, moments to the fourth) in place of 16384 move the log likelihood by a
    # relative 1e-7 and the optimum (a Newton step on the gradient's error) by ~1e-7
    strategy, transformer, loss, complexity = _outputs_case(
        5, num_sequences=32, num_positions=64, num_outcomes=8
    )
    exact = sufficient.dirichlet_statistics(strategy, transformer, bin_width=None)
    nodes = sufficient.dirichlet_statistics(strategy, transformer)
    assert nodes.node_count.shape[-1] < exact.node_count.shape[-1] / 10
    np.testing.assert_allclose(nodes.node_count.sum(-1), exact.node_count.sum(-1))

    def total(parameters, statistics):
        alpha, log_kappa = parameters
        weights = _weights(loss, complexity, alpha=alpha)
        return sufficient.outputs_log_likelihood(weights, jnp.exp(log_kappa), statistics).sum()

    value_and_grad, hessian_of = jax.jit(jax.value_and_grad(total)), jax.jit(jax.hessian(total))
    for kappa in (5.0, 80.0, 1500.0):
        parameters = jnp.array([0.45, math.log(kappa)])
        want, want_grad = value_and_grad(parameters, exact)
        got, got_grad = value_and_grad(parameters, nodes)
        assert float(got) == pytest.approx(float(want), rel=1e-6)
        hessian = hessian_of(parameters, exact)
        shift = np.linalg.solve(hessian, got_grad - want_grad)
        assert np.abs(shift).max() < 1e-6


def test_normal_statistics_give_the_plain_likelihood():
    rng = np.random.default_rng(6)
    strategy = rng.standard_normal((2, 1, 3, 2, 5, 6, 1))
    transformer = rng.standard_normal((1, 3, 4, 2, 5, 6, 1))
    values = {"alpha": 0.5, "beta": 0.3, "gamma": 2.0, "output_sigma": 0.7}
    plain = numpyro.infer.util.log_likelihood(
        rational.outputs_model,
        {k: jnp.asarray(v)[None] for k, v in values.items()},
        strategy_loss=LOSS,
        strategy_complexity=COMPLEXITY,
        checkpoint=STEPS,
        strategy_prediction=strategy,
        transformer_prediction=transformer,
        outcome_kind="regression",
    )["transformer_prediction"][0]
    statistics = sufficient.normal_statistics(strategy, transformer)
    fast = sufficient.outputs_log_likelihood(_weights(LOSS, COMPLEXITY), 0.7, statistics)
    np.testing.assert_allclose(fast, plain, rtol=1e-10)
    mixture = np.einsum("qcdn,qcdsbpo->cdnsbpo", _weights(LOSS, COMPLEXITY), strategy)
    brute = scipy.stats.norm.logpdf(transformer, mixture, 0.7).sum((-3, -2, -1))
    np.testing.assert_allclose(fast, brute, rtol=1e-10)


def test_outputs_model_checks_its_statistics():
    strategy, transformer, loss, complexity = _outputs_case(7)
    statistics = sufficient.dirichlet_statistics(strategy, transformer)
    kwargs = dict(strategy_loss=loss, strategy_complexity=complexity, checkpoint=STEPS)
    with pytest.raises(ValueError, match="needs NormalStatistics"):
        _trace(rational.outputs_model, **kwargs, statistics=statistics, outcome_kind="regression")
    with pytest.raises(ValueError, match="context-dependent"):
        _trace(
            rational.outputs_model,
            **kwargs,
            statistics=statistics,
            context_loss=np.zeros((2, 1, 3, 2, 5, 6)),
            context_size=np.arange(6.0),
        )
    with pytest.raises(ValueError, match="needs strategy_prediction or statistics"):
        _trace(rational.outputs_model, **kwargs)
    trace = _trace(rational.outputs_model, **kwargs, statistics=statistics)
    assert trace["transformer_prediction"]["fn"].batch_shape == (1, 3, 4, 2)  # one per cell

"""alpha, beta, gamma: the centred and non-centred partial pooling, against their densities."""

import math

import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import scipy.special
import scipy.stats

from rational_icl.fits.parameters import Priors, rational_parameters

numpyro.enable_x64()


def _partial(centred: bool):
    return rational_parameters(pooling="partial", num_configurations=3, centred=centred)


def test_centred_partial_pooling_draws_each_value_from_the_population():
    values = {
        "alpha_loc": 0.2,
        "alpha_scale": 0.3,
        "alpha": np.array([0.4, 0.55, 0.6]),
        "beta_loc": math.log(0.3),
        "beta_scale": 0.1,
        "beta": np.array([0.28, 0.3, 0.33]),
        "gamma_loc": math.log(3.0),
        "gamma_scale": 0.2,
        "gamma": np.array([2.5, 3.0, 3.6]),
    }
    density, trace = numpyro.infer.util.log_density(
        lambda: _partial(centred=True), (), {}, {k: jnp.asarray(v) for k, v in values.items()}
    )
    for name in ("alpha", "beta", "gamma"):
        assert trace[name]["type"] == "sample" and f"{name}_offset" not in trace
    priors = Priors()
    alpha, beta, gamma = values["alpha"], values["beta"], values["gamma"]
    expected = (  # float64 brute force: each value's density given the population
        scipy.stats.norm.logpdf(0.2, priors.alpha_logit_loc, priors.alpha_logit_scale)
        + scipy.stats.norm.logpdf(math.log(0.3), priors.beta_log_loc, priors.beta_log_scale)
        + scipy.stats.norm.logpdf(math.log(3.0), priors.gamma_log_loc, priors.gamma_log_scale)
        + sum(
            scipy.stats.halfnorm.logpdf(s, scale=priors.population_scale) for s in (0.3, 0.1, 0.2)
        )
        + np.sum(  # logit-normal: the normal density of logit(alpha), times d logit / d alpha
            scipy.stats.norm.logpdf(scipy.special.logit(alpha), 0.2, 0.3)
            - np.log(alpha * (1 - alpha))
        )
        + np.sum(scipy.stats.lognorm.logpdf(beta, 0.1, scale=0.3))
        + np.sum(scipy.stats.lognorm.logpdf(gamma, 0.2, scale=3.0))
    )
    assert float(density) == pytest.approx(expected, rel=1e-12)


def test_non_centred_partial_pooling_is_the_default():
    trace = numpyro.handlers.trace(numpyro.handlers.seed(_partial, 0)).get_trace(False)
    assert trace["alpha"]["type"] == "deterministic"
    assert trace["alpha_offset"]["value"].shape == (3,)
    offset, loc, scale = (trace[f"gamma_{n}"]["value"] for n in ("offset", "loc", "scale"))
    np.testing.assert_allclose(trace["gamma"]["value"], np.exp(loc + scale * offset))

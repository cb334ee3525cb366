"""Per-draw values of the model's sites: the deterministic sites, the posterior predictive
and the pointwise log likelihood, against float64 brute force, whatever the chunking."""

import jax
import numpy as np
import pytest
import scipy.special
import scipy.stats
from numpyro.infer import Predictive

from rational_icl.fits import engines, inputs, predictive
from rational_icl.fits import model as rational
from tests.fits.simulated import PAPER_FIT


@pytest.fixture(scope="module")
def target_and_draws(behaviour):
    """The relative-distance model of the test behaviour, and 40 prior draws of it."""
    kwargs = inputs.model_inputs(behaviour, inputs.FitSettings(**PAPER_FIT)).kwargs
    key = jax.random.PRNGKey(0)
    target = engines.Target(rational.relative_distance_model, kwargs, "observed_weight", key)
    prior = {k: v for k, v in target.data.items() if k != "observed_weight"}
    draws = Predictive(target.model, num_samples=40, return_sites=list(target.transforms))
    return target, {k: np.asarray(v) for k, v in draws(key, **prior).items()}


def _weights(target, draws):
    """w_M (draws, C, D, N) from the formulas, in float64 numpy."""
    data = {k: np.asarray(v) for k, v in target.data.items()}
    log_post = np.stack(
        [
            np.asarray(
                rational.log_posterior(
                    data["strategy_loss"],
                    data["strategy_complexity"],
                    data["checkpoint"],
                    draws["alpha"][i],
                    draws["beta"][i],
                    draws["gamma"][i],
                )
            )
            for i in range(len(draws["alpha"]))
        ]
    )  # (draws, Q, C, D, N)
    return scipy.special.softmax(log_post, axis=1)[:, 0]


def test_site_draws_are_the_model_sites_in_any_chunks(target_and_draws, monkeypatch):
    target, draws = target_and_draws
    cells = int(np.prod(target.data["fit_mask"].shape))
    names = ["alpha", "weight_memorizing", "log_posterior_odds"]
    dtypes = {"weight_memorizing": np.float32}
    whole = predictive.site_draws(target, draws, names, cells=cells, dtypes=dtypes)
    assert whole["weight_memorizing"].dtype == np.float32
    assert whole["alpha"].dtype == np.float64
    np.testing.assert_array_equal(whole["alpha"], draws["alpha"])  # substituted as drawn
    expected = _weights(target, draws)
    np.testing.assert_allclose(whole["weight_memorizing"], expected, rtol=1e-6, atol=1e-7)
    monkeypatch.setattr(predictive, "CHUNK_ELEMENTS", 7 * cells)  # 6 chunks, the last padded
    chunked = predictive.site_draws(target, draws, names, cells=cells, dtypes=dtypes)
    for name in names:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-12, atol=1e-12)
    one = predictive.site_draws(target, draws, names, cells=cells, one_at_a_time=True)
    np.testing.assert_allclose(one["log_posterior_odds"], whole["log_posterior_odds"], rtol=1e-12)


def test_pointwise_log_likelihood_is_the_censored_normal(target_and_draws, monkeypatch):
    target, draws = target_and_draws
    mask = np.asarray(target.data["fit_mask"])
    fitted = np.flatnonzero(mask)
    values = predictive.pointwise_log_likelihood(target, draws, cells=mask.size, fitted=fitted)
    assert values.shape == (40, fitted.size)
    # float64 brute force: density inside (0, 1), the clipped tails' mass at 0 and 1
    observed = np.asarray(target.data["observed_weight"]).ravel()[fitted]
    loc = np.repeat(_weights(target, draws)[..., None], mask.shape[-1], -1).reshape(40, -1)
    loc = loc[:, fitted]
    split = np.unravel_index(fitted, mask.shape)[-1]
    scale = draws["sigma"][:, split]
    brute = np.where(
        observed <= 0,
        scipy.stats.norm.logcdf(0.0, loc, scale),
        np.where(
            observed >= 1,
            scipy.stats.norm.logsf(1.0, loc, scale),
            scipy.stats.norm.logpdf(observed, loc, scale),
        ),
    )
    np.testing.assert_allclose(values, brute, rtol=1e-9, atol=1e-9)
    # a draw's values do not depend on the draws beside it (thinned fits keep them)
    monkeypatch.setattr(predictive, "CHUNK_ELEMENTS", 3 * mask.size)
    every_other = {k: v[::2] for k, v in draws.items()}
    thinned = predictive.pointwise_log_likelihood(
        target, every_other, cells=mask.size, fitted=fitted
    )
    np.testing.assert_array_equal(thinned, values[::2])


def test_predictive_draws_follow_the_censored_normal(target_and_draws):
    target, draws = target_and_draws
    cells = int(np.prod(target.data["fit_mask"].shape))
    one = {k: np.repeat(v[:1], 4000, axis=0) for k, v in draws.items()}  # one draw, 4000 times
    key = jax.random.PRNGKey(3)
    values = predictive.predictive_draws(target, one, key, cells=cells)
    assert values.dtype == np.float32 and values.shape == (4000, *target.data["fit_mask"].shape)
    again = predictive.predictive_draws(target, one, key, cells=cells)
    np.testing.assert_array_equal(values, again)  # the key decides the draws
    loc = _weights(target, {k: v[:1] for k, v in draws.items()})[0]  # (C, D, N)
    scale = draws["sigma"][0]  # (S,)
    below = scipy.stats.norm.cdf(0.0, loc[..., None], scale)  # P(observed weight = 0)
    share = (values == 0.0).mean(axis=0)
    np.testing.assert_allclose(share, below, atol=4 * np.sqrt(0.25 / 4000))
    inside = (loc[..., None] > 5 * scale) & (loc[..., None] < 1 - 5 * scale)
    spread = values.std(axis=0)
    np.testing.assert_allclose(
        spread[inside], np.broadcast_to(scale, inside.shape)[inside], rtol=0.1
    )

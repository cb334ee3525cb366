"""The rational model's NumPyro functions: maths, sites, ablations, pooling, likelihoods."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

from rational_icl import vocabulary
from rational_icl.fits import model as rational

numpyro.enable_x64()

LOSS = np.array([[[0.05, 0.10, 0.15]], [[0.20, 0.20, 0.20]]])  # (Q=2, C=1, D=3)
COMPLEXITY = np.array([[[2500.0, 5000.0, 9000.0]], [[1200.0, 1200.0, 1200.0]]])
STEPS = np.array([20.0, 200.0, 2000.0, 20000.0])


def _trace(function, seed=0, **kwargs):
    return numpyro.handlers.trace(numpyro.handlers.seed(function, seed)).get_trace(**kwargs)


def test_log_posterior_is_the_formula():
    got = rational.log_posterior(LOSS, COMPLEXITY, STEPS, 0.4, 0.3, 2.0)
    expected = (
        -math.log(2) * COMPLEXITY[..., None] ** 0.3 - 2.0 * STEPS ** (1 - 0.4) * LOSS[..., None]
    )
    assert got.shape == (2, 1, 3, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_log_posterior_per_configuration_and_linear_complexity():
    loss = np.concatenate([LOSS, 2 * LOSS], axis=1)  # C = 2
    complexity = np.concatenate([COMPLEXITY, COMPLEXITY], axis=1)
    alpha, beta, gamma = np.array([0.2, 0.6]), np.array([1e-3, 2e-3]), np.array([1.0, 3.0])
    got = rational.log_posterior(
        loss, complexity, STEPS, alpha, beta, gamma, linear_complexity=True
    )
    for c in range(2):
        expected = (
            -math.log(2) * beta[c] * complexity[:, c, :, None]
            - gamma[c] * STEPS ** (1 - alpha[c]) * loss[:, c, :, None]
        )
        np.testing.assert_allclose(got[:, c], expected, rtol=1e-12)


def test_context_evidence_is_the_formula():
    context_loss = np.random.default_rng(0).random((2, 1, 3, 2, 5))  # (Q, C, D, S, P)
    size = np.arange(5.0)
    got = rational.context_evidence(context_loss, size, 0.3, 2.0)
    np.testing.assert_allclose(got, -2.0 * size**0.7 * context_loss, rtol=1e-12)


def test_clipped_normal_is_a_distribution_on_the_unit_interval():
    d = rational.ClippedNormal(0.3, 0.4)
    inside, _ = scipy.integrate.quad(lambda y: math.exp(float(d.log_prob(y))), 0, 1)
    mass = inside + math.exp(float(d.log_prob(0.0))) + math.exp(float(d.log_prob(1.0)))
    assert mass == pytest.approx(1.0, abs=1e-6)
    assert float(d.log_prob(0.0)) == pytest.approx(scipy.stats.norm.logcdf(0, 0.3, 0.4))
    assert float(d.log_prob(0.5)) == pytest.approx(scipy.stats.norm.logpdf(0.5, 0.3, 0.4))
    draws = np.asarray(d.sample(jax.random.PRNGKey(0), (20000,)))
    assert draws.min() == 0.0 and draws.max() == 1.0
    assert np.mean(draws == 0.0) == pytest.approx(scipy.stats.norm.cdf(0, 0.3, 0.4), abs=0.01)


@pytest.mark.parametrize(
    ("ablation", "fixed", "value"),
    [
        ("linear-likelihood", "alpha", 0.0),
        ("fixed-complexity", "beta", 1.0),
        ("unit-gamma", "gamma", 1.0),
        ("linear-complexity", None, None),
        ("none", None, None),
    ],
)
def test_ablations_fix_the_right_parameter(ablation, fixed, value):
    trace = _trace(rational.relative_distance_model, **_small_kwargs(ablation=ablation))
    for name in ("alpha", "beta", "gamma"):
        if name == fixed:
            assert trace[name]["type"] == "deterministic"
            assert float(trace[name]["value"]) == value
        else:
            assert trace[name]["type"] == "sample"


def test_linear_complexity_prices_bits_linearly():
    kwargs = _small_kwargs(ablation="linear-complexity")
    values = {"alpha": 0.5, "beta": 2e-3, "gamma": 1.5, "sigma": jnp.array([0.1, 0.1])}
    model = numpyro.handlers.substitute(rational.relative_distance_model, data=values)
    trace = _trace(model, **kwargs)
    expected = (
        -math.log(2) * 2e-3 * (COMPLEXITY[0] - COMPLEXITY[1])[..., None]
        + 1.5 * STEPS**0.5 * (LOSS[1] - LOSS[0])[..., None]
    )
    np.testing.assert_allclose(trace["log_posterior_odds"]["value"], expected, rtol=1e-10)


def test_sites_and_shapes_when_simulating():
    trace = _trace(rational.relative_distance_model, **_small_kwargs())
    assert trace["weight_memorizing"]["value"].shape == (1, 3, 4)
    assert trace["log_posterior_odds"]["value"].shape == (1, 3, 4)
    observed = trace["observed_weight"]["value"]
    assert observed.shape == (1, 3, 4, 2)
    assert (observed >= 0).all() and (observed <= 1).all()
    odds = trace["log_posterior_odds"]["value"]
    np.testing.assert_allclose(trace["weight_memorizing"]["value"], jax.nn.sigmoid(odds))


def test_simulating_takes_the_number_of_splits_from_the_fit_mask():
    # Classification has three splits (id, ood, iwl); a prior draw over its grid must too.
    fit_mask = np.ones((1, 3, 4, 3), dtype=bool)
    trace = _trace(rational.relative_distance_model, **_small_kwargs(), fit_mask=fit_mask)
    assert trace["observed_weight"]["value"].shape == (1, 3, 4, 3)
    assert trace["sigma"]["value"].shape == (3,)


@pytest.mark.parametrize("pooling", ["none", "partial"])
def test_pooling_gives_one_parameter_per_configuration(pooling):
    kwargs = _small_kwargs(pooling=pooling)
    kwargs["strategy_loss"] = np.concatenate([LOSS, LOSS], axis=1)
    kwargs["strategy_complexity"] = np.concatenate([COMPLEXITY, COMPLEXITY], axis=1)
    trace = _trace(rational.relative_distance_model, **kwargs)
    for name in ("alpha", "beta", "gamma"):
        assert trace[name]["value"].shape == (2,)
    if pooling == "partial":  # non-centred: standard-normal offsets, deterministic values
        assert trace["alpha"]["type"] == "deterministic"
        offset = trace["alpha_offset"]["fn"]
        assert offset.event_shape == (2,)
        assert float(offset.log_prob(jnp.zeros(2))) == pytest.approx(
            2 * -0.5 * math.log(2 * math.pi)
        )
        assert trace["gamma_scale"]["type"] == "sample"
    assert trace["weight_memorizing"]["value"].shape == (2, 3, 4)


def test_held_out_cells_do_not_enter_the_likelihood():
    kwargs = _small_kwargs()
    observed = np.full((1, 3, 4, 2), 0.5)
    mask = np.ones_like(observed, dtype=bool)
    mask[:, 2] = False
    values = {"alpha": 0.5, "beta": 0.3, "gamma": 2.0, "sigma": jnp.array([0.1, 0.2])}

    def density(obs):
        model_kwargs = {**kwargs, "observed_weight": obs, "fit_mask": mask}
        return float(
            numpyro.infer.util.log_density(
                rational.relative_distance_model, (), model_kwargs, values
            )[0]
        )

    changed = observed.copy()
    changed[:, 2] = np.nan  # held-out cells may even be missing
    assert density(changed) == pytest.approx(density(observed))
    changed[:, 0, 0, 0] = 0.9
    assert density(changed) != pytest.approx(density(observed))


def test_relative_distance_likelihood_brute_force():
    kwargs = _small_kwargs()
    observed = np.random.default_rng(1).random((1, 3, 4, 2))
    observed[0, 0, 0, 0] = 0.0
    values = {"alpha": 0.5, "beta": 0.3, "gamma": 2.0, "sigma": jnp.array([0.1, 0.2])}
    model_kwargs = {**kwargs, "observed_weight": observed}
    log_lik = numpyro.infer.util.log_likelihood(
        rational.relative_distance_model,
        {k: jnp.asarray(v)[None] for k, v in values.items()},
        **model_kwargs,
    )["observed_weight"][0]
    log_post = np.asarray(rational.log_posterior(LOSS, COMPLEXITY, STEPS, 0.5, 0.3, 2.0))
    weight = 1 / (1 + np.exp(log_post[1] - log_post[0]))  # (C, D, N)
    sigma = np.array([0.1, 0.2])
    expected = scipy.stats.norm.logpdf(observed, weight[..., None], sigma)
    expected[0, 0, 0, 0] = scipy.stats.norm.logcdf(0.0, weight[0, 0, 0], 0.1)
    np.testing.assert_allclose(log_lik, expected, rtol=1e-8)


def test_outputs_model_dirichlet_around_the_mixture():
    rng = np.random.default_rng(2)
    strategy = rng.dirichlet(np.ones(4), size=(2, 1, 3, 2, 5, 6))  # (Q, C, D, S, B, P, O)
    transformer = rng.dirichlet(np.ones(4), size=(1, 3, 4, 2, 5, 6))  # (C, D, N, S, B, P, O)
    values = {"alpha": 0.5, "beta": 0.3, "gamma": 2.0, "concentration": 50.0}
    kwargs = dict(
        strategy_loss=LOSS,
        strategy_complexity=COMPLEXITY,
        checkpoint=STEPS,
        strategy_prediction=strategy,
        transformer_prediction=transformer,
    )
    log_lik = numpyro.infer.util.log_likelihood(
        rational.outputs_model, {k: jnp.asarray(v)[None] for k, v in values.items()}, **kwargs
    )["transformer_prediction"][0]
    log_post = rational.log_posterior(LOSS, COMPLEXITY, STEPS, 0.5, 0.3, 2.0)
    weight = np.asarray(jax.nn.softmax(log_post, axis=0))
    assert log_lik.shape == (1, 3, 4, 2)  # one term per cell: sequences and positions summed
    c, d, n, s = 0, 2, 1, 1
    mixture = np.einsum("q,qbpo->bpo", weight[:, c, d, n], strategy[:, c, d, s])
    cell = sum(
        scipy.stats.dirichlet.logpdf(transformer[c, d, n, s, b, p], 50.0 * mixture[b, p])
        for b in range(5)
        for p in range(6)
    )
    assert float(log_lik[c, d, n, s]) == pytest.approx(cell, rel=1e-5)


def test_outputs_model_regression_is_normal():
    rng = np.random.default_rng(3)
    strategy = rng.standard_normal((2, 1, 3, 2, 5, 6, 1))
    simulated = _trace(
        rational.outputs_model,
        strategy_loss=LOSS,
        strategy_complexity=COMPLEXITY,
        checkpoint=STEPS,
        strategy_prediction=strategy,
        outcome_kind="regression",
    )
    assert simulated["transformer_prediction"]["value"].shape == (1, 3, 4, 2, 5, 6, 1)
    assert simulated["output_sigma"]["type"] == "sample"


def _small_kwargs(**overrides):
    return (
        dict(
            strategy_loss=LOSS,
            strategy_complexity=COMPLEXITY,
            checkpoint=STEPS,
            num_splits=2,
            num_tasks=np.array([2.0, 8.0, 32.0]),  # read by the smooth models only
        )
        | overrides
    )


# --------------------------------------------------------------------- models (--model)


def _trace_at(fixed, model, **overrides):
    """The trace of ``model`` with the sites of ``fixed`` set: one split, the small grid."""
    kwargs = dict(
        strategy_loss=LOSS, strategy_complexity=COMPLEXITY, checkpoint=STEPS, num_splits=1
    )
    substituted = numpyro.handlers.substitute(rational.relative_distance_model, fixed)
    return _trace(substituted, **(kwargs | {"model": model} | overrides))


def _law_prior_odds(complexity, beta):
    """The law's log prior odds of memorizing, (C, D): a run's level without its offset."""
    return -np.log(2) * (complexity[0] ** beta - complexity[1] ** beta)


def test_anchored_models_sample_the_evidence_at_the_mean_log_checkpoint():
    fixed = {
        "alpha": 0.7,
        "beta": 0.3,
        "evidence_scale": 12.0,
        "offset_scale": 0.25,
        "run_log_prior_odds": _law_prior_odds(COMPLEXITY, 0.3)[..., None],  # no offset
        "sigma": np.array([0.1]),
    }
    trace = _trace_at(fixed, "anchored-offsets")
    reference = math.exp(np.log(STEPS).mean())  # 632.5 for 20 ... 20000
    gamma = 12.0 / reference**0.3
    assert float(trace["gamma"]["value"]) == pytest.approx(gamma, rel=1e-12)
    law = rational.log_posterior(LOSS, COMPLEXITY, STEPS, 0.7, 0.3, gamma)
    np.testing.assert_allclose(trace["log_posterior_odds"]["value"], law[0] - law[1], rtol=1e-10)
    assert "gamma" not in [n for n, site in trace.items() if site["type"] == "sample"]
    prior = trace["evidence_scale"]["fn"]
    assert float(prior.log_prob(12.0)) == pytest.approx(
        scipy.stats.lognorm(3.0).logpdf(12.0), rel=1e-12
    )


# alpha 0.5, beta 0.3, gamma 2 (the evidence at the mean log checkpoint), one split
_LAW_AT_GAMMA_2 = {
    "alpha": 0.5,
    "beta": 0.3,
    "evidence_scale": 2.0 * math.exp(np.log(STEPS).mean()) ** 0.5,
    "offset_scale": 0.25,
    "sigma": np.array([0.1]),
}


def test_run_offsets_shift_each_run_for_all_of_its_training():
    loss = np.concatenate([LOSS, LOSS], axis=1)  # C = 2
    complexity = np.concatenate([COMPLEXITY, COMPLEXITY], axis=1)
    offset = 0.25 * (np.arange(6.0).reshape(2, 3) - 2.5)  # (C, D)
    law = rational.log_posterior(loss, complexity, STEPS, 0.5, 0.3, 2.0)  # (Q, C, D, N)
    fixed = _LAW_AT_GAMMA_2 | {
        "run_log_prior_odds": (_law_prior_odds(complexity, 0.3) + offset)[..., None],
    }
    trace = _trace_at(fixed, "anchored-offsets", strategy_loss=loss, strategy_complexity=complexity)
    np.testing.assert_allclose(trace["run_offset"]["value"][..., 0], offset, rtol=1e-10)
    odds = law[0] - law[1] + offset[..., None]  # the offset shifts every checkpoint alike
    np.testing.assert_allclose(trace["log_posterior_odds"]["value"], odds, rtol=1e-10)
    # the prior: the shift is Normal(0, offset_scale) per run, HalfNormal(1) on the scale
    log_prob = trace["run_log_prior_odds"]["fn"].log_prob(fixed["run_log_prior_odds"])
    expected = scipy.stats.norm(0.0, 0.25).logpdf(offset).sum()
    assert float(log_prob) == pytest.approx(expected, rel=1e-10)
    assert float(trace["offset_scale"]["fn"].log_prob(0.25)) == pytest.approx(
        scipy.stats.halfnorm.logpdf(0.25), rel=1e-12
    )


def test_run_offsets_leave_generalizing_as_the_reference_with_three_strategies():
    law_log_prior = -np.arange(9.0).reshape(3, 1, 3)  # (Q, C, D)
    law_odds = np.moveaxis(law_log_prior[[0, 2]] - law_log_prior[1], 0, -1)  # (C, D, Q - 1)
    offsets = numpyro.handlers.substitute(
        rational.run_offsets,
        {"offset_scale": 1.0, "run_log_prior_odds": law_odds + np.array([1.0, -2.0])},
    )
    got = np.asarray(numpyro.handlers.seed(offsets, 0)(law_log_prior, rational.Priors()))
    assert got.shape == (3, 1, 3)
    np.testing.assert_array_equal(got[1], 0.0)
    np.testing.assert_allclose(got[0], 1.0)
    np.testing.assert_allclose(got[2], -2.0)


def _latent_sites(model):
    """The parameters ``relative_distance_model`` samples (it simulates the weights here)."""
    trace = _trace(rational.relative_distance_model, **_small_kwargs(model=model))
    return {n for n, site in trace.items() if site["type"] == "sample"} - {"observed_weight"}


def _form_sites(form: vocabulary.ModelForm) -> set[str]:
    """The latent sites a model of this form must sample: the form's features, one by one."""
    sites = {"alpha", "beta", "sigma", "evidence_scale" if form.anchored else "gamma"}
    if form.offsets and form.smooth:
        sites |= {"offset_scale", "smooth_scale", "run_offset_innovation"}
    elif form.offsets:
        sites |= {"offset_scale", "run_log_prior_odds"}
    if form.drift:
        sites |= {"drift_scale", "drift_length"}
    return sites


def test_the_family_table_gives_each_model_its_sites():
    assert vocabulary.MODELS == (
        "paper",
        "anchored-offsets",
        "anchored-offsets-drift",
        "anchored-smooth-offsets",
        "anchored-smooth-offsets-drift",
    )
    assert vocabulary.MODELS == tuple(vocabulary.MODEL_FAMILY)
    assert vocabulary.MODEL_FAMILY["paper"] == vocabulary.ModelForm()  # the authors' law
    assert vocabulary.DEFAULT_MODEL in vocabulary.MODELS
    assert vocabulary.OUTPUTS_DEFAULT_MODEL in vocabulary.MODELS
    for model, form in vocabulary.MODEL_FAMILY.items():
        assert _latent_sites(model) == _form_sites(form), model
    assert vocabulary.without_drift("anchored-offsets-drift") == "anchored-offsets"
    assert vocabulary.without_drift("paper") == "paper"
    assert vocabulary.without_drift("anchored-smooth-offsets-drift") == "anchored-smooth-offsets"
    with pytest.raises(ValueError, match="smooth offsets need offsets"):
        vocabulary.ModelForm(smooth=True)


def test_a_smooth_model_needs_the_num_tasks_values():
    kwargs = _small_kwargs(model="anchored-smooth-offsets")
    del kwargs["num_tasks"]
    with pytest.raises(ValueError, match="needs num_tasks"):
        _trace(rational.relative_distance_model, **kwargs)


# The smooth offsets (``smooth_run_offsets``): num_tasks in no order, x = log D
SMOOTH_TASKS = np.array([64.0, 2.0, 8.0, 512.0, 16.0])
OFFSET_SCALE, SMOOTH_SCALE = 0.7, 0.3


def _walk_matrix(num_tasks=SMOOTH_TASKS):
    """The linear map from the innovations (D,) to the offsets (D,) of one configuration."""

    def walk(z):
        x = np.log(num_tasks)
        return rational._random_walk(z[None, :, None], x, OFFSET_SCALE, SMOOTH_SCALE)[0, :, 0]

    return np.asarray(jax.jacobian(walk)(jnp.zeros(num_tasks.size)))


def test_smooth_offsets_are_a_brownian_motion_in_log_num_tasks():
    """Cov(o_i, o_j) = offset_scale ** 2 + smooth_scale ** 2 (min(x_i, x_j) - x_min)."""
    walk = _walk_matrix()
    x = np.log(SMOOTH_TASKS)
    expected = OFFSET_SCALE**2 + SMOOTH_SCALE**2 * (np.minimum.outer(x, x) - math.log(2.0))
    np.testing.assert_allclose(walk @ walk.T, expected, rtol=1e-12, atol=1e-15)
    covariance = rational.smooth_offset_covariance(SMOOTH_TASKS, OFFSET_SCALE, SMOOTH_SCALE)
    np.testing.assert_allclose(covariance, expected, rtol=1e-12)
    # each innovation enters its own num_tasks and every larger one, not the smaller
    smaller = np.less.outer(x, x)  # [i, j]: D_i < D_j
    assert np.all(walk[smaller] == 0.0) and np.all(walk[~smaller] != 0.0)


def _conditional(covariance, target, given, values):
    """Mean and variance of offset ``target`` given the offsets ``values`` at ``given``."""
    cross = covariance[target, given]
    weights = np.linalg.solve(covariance[np.ix_(given, given)], cross)
    return weights @ values, covariance[target, target] - cross @ weights


def test_a_num_tasks_between_fitted_ones_gets_the_brownian_bridge():
    """The prior the model gives a held-out D=16, given the offsets of every other run, is
    the linear interpolation in log D between its neighbours 8 and 64 with the bridge's
    variance; D=512 beyond the largest keeps the last offset, its variance growing."""
    walk = _walk_matrix()
    covariance = walk @ walk.T  # the model's own covariance of the offsets
    known = {64.0: 0.9, 2.0: -0.4, 8.0: 0.2, 512.0: -0.3}
    given = [int(np.flatnonzero(SMOOTH_TASKS == d)[0]) for d in known]
    values = np.array(list(known.values()))
    middle = int(np.flatnonzero(SMOOTH_TASKS == 16.0)[0])
    mean, variance = _conditional(covariance, middle, given, values)
    x8, x16, x64 = np.log([8.0, 16.0, 64.0])
    share = (x16 - x8) / (x64 - x8)  # 1/3
    assert mean == pytest.approx(0.2 + share * (0.9 - 0.2), rel=1e-10)
    bridge = SMOOTH_SCALE**2 * (x16 - x8) * (x64 - x16) / (x64 - x8)
    assert variance == pytest.approx(bridge, rel=1e-10)
    assert mean == pytest.approx(0.2 + 0.7 / 3, rel=1e-10)  # in numbers
    assert variance == pytest.approx(0.09 * 2 / 3 * math.log(2.0), rel=1e-10)

    del known[512.0]  # the largest, given the others
    given, values = given[:3], values[:3]
    last = int(np.flatnonzero(SMOOTH_TASKS == 512.0)[0])
    mean, variance = _conditional(covariance, last, given, values)
    assert mean == pytest.approx(0.9, rel=1e-10)
    assert variance == pytest.approx(SMOOTH_SCALE**2 * math.log(8.0), rel=1e-10)


def test_the_smooth_model_shifts_each_run_by_its_walk():
    """Through the model: the innovations' sites, run_offset from them, the law's odds
    shifted by it at every checkpoint, and the prior of each site."""
    num_tasks = np.array([2.0, 8.0, 32.0])
    innovation = np.array([0.5, -1.0, 2.0])[None, :, None]  # (C, D, Q - 1)
    fixed = _LAW_AT_GAMMA_2 | {"smooth_scale": 0.4, "run_offset_innovation": innovation}
    trace = _trace_at(fixed, "anchored-smooth-offsets", num_tasks=num_tasks)
    step = 0.4 * math.sqrt(math.log(4.0))  # 2 -> 8 and 8 -> 32 alike
    offset = np.cumsum([0.25 * 0.5, step * -1.0, step * 2.0])
    np.testing.assert_allclose(trace["run_offset"]["value"][0, :, 0], offset, rtol=1e-12)
    law_odds = _law_prior_odds(COMPLEXITY, 0.3)
    np.testing.assert_allclose(
        trace["run_log_prior_odds"]["value"][..., 0], law_odds + offset, rtol=1e-12
    )
    law = rational.log_posterior(LOSS, COMPLEXITY, STEPS, 0.5, 0.3, 2.0)
    odds = law[0] - law[1] + offset[None, :, None]
    np.testing.assert_allclose(trace["log_posterior_odds"]["value"], odds, rtol=1e-10)
    assert trace["run_offset"]["type"] == "deterministic"
    assert float(trace["run_offset_innovation"]["fn"].log_prob(innovation)) == pytest.approx(
        scipy.stats.norm.logpdf(innovation).sum(), rel=1e-12
    )
    assert float(trace["smooth_scale"]["fn"].log_prob(0.4)) == pytest.approx(
        scipy.stats.halfnorm(scale=0.5).logpdf(0.4), rel=1e-12
    )


def test_a_model_has_the_features_of_its_row_whatever_its_name(monkeypatch):
    """Features are read from the table, never from the name: a row named like a drift
    model that adds only offsets samples offsets and gamma, and no drift."""
    form = vocabulary.ModelForm(offsets=True)
    monkeypatch.setitem(vocabulary.MODEL_FAMILY, "anchored-drift", form)
    assert _latent_sites("anchored-drift") == _form_sites(form)


def test_a_removed_model_is_refused_with_its_replacement():
    for removed in vocabulary.REMOVED_MODELS:
        with pytest.raises(ValueError, match=f"model '{removed}' was removed; the default"):
            _trace(rational.relative_distance_model, **_small_kwargs(model=removed))


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="model must be one of"):
        _trace(
            rational.relative_distance_model,
            strategy_loss=LOSS,
            strategy_complexity=COMPLEXITY,
            checkpoint=STEPS,
            model="bogus",
        )


def _drift_case(seed=0):
    """Random runs with gaps: a forecast (the last checkpoints held out), a held-out cell in
    the middle, random holes, one run and split with no fitted cell, one with a single one."""
    rng = np.random.default_rng(seed)
    steps = np.sort(rng.uniform(1.0, 9.0, 11)).round(3)  # log steps, uneven gaps
    steps = np.exp(steps)
    shape = (2, 3, steps.size, 2)  # (C, D, N, S)
    expected = rng.uniform(0.1, 0.9, shape)
    history = np.clip(expected + rng.normal(0, 0.1, shape), 0, 1)
    fit_mask = rng.uniform(size=shape) < 0.7
    fit_mask[0, 0, :, :] = True
    fit_mask[0, 0, 8:, :] = False  # a forecast: the last three checkpoints held out
    fit_mask[0, 1, :, :] = True
    fit_mask[0, 1, 4, 0] = False  # one checkpoint in the middle, in split 0
    fit_mask[1, 2, :, 1] = False  # a run and split without fitted cells
    fit_mask[1, 1, :, 0] = False
    fit_mask[1, 1, 5, 0] = True  # a single fitted cell
    sigma = np.array([0.05, 0.08])
    return steps, expected, history, fit_mask, sigma


def _drift_values(steps, expected, history, fit_mask, sigma, size=0.15, length=1.3):
    substituted = numpyro.handlers.substitute(
        rational.drift, data={"drift_scale": np.full(2, size), "drift_length": length}
    )
    return substituted(expected, history, steps, fit_mask, sigma, rational.Priors())


def _drift_covariance(steps, sigma, size=0.15, length=1.3):
    time = np.log(steps)
    drift = size**2 * np.exp(-np.abs(time[:, None] - time[None, :]) / length)
    return drift, drift + sigma**2 * np.eye(len(steps))


def _runs():
    return [(c, d, s) for c in range(2) for d in range(3) for s in range(2)]


def test_drift_conditionals_multiply_to_the_joint_normal_of_the_fitted_cells():
    steps, expected, history, fit_mask, sigma = _drift_case()
    loc, scale, _ = _drift_values(steps, expected, history, fit_mask, sigma)
    for c, d, s in _runs():
        kept = fit_mask[c, d, :, s]
        if not kept.any():
            continue
        _, covariance = _drift_covariance(steps, sigma[s])
        residual = (history - expected)[c, d, kept, s]
        joint = scipy.stats.multivariate_normal(cov=covariance[np.ix_(kept, kept)])
        pieces = scipy.stats.norm.logpdf(
            history[c, d, kept, s], loc[c, d, kept, s], scale[c, d, kept, s]
        )
        np.testing.assert_allclose(pieces.sum(), joint.logpdf(residual), rtol=1e-10)


def test_drift_predicts_every_cell_by_the_normal_conditional_on_the_other_fitted_ones():
    """Against a dense float64 solve: held-out cells given every fitted cell of their run
    (inside and after the fitted window, and runs with none or one fitted cell), fitted
    cells given the others (leave-one-out), to 1e-10."""
    for seed in range(3):
        steps, expected, history, fit_mask, sigma = _drift_case(seed)
        loc, scale, predicted = _drift_values(steps, expected, history, fit_mask, sigma)
        for c, d, s in _runs():
            drift, covariance = _drift_covariance(steps, sigma[s])
            residual = (history - expected)[c, d, :, s]
            kept = fit_mask[c, d, :, s]
            for i in range(steps.size):
                others = kept.copy()
                others[i] = False
                weight = np.linalg.solve(covariance[np.ix_(others, others)], drift[others, i])
                mean = weight @ residual[others]
                np.testing.assert_allclose(
                    predicted[c, d, i, s],
                    np.clip(expected[c, d, i, s] + mean, 0, 1),
                    rtol=1e-10,
                    atol=1e-12,
                )
                if kept[i]:
                    continue
                variance = covariance[i, i] - weight @ drift[others, i]
                np.testing.assert_allclose(
                    loc[c, d, i, s], expected[c, d, i, s] + mean, rtol=1e-10, atol=1e-12
                )
                np.testing.assert_allclose(scale[c, d, i, s] ** 2, variance, rtol=1e-10)


def test_drift_without_history_draws_each_cell_from_its_marginal():
    steps, expected, _, fit_mask, sigma = _drift_case()
    loc, scale, smoothed = _drift_values(steps, expected, None, fit_mask, sigma)
    np.testing.assert_allclose(loc, expected)
    np.testing.assert_allclose(smoothed, expected)
    np.testing.assert_allclose(scale**2, 0.15**2 + sigma**2)

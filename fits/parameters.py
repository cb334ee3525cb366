"""The rational model's parameters alpha, beta, gamma: their priors, the ablations that fix
one of them, and their pooling over model configurations.

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

The models (``MODELS``, ``ricl fit --model``; what each adds is ``vocabulary.MODEL_FAMILY``)
differ in how gamma is sampled and in what is added to the law's log posterior
(``rational_icl.fits.model``):

- ``paper``: alpha, beta, gamma as above, the authors' form;
- ``anchored-offsets``: gamma replaced by ``evidence_scale`` ~ LogNormal(0, 3), the evidence
  gamma * N_ref ** (1 - alpha) at N_ref, the geometric-mean checkpoint, and gamma derived
  from it (the data pin the evidence, and alpha is only its growth exponent); plus
  ``run_offset``, a per-run shift of each strategy's log posterior against generalizing,
  Normal(0, ``offset_scale``) independently per run, ``offset_scale`` ~ HalfNormal(1)
  (sampled as the run's level, ``run_log_prior_odds``: ``model.run_offsets``);
- ``anchored-offsets-drift``: ``anchored-offsets`` whose observed weights drift from the law
  along training, a Gaussian process in log N per run and split (``model.drift``):
  ``drift_scale`` ~ HalfNormal(0.2), its size in weight units, and ``drift_length`` ~
  LogNormal(0, 1), how many e-folds of training steps it takes to forget;
- ``anchored-smooth-offsets`` and ``anchored-smooth-offsets-drift``: the same, with offsets
  that vary smoothly in log num_tasks instead of independently per run, a random walk from
  the smallest num_tasks (``model.smooth_run_offsets``): Normal(0, ``offset_scale``) there,
  increments Normal(0, ``smooth_scale`` ** 2 * the step in log num_tasks), ``smooth_scale`` ~
  HalfNormal(0.5). A num_tasks without fitted cells gets its neighbours' offsets
  interpolated in log num_tasks, not the law alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.transforms import SigmoidTransform

from rational_icl.vocabulary import ABLATIONS, MODELS, POOLINGS  # noqa: F401 (used by callers)


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
    evidence_scale_log_loc: float = 0.0  # anchored models: gamma * N_ref ** (1 - alpha)
    evidence_scale_log_scale: float = 3.0
    offset_scale: float = 1.0  # run offsets: half-normal scale of their spread
    smooth_scale: float = 0.5  # smooth offsets: half-normal scale of their random walk's step
    drift_scale: float = 0.2  # drift models: half-normal scale of the drift's size
    drift_length_log_loc: float = 0.0  # its length scale, in natural-log training steps
    drift_length_log_scale: float = 1.0


def rational_parameters(
    *,
    ablation: str = "none",
    pooling: str = "complete",
    num_configurations: int = 1,
    priors: Priors = Priors(),
    centred: bool = False,
    anchored: bool = False,
):
    """Sample sites ``alpha``, ``beta``, ``gamma`` (deterministic where an ablation fixes one).

    With ``anchored`` the third site is ``evidence_scale`` ~ LogNormal(evidence_scale_log_loc,
    evidence_scale_log_scale), returned in gamma's place for the caller to turn into gamma.

    ``pooling="complete"`` gives scalars; ``"none"`` independent values per configuration;
    ``"partial"`` per-configuration values drawn from a population on the logit (alpha) or
    log (beta, gamma) scale, with sites ``alpha_loc``, ``alpha_scale`` and the like.
    Non-centred by default: ``loc + scale * offset`` with ``offset ~ Normal(0, 1)`` (sites
    ``alpha_offset``...; ``alpha`` deterministic), which samples well when each
    configuration's data say little. ``centred=True``: ``alpha ~ LogitNormal(alpha_loc,
    alpha_scale)``, ``beta ~ LogNormal(beta_loc, beta_scale)``... directly, which samples
    (and Laplace-approximates) far better when every configuration has many informative
    cells (the paper's grids: benchmarks/fits.py --grid paper).
    """
    check_choice("ablation", ablation, ABLATIONS)
    check_choice("pooling", pooling, POOLINGS)
    shape = () if pooling == "complete" else (num_configurations,)
    if ablation == "linear-complexity":
        beta_prior = (priors.linear_beta_log_loc, priors.linear_beta_log_scale)
    else:
        beta_prior = (priors.beta_log_loc, priors.beta_log_scale)
    specs = {  # prior (loc, scale) on the link scale, inverse link, value when fixed
        "alpha": ((priors.alpha_logit_loc, priors.alpha_logit_scale), jax.nn.sigmoid, 0.0),
        "beta": (beta_prior, jnp.exp, 1.0),
        "gamma": ((priors.gamma_log_loc, priors.gamma_log_scale), jnp.exp, 1.0),
    }
    if anchored:
        if ablation == "unit-gamma":
            raise ValueError("the unit-gamma ablation fixes gamma: use model paper")
        prior = (priors.evidence_scale_log_loc, priors.evidence_scale_log_scale)
        specs["evidence_scale"] = (prior, jnp.exp, 1.0)
        del specs["gamma"]
    fixed_name = {"linear-likelihood": "alpha", "fixed-complexity": "beta", "unit-gamma": "gamma"}
    values = []
    for name, ((loc, scale), link, fixed) in specs.items():
        if fixed_name.get(ablation) == name:
            values.append(numpyro.deterministic(name, jnp.full(shape, fixed)))
        elif pooling == "partial":
            population_loc = numpyro.sample(f"{name}_loc", dist.Normal(loc, scale))
            population_scale = numpyro.sample(
                f"{name}_scale", dist.HalfNormal(priors.population_scale)
            )
            if centred:
                prior = _linked(name, population_loc, population_scale).expand(shape)
                values.append(numpyro.sample(name, prior.to_event(1)))
            else:
                offset = numpyro.sample(
                    f"{name}_offset", dist.Normal(0.0, 1.0).expand(shape).to_event(1)
                )
                raw = population_loc + population_scale * offset
                values.append(numpyro.deterministic(name, link(raw)))
        else:
            prior = _linked(name, loc, scale)
            if shape:
                prior = prior.expand(shape).to_event(1)
            values.append(numpyro.sample(name, prior))
    return tuple(values)


def _linked(name: str, loc, scale):
    """Normal(loc, scale) on the logit (alpha) or log (beta, gamma) scale."""
    if name == "alpha":
        return dist.TransformedDistribution(dist.Normal(loc, scale), SigmoidTransform())
    return dist.LogNormal(loc, scale)


def check_choice(name: str, value: str, allowed) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed`` (the models' own checks)."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

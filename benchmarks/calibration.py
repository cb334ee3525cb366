"""Simulation-based calibration (SBC) of the relative-distance fit; prints a table.

Each replication draws alpha, beta, gamma, sigma from the model's priors, narrowed to the
region where a 30-checkpoint grid shows transitions (``SBC_PRIORS``; the package's default
priors are wider, and their draws are often uninformative all-0 or all-1 grids that only
test the prior), simulates the
observed weights on memorizing for a grid of 11 num_tasks x 30 checkpoints x 2 splits
(realistic losses and complexities), and fits them (the default held-out split: 80% of
checkpoints and num_tasks fitted) with ``--method nuts`` (default: 1 chain, 200 warm-up,
200 draws, started at the MAP) or ``--method laplace`` (MAP and 200 draws of its Laplace
approximation, as ``ricl fit --method map``). For a calibrated fit the rank of the true
value among the posterior draws is uniform and the central 50% / 90% intervals contain the
truth 50% / 90% of the time.

Printed: rank histograms (10 bins of 100 thinned draws), a chi-square test of uniformity,
interval coverage, divergences. Usage::

    python benchmarks/calibration.py [--replications 100] [--method nuts|laplace] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
import scipy.stats
import xarray as xr
from numpyro.infer import MCMC, NUTS, Predictive

from rational_icl.fits import inference
from rational_icl.fits import model as rational

PARAMETERS = ("alpha", "beta", "gamma")
NUM_TASKS = 2 ** np.arange(1, 12)
STEPS = np.unique(np.geomspace(20, 1e5, 30).round()).astype(np.int64)
NUM_BINS = 10
KEPT_DRAWS = 100
SBC_PRIORS = rational.Priors(
    alpha_logit_scale=0.5,  # alpha in about (0.27, 0.73)
    beta_log_loc=float(np.log(0.3)),
    beta_log_scale=0.3,
    gamma_log_loc=float(np.log(3.0)),
    gamma_log_scale=0.5,
    sigma_scale=0.1,
)


def template() -> xr.Dataset:
    """A behaviour dataset whose observations are placeholders (replaced per replication)."""
    d = NUM_TASKS.astype(float)
    return xr.Dataset(
        {
            "relative_distance": (
                ("num_tasks", "checkpoint", "split"),
                np.full((len(d), len(STEPS), 2), 0.5),
            ),
            "strategy_loss": (
                ("strategy", "num_tasks"),
                np.stack([0.2 - 0.15 * (2 / d) ** 0.8, np.full_like(d, 0.2)]),
            ),
            "strategy_complexity": (
                ("strategy", "num_tasks"),
                np.stack([1500 + 64 * 8 * d, np.full_like(d, 1200.0)]),
            ),
        },
        coords={
            "num_tasks": NUM_TASKS,
            "checkpoint": STEPS,
            "split": ["id", "ood"],
            "strategy": ["memorizing", "generalizing"],
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("nuts", "laplace"), default="nuts")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()

    settings = inference.FitSettings(priors=SBC_PRIORS)
    inputs = inference._model_inputs(template(), settings)
    # One problem and one sampler for every replication: only the data change, so the
    # compiled log density and NUTS are reused (arrays are arguments, not constants).
    problem = inference._Problem(
        rational.relative_distance_model, inputs.kwargs, "relative_distance"
    )
    prior_data = {k: v for k, v in problem.data.items() if k != "relative_distance"}
    key_prior, key_fit = jax.random.split(jax.random.PRNGKey(args.seed))
    prior = Predictive(problem.model, num_samples=args.replications)(key_prior, **prior_data)
    kernel = NUTS(problem.model, dense_mass=True, target_accept_prob=0.9)
    mcmc = MCMC(
        kernel,
        num_warmup=args.warmup,
        num_samples=args.draws,
        progress_bar=False,
        jit_model_args=True,
    )
    thin = max(args.draws // KEPT_DRAWS, 1)
    ranks = {name: [] for name in PARAMETERS}
    covered = {(name, level): [] for name in PARAMETERS for level in (50, 90)}
    divergent_fits = 0
    start_time = time.perf_counter()
    for replication, key in enumerate(jax.random.split(key_fit, args.replications)):
        data = {**problem.data, "relative_distance": prior["relative_distance"][replication]}
        problem.data = data
        start, _ = problem.map_estimate(problem.best_prior_draw(key, 64))
        if args.method == "laplace":
            samples = _laplace_draws(problem, start, args.draws, replication)
        else:
            mcmc.run(key, init_params=problem.unravel(start), extra_fields=("diverging",), **data)
            samples = mcmc.get_samples()
            divergent_fits += int(np.any(mcmc.get_extra_fields()["diverging"]))
        for name in PARAMETERS:
            truth = float(prior[name][replication])
            draws = np.asarray(samples[name])
            ranks[name].append(int(np.sum(draws[::thin][:KEPT_DRAWS] < truth)))
            for level in (50, 90):
                low, high = np.quantile(draws, [0.5 - level / 200, 0.5 + level / 200])
                covered[name, level].append(low <= truth <= high)
        if (replication + 1) % 10 == 0:
            elapsed = time.perf_counter() - start_time
            print(f"{replication + 1} replications, {elapsed:.0f} s", file=sys.stderr)
    seconds = time.perf_counter() - start_time

    kept = min(KEPT_DRAWS, len(range(0, args.draws, thin)))
    method = (
        f"NUTS 1 chain x {args.warmup} warm-up x {args.draws} draws from the MAP"
        if args.method == "nuts"
        else f"MAP + {args.draws} Laplace draws"
    )
    print(
        f"SBC: {args.replications} replications, prior draws of alpha, beta, gamma, sigma; "
        f"{method}; grid {len(NUM_TASKS)} num_tasks x {len(STEPS)} checkpoints x 2 splits"
    )
    print(f"time {seconds:.0f} s; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"fits with any divergence: {divergent_fits}/{args.replications}")
    edges = np.linspace(0, kept + 1, NUM_BINS + 1)
    print(
        f"{'parameter':<10} {'rank histogram (' + str(NUM_BINS) + ' bins)':<46} "
        f"{'chi2 p':>7} {'50% cov':>8} {'90% cov':>8}"
    )
    for name in PARAMETERS:
        counts, _ = np.histogram(ranks[name], bins=edges)
        p_value = scipy.stats.chisquare(counts).pvalue
        cover50 = np.mean(covered[name, 50])
        cover90 = np.mean(covered[name, 90])
        histogram = " ".join(f"{c:3d}" for c in counts)
        print(f"{name:<10} {histogram:<46} {p_value:7.3f} {cover50:8.2f} {cover90:8.2f}")


def _laplace_draws(problem, optimum, num_draws: int, seed: int) -> dict:
    """Draws of the Laplace approximation at the MAP (unconstrained scale), as the package's
    ``--method map``."""
    eigenvalues, eigenvectors = np.linalg.eigh(problem.hessian(optimum))
    scale = np.where(eigenvalues > 1e-8, 1.0 / np.sqrt(np.abs(eigenvalues)), 1.0)
    noise = np.random.default_rng(seed).standard_normal((num_draws, optimum.size))
    flat = np.asarray(optimum) + (noise * scale) @ eigenvectors.T
    draws = [problem.constrain(problem.unravel(x)) for x in flat]
    return {name: np.stack([d[name] for d in draws]) for name in draws[0]}


if __name__ == "__main__":
    main()

"""Speed of the rational-model fits on the paper-sized grid; prints a table.

Grid: 11 num_tasks values x 100 checkpoints x 2 splits, simulated from the model with
alpha = 0.5, beta = 0.3, gamma = 3 (K_M = 1500 + 64·D·8 bits, K_G = 1200 bits).

- NUTS, 4 chains x 1000 warm-up x 1000 draws, relative-distance model (target < 60 s)
- MAP (+ Laplace draws), relative-distance model (target < 5 s)
- MAP of the ``outputs`` model with 64 sequences x 128 positions x 8 outcomes per cell
  (target < 60 s; the transformer's predictions are the mixture plus logit noise). The
  fit reduces the predictions once to per-cell sums and Dirichlet-normaliser nodes
  (``rational_icl.fits.sufficient.dirichlet_statistics``); that is included in the time. The
  strategies here are random Dirichlet draws, the worst case for the node count. Its
  100 Laplace draws each get a pointwise log likelihood (for PSIS-LOO); the second outputs
  row takes the default 4 x 1000 draws, whose log likelihood is thinned to 1000 draws: the
  difference between the rows is mostly the cost of those extra 900 evaluations.

``--grid paper``: the paper-categorical grid instead, 3 MLP widths x 3 context lengths x
3 num_dims = 27 configurations, each 11 num_tasks x 100 checkpoints x 2 splits (59 400
cells), simulated with per-configuration alpha, beta, gamma drawn around the truth, fitted
with centred partial pooling (targets: MAP + Laplace < 30 s, NUTS 4 x 1000 + 1000 < 600 s,
peak RSS < 8 GB, R-hat <= 1.01, the 90% intervals of the population means and of the
per-configuration values cover the truth at about the nominal rate). Each fit runs in a
fresh process (its own peak RSS); ``--replications N`` repeats the MAP on N - 1 more grids
for the Laplace intervals' coverage. NUTS uses the Laplace covariance as its mass matrix
(``mass_matrix="laplace"``): NumPyro's windowed dense adaptation estimates an 89 x 89
matrix from 25 and then 50 draws, and the draws in between take hundreds of leapfrog steps.

Measured (2 shared cores, load 2.5-4 from other work; CPU time is the fit process's):
MAP + Laplace 21-34 s wall, 29-34 s CPU, peak RSS 2.6 GiB (was 281 s and 9.7 GiB); its
90% intervals covered 90% / 89% / 92% of 243 per-configuration alpha / beta / gamma over 9
grids, the population locations 8, 6 and 8 times of 9. NUTS 236-359 s wall, 457-690 s
CPU, peak RSS 5.2 GiB, R-hat 1.0056, bulk ESS >= 8000, no divergence, 15 leapfrog steps
per draw, 89% / 93% / 93% coverage of the 27 configurations. Non-centred (the default of
``pooling="partial"``) the joint mode runs off (intervals five times too wide) and NUTS did
not finish 250 draws of one chain in 15 minutes.

``--grid paper --model anchored-offsets-drift``: the grid simulated from the default model
(``DRIFT_TRUTH``: run offsets, an Ornstein-Uhlenbeck drift in log N) and fitted with it.
Measured (2 shared AMD EPYC cores, load 5-7): MAP + Laplace 428-582 s wall, 236-277 s CPU,
3.9 GiB; its 90% intervals covered alpha 74-96% and gamma 74-93% of the 27 configurations,
beta 0-11%, alpha_loc, but not beta_loc, offset_scale or the drift's parameters. NUTS was
killed at 23 GB of memory before it finished (not yet usable at this scale; docs/science.md).
Why (probed on one third of the grid, 9 configurations, 2 shared AMD EPYC cores): with a free
level per run, beta is pinned only by how each configuration's 11 levels follow K_M^beta, and
the centred population's MAP puts every configuration at one beta (0.2817 in all nine, their
truths 0.27-0.31): beta_scale goes to 0, where a centred hierarchy's density has no bound. The
MAP of the model without the drift (the drift's start) then runs 100 L-BFGS and 100 Newton
iterations without converging (~400 s of the full grid's MAP); the Hessian at the start has
eigenvalues up to 1.3e21 and 10 negative ones, so the Laplace mass matrix is useless: NUTS
adapts its step size to 2e-50 and every transition diverges (one leapfrog step each; the
memory grew by ~1 GB per 30 s during that warm-up). With ``mass_matrix="adapted"`` instead,
50 + 50 draws of the third of the grid did not finish in 10 minutes. The default model at
this scale needs a population whose scale cannot collapse (decentred during optimisation,
as the run levels are), not only more memory.

Times are wall-clock for the whole ``rational_icl.fits.inference.fit`` call, JIT
compilation included, and the CPU time of the process beside them. Usage::

    python benchmarks/fits.py [--skip-outputs] [--sequences 64 --positions 128 --outcomes 8]
    python benchmarks/fits.py --grid paper [--skip-nuts] [--replications 10] [--model M]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor

from rational_icl.pipeline import configure_jax

# float64 and one CPU device per chain, before JAX starts; at import, not under __main__,
# because the spawned worker processes import this file again
configure_jax(4)

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from rational_icl.fits import inference  # noqa: E402
from rational_icl.fits.diagnostics import diagnostics  # noqa: E402
from rational_icl.fits.inputs import FitSettings  # noqa: E402
from rational_icl.fits.simulate import rational_log_posterior, rational_weight  # noqa: E402
from rational_icl.fits.tree import parameter_names  # noqa: E402
from rational_icl.vocabulary import MODELS, form_of  # noqa: E402

TRUTH = {"alpha": 0.5, "beta": 0.3, "gamma": 3.0}
NUM_TASKS = 2 ** np.arange(1, 12)
STEPS = np.unique(np.geomspace(20, 1e5, 100).round()).astype(np.int64)


def _grid():
    d = NUM_TASKS.astype(float)
    loss = np.stack([0.2 - 0.15 * (2 / d) ** 0.8, np.full_like(d, 0.2), np.full_like(d, 0.6)])
    complexity = np.stack([1500 + 64 * 8 * d, np.full_like(d, 1200.0), np.full_like(d, 600.0)])
    weights = rational_weight(  # (N, D, Q=2)
        STEPS[:, None], loss[:2].T, complexity[:2].T, TRUTH["alpha"], TRUTH["beta"], TRUTH["gamma"]
    )
    return loss, complexity, weights[..., 0].T  # w_M (D, N)


def behaviour(seed: int = 0) -> xr.Dataset:
    loss, complexity, weight = _grid()
    rng = np.random.default_rng(seed)
    noise = 0.05 * rng.standard_normal((*weight.shape, 2))
    observed = np.clip(weight[..., None] + noise, 0.0, 1.0)
    return xr.Dataset(
        {
            "relative_distance": (("num_tasks", "checkpoint", "split"), observed),
            "strategy_loss": (("strategy", "num_tasks"), loss),
            "strategy_complexity": (("strategy", "num_tasks"), complexity),
        },
        coords={
            "num_tasks": NUM_TASKS,
            "checkpoint": STEPS,
            "split": ["id", "ood"],
            "strategy": ["memorizing", "generalizing", "constant"],
        },
        attrs={"setting": "categorical-sequence"},
    )


def runs(num_sequences: int, num_positions: int, num_outcomes: int, seed: int = 0) -> xr.Dataset:
    """In-memory predictions: strategies (Dirichlet draws), transformer = mixture + noise."""
    _, _, weight = _grid()
    rng = np.random.default_rng(seed)
    shape = (len(NUM_TASKS), 2, num_sequences, num_positions)
    strategy = rng.dirichlet(np.ones(num_outcomes), size=(2, *shape)).astype(np.float32)
    transformer = np.empty((len(NUM_TASKS), len(STEPS), *shape[1:], num_outcomes), np.float32)
    for d in range(len(NUM_TASKS)):  # one num_tasks at a time keeps the temporaries small
        w = weight[d][:, None, None, None, None].astype(np.float32)
        mixture = w * strategy[0, d] + (1 - w) * strategy[1, d]  # (N, S, B, P, O)
        logits = np.log(mixture) + 0.1 * rng.standard_normal(mixture.shape, dtype=np.float32)
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        transformer[d] = probabilities / probabilities.sum(-1, keepdims=True)
    order = ("split", "sequence", "position", "outcome")
    constant = np.full((1, *shape, num_outcomes), 1 / num_outcomes, np.float32)
    return xr.Dataset(
        {
            "strategy_prediction": (
                ("strategy", "num_tasks", *order),
                np.concatenate([strategy, constant]),
            ),
            "transformer_prediction": (("num_tasks", "checkpoint", *order), transformer),
        },
        coords={
            "strategy": ["memorizing", "generalizing", "constant"],
            "num_tasks": NUM_TASKS,
            "checkpoint": STEPS,
            "split": ["id", "ood"],
        },
        attrs={"setting": "categorical-sequence"},
    )


PAPER = {"mlp_expansion_factor": [0.5, 4.0, 8.0], "context_length": [128, 256, 320],
         "num_dims": [8, 12, 16]}  # fmt: skip


# The default model's extra truth (``--model anchored-offsets-drift``): each run's log odds
# shifted by Normal(0, offset_scale), and an Ornstein-Uhlenbeck drift in log N per run and
# split of stationary spread drift_scale and length drift_length (e-folds of N).
DRIFT_TRUTH = {"offset_scale": 0.5, "drift_scale": 0.04, "drift_length": 1.0}
NOISE = 0.05


def paper_behaviour(seed: int = 0, *, drift: bool = False) -> tuple[xr.Dataset, dict]:
    """The paper-categorical grid simulated from the model; (behaviour, per-config truth).

    ``drift``: from the default model instead (run offsets and the drift, ``DRIFT_TRUTH``).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(len(v) for v in PAPER.values())  # (3, 3, 3)
    truth = {
        "alpha": TRUTH["alpha"] + 0.05 * rng.standard_normal(shape),
        "beta": TRUTH["beta"] + 0.03 * rng.standard_normal(shape),
        "gamma": TRUTH["gamma"] * np.exp(0.1 * rng.standard_normal(shape)),
    }
    d = NUM_TASKS.astype(float)
    loss = np.stack([0.2 - 0.15 * (2 / d) ** 0.8, np.full_like(d, 0.2)])  # (Q, D)
    k = np.asarray(PAPER["num_dims"], float)[:, None]
    complexity_m = 1500 + 64 * k * d  # (num_dims, D)
    complexity = np.stack([complexity_m, np.full_like(complexity_m, 1200.0)])  # (Q, K, D)
    grid = (len(NUM_TASKS), len(STEPS), 2)  # (D, N, S)
    observed = np.empty((*shape, *grid))
    for index in np.ndindex(shape):
        log_post = rational_log_posterior(  # (N, D, Q)
            STEPS[:, None],
            loss.T,
            complexity[:, index[2]].T,
            *(truth[name][index] for name in ("alpha", "beta", "gamma")),
        )
        odds = (log_post[..., 0] - log_post[..., 1]).T[..., None]  # (D, N, 1)
        if drift:
            odds = odds + DRIFT_TRUTH["offset_scale"] * rng.standard_normal((grid[0], 1, 1))
        weight = 1 / (1 + np.exp(-odds))
        if drift:
            weight = weight + _drift_paths(rng, grid)
        observed[index] = np.clip(weight + NOISE * rng.standard_normal(grid), 0.0, 1.0)
    if drift:
        truth |= {"sigma": np.full(2, NOISE), **DRIFT_TRUTH}
    dims = (*PAPER, "num_tasks", "checkpoint", "split")
    data = xr.Dataset(
        {
            "relative_distance": (dims, observed),
            "strategy_loss": (("strategy", "num_tasks"), loss),
            "strategy_complexity": (("strategy", "num_dims", "num_tasks"), complexity),
        },
        coords={
            **PAPER,
            "num_tasks": NUM_TASKS,
            "checkpoint": STEPS,
            "split": ["id", "ood"],
            "strategy": ["memorizing", "generalizing"],
        },  # fmt: skip
        attrs={"setting": "categorical-sequence"},
    )
    return data, truth


def _drift_paths(rng, grid) -> np.ndarray:
    """Ornstein-Uhlenbeck paths in log N (``DRIFT_TRUTH``), (D, N, S), exactly: each step
    keeps exp(-dt / length) of the last value and adds the rest of the stationary spread."""
    size, length = DRIFT_TRUTH["drift_scale"], DRIFT_TRUTH["drift_length"]
    keep = np.exp(-np.diff(np.log(STEPS)) / length)  # (N - 1,)
    shocks = rng.standard_normal((grid[0], grid[2], grid[1]))  # (D, S, N)
    path = np.empty_like(shocks)
    path[..., 0] = size * shocks[..., 0]
    for n in range(1, grid[1]):  # a recursion in time: one step per checkpoint
        fresh = size * np.sqrt(1 - keep[n - 1] ** 2) * shocks[..., n]
        path[..., n] = keep[n - 1] * path[..., n - 1] + fresh
    return np.moveaxis(path, -1, 1)


# The population the configurations' values are drawn from, on the model's link scales
# (logit alpha, log beta, log gamma): the truth for alpha_loc, beta_loc, gamma_loc.
POPULATION = {
    "alpha_loc": 0.0,  # logit(0.5)
    "beta_loc": float(np.log(TRUTH["beta"])),
    "gamma_loc": float(np.log(TRUTH["gamma"])),
}
# The simulated grids have no interpolation distance, so no early checkpoints to drop; the
# model is always named (FitSettings' default is the default model, not the paper's)
PAPER_MAP = FitSettings(
    model="paper", method="map", pooling="partial", centred=True, drop_early=False
)
PAPER_NUTS = FitSettings(
    model="paper", pooling="partial", centred=True, mass_matrix="laplace", drop_early=False
)
SMALL_NUTS = FitSettings(model="paper", drop_early=False)  # the relative-distance rows


def _covered(tree, truth: dict) -> dict[str, np.ndarray]:
    """Whether the 90% equal-tailed interval of each parameter covers its truth, by name."""
    found = {}
    for name, values in truth.items():
        draws = tree.posterior[name]
        low, high = (draws.quantile(q, ("chain", "draw")).values for q in (0.05, 0.95))
        found[name] = (low <= values) & (values <= high)
    return found


def _coverage_text(covered: dict[str, np.ndarray]) -> str:
    return ", ".join(
        f"{name} {np.mean(inside):.0%} of {np.size(inside)}" for name, inside in covered.items()
    )


def paper_main(skip_nuts: bool, replications: int, model: str) -> None:
    """Each fit in a fresh process, so that its peak RSS is its own."""
    data, _ = paper_behaviour(drift=form_of(model).drift)
    cells = int(np.prod([data.sizes[d] for d in data.relative_distance.dims]))
    print(f"grid: 27 configurations x {len(NUM_TASKS)} num_tasks x {len(STEPS)} checkpoints "
          f"x 2 splits = {cells} cells; model {model}, partial pooling, centred")  # fmt: skip
    print(f"{'fit':<24} {'wall s':>7} {'CPU s':>7} {'target':>7} {'peak RSS':>9}  found")
    spawn = multiprocessing.get_context("spawn")  # JAX does not survive a fork
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        print(pool.submit(_paper_fit, "map", 0, model).result(), flush=True)
    covered = {}
    for seed in range(1, replications):  # the Laplace intervals over independent grids
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            for name, inside in pool.submit(_paper_coverage, seed, model).result().items():
                covered.setdefault(name, []).append(inside)
    if covered:
        pooled = {k: np.concatenate(v) for k, v in covered.items()}
        print(f"  MAP + Laplace over {replications - 1} more grids: {_coverage_text(pooled)}")
    if not skip_nuts:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            print(pool.submit(_paper_fit, "nuts", 0, model).result(), flush=True)
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _paper_fit(method: str, seed: int, model: str) -> str:
    """One fit of the paper grid; its table row."""
    data, truth = paper_behaviour(seed, drift=form_of(model).drift)
    if method == "map":
        label, times, tree = _timed("MAP + Laplace", data, _paper_settings(PAPER_MAP, model))
        text, target = "", 30
    else:
        label, times, tree = _timed(
            "NUTS 4 x (1000 + 1000)", data, _paper_settings(PAPER_NUTS, model)
        )
        found = diagnostics(tree)
        rhat = max(float(found[f"{n}_r_hat"].max()) for n in parameter_names(tree))
        ess = min(float(found[f"{n}_ess_bulk"].min()) for n in parameter_names(tree))
        divergences = int(tree.sample_stats.diverging.sum())
        steps = float(tree.sample_stats.n_steps.mean())
        text = (
            f"R-hat max {rhat:.4f}, bulk ESS min {ess:.0f}, {divergences} divergences, "
            f"{steps:.1f} leapfrog steps per draw; "
        )
        target = 600
    wall, cpu = times
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    coverage = _coverage_text(_covered(tree, _population(model) | truth))
    return (
        f"{label:<24} {wall:7.1f} {cpu:7.1f} {'< ' + str(target):>7} {rss:5.2f} GiB  "
        f"{text}90% intervals covering the truth: {coverage}"
    )


def _paper_coverage(seed: int, model: str) -> dict[str, np.ndarray]:
    data, truth = paper_behaviour(seed, drift=form_of(model).drift)
    tree = inference.fit(data, _paper_settings(PAPER_MAP, model))
    return {k: np.ravel(v) for k, v in _covered(tree, _population(model) | truth).items()}


def _paper_settings(settings: FitSettings, model: str) -> FitSettings:
    return dataclasses.replace(settings, model=model)


def _population(model: str) -> dict:
    """The population truths the model samples: an anchored model's population is of the
    evidence at the reference step, not of gamma, and has no gamma_loc."""
    if form_of(model).anchored:
        return {k: v for k, v in POPULATION.items() if k != "gamma_loc"}
    return POPULATION


def _print_row(label: str, times: tuple[float, float], target: int, text: str) -> None:
    wall, cpu = times
    print(f"{label:<34} {wall:7.1f} {cpu:7.1f} {'< ' + str(target):>7}  {text}")


def _timed(label, data, settings, **kwargs):
    """Fit; returns the label, (wall, CPU seconds of this process) and the fit."""
    wall, cpu = time.perf_counter(), time.process_time()
    tree = inference.fit(data, settings, **kwargs)
    return label, (time.perf_counter() - wall, time.process_time() - cpu), tree


def _estimate(tree) -> str:
    estimate = tree.posterior.ds[["alpha", "beta", "gamma"]].median(("chain", "draw"))
    return ", ".join(f"{k}={float(v.mean()):.3g}" for k, v in estimate.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-outputs", action="store_true")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--positions", type=int, default=128)
    parser.add_argument("--outcomes", type=int, default=8)
    parser.add_argument("--grid", choices=("small", "paper"), default="small")
    parser.add_argument("--skip-nuts", action="store_true", help="--grid paper: MAP only")
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="paper",
        help="--grid paper: the model simulated and fitted (anchored-offsets-drift: the "
        "default's offsets and drift, DRIFT_TRUTH)",
    )
    parser.add_argument(
        "--replications",
        type=int,
        default=1,
        help="--grid paper: MAP + Laplace coverage over this many simulated grids",
    )
    args = parser.parse_args()
    if args.grid == "paper":
        paper_main(args.skip_nuts, args.replications, args.model)
        return

    data = behaviour()
    print(f"grid: {len(NUM_TASKS)} num_tasks x {len(STEPS)} checkpoints x 2 splits")
    print(f"truth: {', '.join(f'{k}={v}' for k, v in TRUTH.items())}")
    print(f"{'fit':<34} {'wall s':>7} {'CPU s':>7} {'target':>7}  estimate")
    label, times, tree = _timed("NUTS 4x1000+1000, rel.-distance", data, SMALL_NUTS)
    divergences = int(tree.sample_stats.diverging.sum())
    _print_row(label, times, 60, f"{_estimate(tree)}; {divergences} divergences")
    label, times, tree = _timed(
        "MAP + Laplace, rel.-distance", data, dataclasses.replace(SMALL_NUTS, method="map")
    )
    _print_row(label, times, 5, _estimate(tree))
    if not args.skip_outputs:
        predictions = runs(args.sequences, args.positions, args.outcomes)
        size = f"{args.sequences}x{args.positions}x{args.outcomes}"
        outputs = dataclasses.replace(SMALL_NUTS, observation="outputs", method="map")
        settings = dataclasses.replace(outputs, chains=1, draws=100)
        label, times, tree = _timed(f"MAP, outputs ({size}/cell)", data, settings, runs=predictions)
        _print_row(label, times, 60, _estimate(tree))
        label, times, tree = _timed("  same, 4x1000 draws", data, outputs, runs=predictions)
        kept = tree.log_likelihood.sizes["draw"]
        _print_row(label, times, 60, f"{_estimate(tree)}; log lik. on {kept} draws per chain")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"peak RSS {rss:.2f} GiB")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

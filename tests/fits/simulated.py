"""Behaviour datasets simulated from the rational model itself, and a helper for MAP
fits of the ``outputs`` model, shared by the tests of rational_icl.fits."""

import numpy as np
import numpyro
import xarray as xr

from rational_icl.fits import inference, inputs
from rational_icl.fits import model as rational

TRUTH = {"alpha": 0.5, "beta": 0.3, "gamma": 3.0}
NUM_TASKS = 2 ** np.arange(1, 12)  # 2 ... 2048, 11 values as in the paper's grids
PARAMETERS = ("alpha", "beta", "gamma")
# The paper's model on every checkpoint, which the tests written for it fit (FitSettings()
# is the default model with the early checkpoints dropped), without the law-free reference
# (about 15 s a fit; tests/fits/test_lawfree.py and the CLI's tests score it).
PAPER_FIT = {"model": "paper", "drop_early": False, "law_free": False}


def simulated_behaviour(
    *, num_checkpoints=30, sigma=0.05, seed=0, mlp=None, truth=TRUTH, model="paper"
) -> xr.Dataset:
    """A behaviour dataset whose relative distance is drawn from the model itself
    (``model``, with the parameters of ``truth``; the sites it leaves out, the run offsets'
    for one, are drawn from their priors).

    Losses and complexities are realistic: K_M = 1500 + 64·D·8 bits, K_G = 1200 bits,
    L_G − L_M from 0.15 nats (D = 2) shrinking as D grows.
    """
    steps = np.unique(np.geomspace(20, 1e5, num_checkpoints).round()).astype(np.int64)
    d = NUM_TASKS.astype(float)
    loss = np.stack([0.2 - 0.15 * (2 / d) ** 0.8, np.full_like(d, 0.2)])
    complexity = np.stack([1500 + 64 * 8 * d, np.full_like(d, 1200.0)])
    num_configs = 1 if mlp is None else len(mlp)
    values = {k: np.full(num_configs, v) if mlp else v for k, v in truth.items()}
    values["sigma"] = np.full(2, sigma)
    conditioned = numpyro.handlers.condition(rational.relative_distance_model, data=values)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(conditioned, seed)).get_trace(
        strategy_loss=np.repeat(loss[:, None], num_configs, 1),
        strategy_complexity=np.repeat(complexity[:, None], num_configs, 1),
        checkpoint=steps.astype(float),
        num_splits=2,
        pooling="complete" if mlp is None else "none",
        model=model,
        num_tasks=d,
    )
    observed = np.asarray(trace["observed_weight"]["value"])  # (C, D, N, S)
    grid = ("num_tasks", "checkpoint", "split")
    coords = {"num_tasks": NUM_TASKS, "checkpoint": steps, "split": ["id", "ood"]}
    coords["strategy"] = ["memorizing", "generalizing"]
    if mlp is None:
        data = {"relative_distance": (grid, observed[0])}
    else:
        data = {"relative_distance": (("mlp_expansion_factor", *grid), observed)}
        coords["mlp_expansion_factor"] = mlp
    data["strategy_loss"] = (("strategy", "num_tasks"), loss)
    data["strategy_complexity"] = (("strategy", "num_tasks"), complexity)
    return xr.Dataset(data, coords=coords, attrs={"setting": "categorical-sequence"})


def outputs_map(measured, runs, **settings):
    """MAP fit of the outputs model, 1 chain x 20 draws unless ``settings`` say otherwise."""
    settings = inputs.FitSettings(
        **PAPER_FIT,
        **{"observation": "outputs", "method": "map", "chains": 1, "draws": 20} | settings,
    )
    return inference.fit(measured, settings, runs=runs)

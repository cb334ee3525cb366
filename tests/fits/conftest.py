"""Fixtures for tests/fits: hand-made predictions files in numpy (no torch).

- ``categorical_data(num_tasks, ...)``: a dataset like one file of ``ricl data`` for the
  categorical setting (exact Bayesian M, G, C predictions, Monte Carlo strategy losses,
  complexities K_M = 1500 + 64·D·K bits, K_G = 1200, K_C = 600).
- ``make_run(num_tasks, transformer, strategies, ...)``: a run dataset from arrays.
- ``data_folder``: a folder of ``categorical_data`` files, D = 2 ... 1024 (session).
- ``synthetic_runs``: that folder simulated with known alpha, beta, gamma (session); a
  ``SyntheticRuns`` with ``folder``, ``alpha``, ``beta``, ``gamma``, ``noise``, ``seed``.
- ``ricl_data_folder``: a real ``ricl data`` folder for a tiny spec (skipped until the
  command exists).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rational_icl.fits import inference, inputs
from rational_icl.fits.behaviour import load_behaviour
from rational_icl.fits.runs import open_runs
from rational_icl.fits.simulate import simulate_runs
from tests.fits.simulated import PAPER_FIT, outputs_map, simulated_behaviour

STRATEGIES = ["memorizing", "generalizing", "constant"]
NUM_TASKS = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def run_attrs(setting: str = "categorical-sequence", **overrides) -> dict:
    """Global attributes of a run file (docs/files.md §1)."""
    attrs = {
        "setting": setting,
        "num_dims": 8,
        "num_tasks": 4,
        "context_length": 16,
        "num_layers": 1,
        "hidden_size": 32,
        "num_heads": 1,
        "mlp_expansion_factor": 4.0,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "warmup_steps": 100,
        "max_steps": 4000,
        "seed": 1,
        "package_version": "test",
        "created": "2026-01-01T00:00:00",
        "spec": "",
    }
    return attrs | overrides


def _sample_tokens(task: np.ndarray, length: int, rng) -> np.ndarray:
    """Tokens (..., length) drawn i.i.d. from probability vectors task (..., K)."""
    cdf = np.cumsum(task, axis=-1)
    u = rng.random((*task.shape[:-1], length))
    tokens = (u[..., None] > cdf[..., None, :]).sum(axis=-1)
    return np.minimum(tokens, task.shape[-1] - 1)


def categorical_strategies(tokens: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Exact M, G, C predictions (3, ..., P, K) for tokens (..., P) and training tasks (D, K)."""
    num_dims = tasks.shape[1]
    onehot = (tokens[..., None] == np.arange(num_dims)).astype(np.float64)
    counts = np.cumsum(onehot, axis=-2) - onehot  # observations before each position
    seen = np.arange(tokens.shape[-1])[:, None]
    generalizing = (counts + 1) / (seen + num_dims)
    log_likelihood = counts @ np.log(tasks).T  # (..., P, D)
    posterior = np.exp(log_likelihood - log_likelihood.max(axis=-1, keepdims=True))
    posterior /= posterior.sum(axis=-1, keepdims=True)
    memorizing = posterior @ tasks
    constant = np.full_like(generalizing, 1 / num_dims)
    return np.stack([memorizing, generalizing, constant])


def _categorical_data(
    num_tasks: int,
    *,
    num_dims: int = 8,
    context_length: int = 16,
    num_sequences: int = 8,
    num_loss_sequences: int = 256,
    seed: int = 0,
    **attrs,
) -> xr.Dataset:
    rng = np.random.default_rng([seed, num_tasks, num_dims, context_length])
    prior = np.ones(num_dims)
    tasks = rng.dirichlet(prior, size=num_tasks)
    sequence_task = np.stack(
        [tasks[rng.integers(num_tasks, size=num_sequences)], rng.dirichlet(prior, num_sequences)]
    )  # (split, sequence, K)
    tokens = _sample_tokens(sequence_task, context_length, rng)
    predictions = categorical_strategies(tokens, tasks)

    loss_task = tasks[rng.integers(num_tasks, size=num_loss_sequences)]
    loss_predictions = categorical_strategies(_sample_tokens(loss_task, context_length, rng), tasks)
    kl = (loss_task[:, None, :] * (np.log(loss_task[:, None, :]) - np.log(loss_predictions))).sum(
        -1
    )  # (strategy, sequence, position)
    per_sequence = kl.mean(-1)
    complexity = [1500.0 + 64 * num_tasks * num_dims, 1200.0, 600.0]
    return xr.Dataset(
        {
            "strategy_prediction": (
                ("strategy", "split", "sequence", "position", "outcome"),
                predictions,
            ),
            "tokens": (("split", "sequence", "position"), tokens),
            "target": (("split", "sequence", "position"), tokens),
            "sequence_task": (("split", "sequence", "outcome"), sequence_task),
            "training_tasks": (("task", "outcome"), tasks),
            "strategy_loss": ("strategy", per_sequence.mean(-1)),
            "strategy_loss_se": ("strategy", per_sequence.std(-1) / np.sqrt(num_loss_sequences)),
            "strategy_complexity": ("strategy", complexity),
        },
        coords={
            "strategy": STRATEGIES,
            "split": ["id", "ood"],
            "sequence": np.arange(num_sequences),
            "position": np.arange(context_length),
            "outcome": np.arange(num_dims),
            "task": np.arange(num_tasks),
        },
        attrs=run_attrs(
            num_tasks=num_tasks, num_dims=num_dims, context_length=context_length, **attrs
        ),
    )


def _make_run(
    num_tasks: int,
    transformer: np.ndarray,
    strategies: np.ndarray,
    *,
    setting: str = "categorical-sequence",
    checkpoints=None,
    **attrs,
) -> xr.Dataset:
    """A run dataset: transformer (C, split, S, P, O), strategies (3, split, S, P, O)."""
    num_checkpoints, num_splits, num_sequences, num_positions, num_outcomes = transformer.shape
    steps = np.arange(1, num_checkpoints + 1) * 100 if checkpoints is None else checkpoints
    return xr.Dataset(
        {
            "transformer_prediction": (
                ("checkpoint", "split", "sequence", "position", "outcome"),
                transformer,
            ),
            "strategy_prediction": (
                ("strategy", "split", "sequence", "position", "outcome"),
                strategies,
            ),
            "transformer_loss": (("checkpoint", "split"), np.ones((num_checkpoints, num_splits))),
            "strategy_loss": ("strategy", [0.1, 0.2 + 0.001 * num_tasks, 0.5]),
            "strategy_loss_se": ("strategy", [0.01, 0.01, 0.01]),
            "strategy_complexity": ("strategy", [1500.0 + 512 * num_tasks, 1200.0, 600.0]),
            "train_loss": ("step", np.ones(3)),
        },
        coords={
            "checkpoint": steps,
            "split": ["id", "ood"][:num_splits],
            "strategy": STRATEGIES,
            "sequence": np.arange(num_sequences),
            "position": np.arange(num_positions),
            "outcome": np.arange(num_outcomes),
        },
        attrs=run_attrs(
            setting,
            num_tasks=num_tasks,
            num_dims=num_outcomes,
            context_length=num_positions,
            **attrs,
        ),
    )


@pytest.fixture
def categorical_data():
    """Factory: ``categorical_data(num_tasks, num_dims=8, context_length=16, ...)``."""
    return _categorical_data


@pytest.fixture
def make_run():
    """Factory: ``make_run(num_tasks, transformer, strategies, setting=..., **attrs)``."""
    return _make_run


@pytest.fixture(scope="session")
def data_folder(tmp_path_factory) -> Path:
    """A `ricl data`-like folder: categorical, K = 8, T = 16, D = 2 ... 1024."""
    folder = tmp_path_factory.mktemp("data")
    for num_tasks in NUM_TASKS:
        _categorical_data(num_tasks).to_netcdf(
            folder / f"categorical-sequence_K8_T16_D{num_tasks}_mlp4_seed1.nc"
        )
    return folder


@dataclass(frozen=True)
class SyntheticRuns:
    """A simulated sweep and the truth it was simulated from."""

    folder: Path
    alpha: float
    beta: float
    gamma: float
    noise: float
    seed: int


@pytest.fixture(scope="session")
def synthetic_runs(data_folder, tmp_path_factory) -> SyntheticRuns:
    """``data_folder`` simulated from the rational model: 40 checkpoints, steps 20 ... 4000."""
    truth = {"alpha": 0.5, "beta": 0.3, "gamma": 3.0, "noise": 0.1, "seed": 3}
    folder = tmp_path_factory.mktemp("synthetic_runs")
    simulate_runs(
        data_folder,
        folder,
        truth["alpha"],
        truth["beta"],
        truth["gamma"],
        noise=truth["noise"],
        seed=truth["seed"],
    )
    return SyntheticRuns(folder=folder, **truth)


_TINY_SPEC = """\
setting = "categorical-sequence"
num_dims = 4
context_length = 8
num_tasks = [2, 64]
seed = 1

[training]
max_steps = 1000
num_checkpoints = 10

[evaluation]
num_sequences = 4
num_loss_sequences = 64
"""


@pytest.fixture(scope="session")
def ricl_data_folder(tmp_path_factory) -> Path:
    """A folder written by the real ``ricl data`` (subprocess; torch is only imported there)."""
    if importlib.util.find_spec("rational_icl.cli.data") is None:
        pytest.skip("`ricl data` does not exist yet")
    root = tmp_path_factory.mktemp("ricl_data")
    spec = root / "tiny.toml"
    spec.write_text(_TINY_SPEC)
    out = root / "data"
    command = [sys.executable, "-m", "rational_icl.cli.main", "data", str(spec), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"ricl data failed: {result.stderr.strip()}")
    return out


# ---- fits of simulated behaviour, shared by the tests of the fits modules (session)


@pytest.fixture(scope="session")
def behaviour():
    # One fixed data set. A 90% interval misses the truth 10% of the time by design; the
    # calibration over many data sets is checked by benchmarks/calibration.py.
    return simulated_behaviour(seed=4)


@pytest.fixture(scope="session")
def nuts_fit(behaviour):
    settings = inputs.FitSettings(**PAPER_FIT, chains=2, warmup=300, draws=300, seed=1)
    return inference.fit(behaviour, settings)


@pytest.fixture(scope="session")
def map_fit(behaviour):
    settings = inputs.FitSettings(**PAPER_FIT, method="map", chains=1, draws=400)
    return inference.fit(behaviour, settings)


@pytest.fixture(scope="session")
def law_free_map_fit(behaviour):
    """``map_fit`` scored beside the law-free reference (about 15 s more)."""
    scored = PAPER_FIT | {"law_free": True}
    settings = inputs.FitSettings(**scored, method="map", chains=1, draws=400)
    return inference.fit(behaviour, settings)


@pytest.fixture(scope="session")
def two_configurations():
    return simulated_behaviour(num_checkpoints=16, mlp=[1.0, 4.0], seed=4)


@pytest.fixture(scope="session")
def outputs_fits(synthetic_runs):
    """The full outputs model and its unit-gamma ablation (MAP), the latter on 2 x 700
    draws, which its log likelihood thins to every second draw."""
    runs = open_runs(synthetic_runs.folder)
    measured = load_behaviour(synthetic_runs.folder)
    full = outputs_map(measured, runs, draws=200)
    ablated = outputs_map(measured, runs, chains=2, draws=700, ablation="unit-gamma")
    return runs, full, ablated


@pytest.fixture(scope="session")
def unidentified_map_fit(behaviour):
    """Issue 15's symptom: with two num_tasks values (one fitted) alpha, beta and gamma are
    barely identified and the Laplace draws of a MAP fit fall far outside the posterior."""
    settings = inputs.FitSettings(**PAPER_FIT, method="map", chains=1, draws=400)
    return inference.fit(behaviour.isel(num_tasks=[0, 1]), settings)

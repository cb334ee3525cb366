"""Simulate a sweep of run files from the rational model with known alpha, beta, gamma.

Parameter recovery needs data whose truth is known. ``simulate_runs`` reads a folder written
by ``ricl data`` (real strategy predictions, losses L_Q and complexities K_Q, no checkpoint
dim), adds checkpoints, and writes a "transformer" whose predictions are the rational
model's mixture of the strategies plus noise (docs/science.md):

    log prior(Q)      = -ln 2 · K_Q ** beta
    log likelihood(Q) = -gamma · N ** (1 - alpha) · L_Q
    w_Q               = softmax over Q,   prediction = Σ_Q w_Q · Q(x)

The output folder reads like a trained sweep (``open_runs``, ``behaviour``, ``ricl fit``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from rational_icl import formulas
from rational_icl.errors import RiclError
from rational_icl.facts import setting_facts
from rational_icl.io import load_netcdf, open_netcdf, write_netcdf
from rational_icl.vocabulary import WEIGHT_STRATEGIES

# Defaults for a realistic grid (K in bits, K_M ~ 64·D·K bits, K_G ~ 10^3 bits; L_G − L_M
# from ~0.15 nats at D = 2 down to ~0.004 at D = 1024, categorical K = 8): the complexity
# penalty ln2·(K_M^beta − K_G^beta) grows from ~1.5 nats (D = 2) to ~30 (D = 1024), and the
# switch to memorizing N*(D) = [penalty / (gamma·(L_G − L_M))]^(1/(1 − alpha)) lands at
# ~10 steps for D = 2, ~100-2000 for D = 8-32 and beyond 10^4 for D >= 64: small D
# memorizes at once, intermediate D generalizes first (transiently), large D never switches.
# Regression losses (squared error / 2σ²) are one to two orders of magnitude larger, so
# there gamma should be smaller in proportion (e.g. 0.01-0.05) to see the same picture.
DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 0.3
DEFAULT_GAMMA = 3.0
# Noise: standard deviation of the logit perturbation (probabilities) or of y (regression).
DEFAULT_NOISE = 0.1
DEFAULT_STRATEGIES = WEIGHT_STRATEGIES
_LOG_FLOOR = 1e-12


def rational_log_posterior(num_steps, loss, complexity, alpha, beta, gamma) -> np.ndarray:
    """Unnormalised log posterior of each strategy, −ln2·K^β − γ·N^(1−α)·L.

    Parameters
    ----------
    num_steps : array_like, shape (...)
        Training steps N.
    loss, complexity : array_like, shape (..., Q)
        L_Q (nats per prediction) and K_Q (bits); the last axis is the strategy.
        ``num_steps`` broadcasts against ``loss[..., 0]``.
    alpha, beta, gamma : float or array_like
        The rational model's parameters (broadcast like ``num_steps``).

    Returns
    -------
    np.ndarray, shape (..., Q)
    """
    num_steps = np.asarray(num_steps, dtype=np.float64)[..., None]
    alpha, beta, gamma = (np.asarray(x, dtype=np.float64)[..., None] for x in (alpha, beta, gamma))
    loss, complexity = (np.asarray(x, dtype=np.float64) for x in (loss, complexity))
    return formulas.log_posterior(num_steps, loss, complexity, alpha, beta, gamma)


def rational_weight(num_steps, loss, complexity, alpha, beta, gamma) -> np.ndarray:
    """Posterior weight of each strategy, softmax over the last axis (pure numpy).

    Same arguments as :func:`rational_log_posterior`; returns shape (..., Q). With the
    strategies (memorizing, generalizing), ``[..., 0]`` is w_M = sigmoid(η),
    η = −ln2·(K_M^β − K_G^β) + γ·N^(1−α)·(L_G − L_M).
    """
    logits = rational_log_posterior(num_steps, loss, complexity, alpha, beta, gamma)
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def simulate_runs(
    data_folder: str | Path,
    out_folder: str | Path,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    *,
    checkpoints: int | Sequence[int] | None = None,
    max_steps: int | None = None,
    noise: float = DEFAULT_NOISE,
    seed: int = 0,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
) -> Path:
    """Write one simulated run file per data file of ``data_folder`` into ``out_folder``.

    Parameters
    ----------
    data_folder : str or Path
        Searched recursively for ``*.nc`` files holding ``strategy_prediction`` (as
        written by ``ricl data``; checkpoint variables of trained files are replaced).
    out_folder : str or Path
        Created if needed; files keep their names (and sub-folders).
    alpha, beta, gamma : float
        True parameters: alpha in [0, 1), beta > 0, gamma > 0. The defaults (0.5, 0.3,
        3.0) place the switch to memorizing inside the checkpoint range for intermediate
        num_tasks on the tiny categorical and classification grids; for regression use a
        smaller gamma (its losses are larger).
    checkpoints : int or sequence of int, optional
        Number of square-root-spaced checkpoints from step 20 to ``max_steps``, or the
        steps themselves. Default: the files' ``num_checkpoints`` attribute (else 40), so
        the grid is the one training would record.
    max_steps : int, optional
        Last step of the schedule; default the files' ``max_steps`` attribute.
    noise : float, default 0.1
        Probabilities: standard deviation of Gaussian noise added to the mixture's log
        probabilities before renormalising. Regression: standard deviation added to y.
        0 gives the exact mixture.
    seed : int
        Noise seed; each file draws from its own stream (seed, file name).
    strategies : sequence of str
        The strategies in the softmax (default memorizing and generalizing).

    Returns
    -------
    Path
        ``out_folder``. Each file gains ``transformer_prediction`` (checkpoint, split,
        sequence, position, outcome), ``transformer_loss`` (checkpoint, split) and
        ``simulated_weight`` (checkpoint, strategy: the true w_Q), and attributes
        ``simulated_alpha``, ``simulated_beta``, ``simulated_gamma``, ``simulated_noise``,
        ``simulated_seed``, ``simulated_strategies``.
    """
    _check_parameters(alpha, beta, gamma, noise)
    data_folder, out_folder = Path(data_folder), Path(out_folder)
    paths = [p for p in sorted(data_folder.rglob("*.nc")) if _has_strategies(p)]
    if not paths:
        raise RiclError(
            f"no data files in {str(data_folder)!r}: no *.nc file below it holds "
            "strategy_prediction (write one with `ricl data`)"
        )
    for path in paths:
        data = load_netcdf(path)
        steps = _steps(data, checkpoints, max_steps, path)
        run = _simulate_one(data, steps, alpha, beta, gamma, noise, seed, list(strategies), path)
        write_netcdf(run, out_folder / path.relative_to(data_folder))
    return out_folder


def _check_parameters(alpha, beta, gamma, noise) -> None:
    if not 0 <= alpha < 1:
        raise RiclError(f"alpha={alpha!r} is out of range; allowed: 0 <= alpha < 1")
    if not beta > 0:
        raise RiclError(f"beta={beta!r} is out of range; allowed: beta > 0")
    if not gamma > 0:
        raise RiclError(f"gamma={gamma!r} is out of range; allowed: gamma > 0")
    if not noise >= 0:
        raise RiclError(f"noise={noise!r} is out of range; allowed: noise >= 0")


def _has_strategies(path: Path) -> bool:
    with open_netcdf(path) as ds:
        return "strategy_prediction" in ds


def _steps(data: xr.Dataset, checkpoints, max_steps, path: Path) -> np.ndarray:
    if checkpoints is not None and not np.isscalar(checkpoints):
        steps = np.asarray(checkpoints, dtype=np.int64)
    else:
        last = max_steps if max_steps is not None else data.attrs.get("max_steps")
        if last is None:
            raise RiclError(f"file {str(path)!r} has no max_steps attribute; pass max_steps")
        number = checkpoints if checkpoints is not None else data.attrs.get("num_checkpoints", 40)
        steps = formulas.checkpoint_steps(int(last), int(number))
    if steps.size < 2 or np.any(np.diff(steps) <= 0) or steps[0] < 1:
        raise RiclError(
            f"checkpoints {steps.tolist()} are not valid; allowed: at least 2 increasing "
            "positive steps"
        )
    return steps


def _simulate_one(data, steps, alpha, beta, gamma, noise, seed, strategies, path) -> xr.Dataset:
    """One run's file with a simulated transformer: at every step, the rational model's
    mixture of ``strategies`` plus noise (on the logits for probabilities), its loss and
    the true weights, the parameters recorded as ``simulated_*`` attributes."""
    data = data.drop_dims(["checkpoint"], errors="ignore")
    missing = [s for s in strategies if s not in data["strategy"].values]
    if missing or "strategy_loss" not in data or "strategy_complexity" not in data:
        raise RiclError(
            f"file {str(path)!r} lacks strategy {', '.join(missing) or 'loss/complexity'}; "
            f"needs strategy_loss and strategy_complexity for {', '.join(strategies)}"
        )
    chosen = data.sel(strategy=strategies)
    weight = xr.DataArray(
        rational_weight(
            steps,
            chosen["strategy_loss"].values,
            chosen["strategy_complexity"].values,
            alpha,
            beta,
            gamma,
        ),
        dims=("checkpoint", "strategy"),
        coords={"checkpoint": steps, "strategy": strategies},
    )
    mixture = (weight * chosen["strategy_prediction"]).sum("strategy")
    mixture = mixture.transpose("checkpoint", "split", "sequence", "position", "outcome")
    rng = np.random.default_rng([seed, zlib.crc32(path.name.encode())])
    means = setting_facts(data.attrs).prediction_kind == "mean"
    prediction = _noisy(mixture, noise * rng.standard_normal(mixture.shape), means)
    out = data.copy()
    out["transformer_prediction"] = prediction.astype(np.float32).assign_attrs(
        long_name="transformer prediction (simulated)",
        units="units of y" if means else "1",
        description="rational-model mixture of the strategy predictions plus noise",
    )
    loss = _prediction_loss(prediction, data).transpose("checkpoint", "split")
    out["transformer_loss"] = loss.assign_attrs(
        long_name="transformer loss (simulated)",
        units="nats",
        description="mean per-prediction loss of transformer_prediction on the evaluation "
        "sequences",
    )
    # strategies left out of the softmax have weight 0 (and the file keeps all strategies)
    weight = weight.reindex(strategy=data["strategy"].values, fill_value=0.0)
    out["simulated_weight"] = weight.assign_attrs(
        long_name="true strategy weight",
        units="1",
        description="w_Q of the rational model that generated transformer_prediction",
    )
    out.attrs |= {
        "simulated_alpha": float(alpha),
        "simulated_beta": float(beta),
        "simulated_gamma": float(gamma),
        "simulated_noise": float(noise),
        "simulated_seed": int(seed),
        "simulated_strategies": ",".join(strategies),
    }
    return out


def _noisy(mixture: xr.DataArray, eps: np.ndarray, means: bool) -> xr.DataArray:
    """``mixture`` plus ``eps``: on the value for means, on the logits for probabilities."""
    if means:
        return mixture + eps
    logits = np.log(mixture.clip(min=_LOG_FLOOR)) + eps
    logits = logits - logits.max("outcome")
    return np.exp(logits) / np.exp(logits).sum("outcome")


def _prediction_loss(prediction: xr.DataArray, data: xr.Dataset) -> xr.DataArray:
    """Mean per-prediction loss over sequences and positions, (checkpoint, split): the
    file's ``loss_kind`` (rational_icl.facts), as the strategy losses.

    ``task-kl`` with ``sequence_task``: KL(θ ‖ prediction); ``cross-entropy`` (or
    ``task-kl`` without ``sequence_task``): cross-entropy of ``target``;
    ``squared-error``: (y − ŷ)² / (2σ²).
    """
    loss_kind = setting_facts(data.attrs).loss_kind
    dims = ["sequence", "position"]
    if loss_kind == "squared-error":
        variance = formulas.run_noise_variance(data)
        error = (data["target"] - prediction.squeeze("outcome", drop=True)) ** 2
        return (error / (2 * variance)).mean(dims)
    log_prediction = np.log(prediction.clip(min=_LOG_FLOOR))
    if loss_kind == "task-kl" and "sequence_task" in data:
        task = data["sequence_task"]
        entropy = (task * np.log(task.clip(min=_LOG_FLOOR))).sum("outcome")
        return (entropy - (task * log_prediction).sum("outcome")).mean(dims)
    outcome = xr.DataArray(np.arange(prediction.sizes["outcome"]), dims="outcome")
    observed = outcome == data["target"].astype(np.int64)
    return -(log_prediction.where(observed, 0.0).sum("outcome")).mean(dims)

"""Did the transformers learn? Their last-checkpoint loss against the strategies' L_Q.

The rational-model fit reads a transformer's predictions as a mixture of the memorizing (M)
and generalizing (G) strategies; that reading explains nothing for a transformer that has
not learned (docs/science.md, "Three cautions"). This module compares, per run, the
transformer's loss at its last checkpoint (``transformer_loss``) with the strategies'
expected losses (``strategy_loss``), both in nats per prediction, and names the runs that
fall short:

- at the smallest and the largest num_tasks D, the ``id`` loss must be within ``tolerance``
  (default 1.3) of the better strategy, min(L_M, L_G);
- at the largest D (where G should win), every split's loss must be within ``tolerance``
  of G's loss on that split's evaluation sequences (``strategy_evaluation_loss``; files
  written before it existed fall back to L_G). L_G is an expectation over sequences from the
  training tasks, which an ``iwl`` or ``ood`` sequence is not: on ``iwl`` the query's pair is
  missing from the context, so no strategy reaches the id L_G there;
- at every other D, where a transformer may sit anywhere between M and G, the ``id`` loss
  must be within ``tolerance`` of the worse strategy, max(L_M, L_G): a mixture of the two
  is never worse than both, so a loss above that is a transformer that learned neither.

Only the small loss variables are read, with xarray: no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.io import open_netcdf
from rational_icl.vocabulary import WEIGHT_STRATEGIES

TOLERANCE = 1.3


def convergence(paths: Iterable[str | Path]) -> xr.Dataset:
    """Last-checkpoint loss ratios of the runs in ``paths`` (predictions files).

    Parameters
    ----------
    paths : iterable of str or Path
        Predictions files of one scalar spec (one per num_tasks), each with a
        ``checkpoint`` dimension.

    Returns
    -------
    xr.Dataset
        Dims ``num_tasks`` (sorted) and ``split``:

        - ``transformer_loss`` (num_tasks, split): the loss at the last checkpoint
        - ``strategy_loss`` (num_tasks, strategy): L_Q
        - ``generalizing_loss`` (num_tasks, split): G's loss on the evaluation sequences
        - ``best_ratio`` (num_tasks, split): transformer loss / min(L_M, L_G)
        - ``generalizing_ratio`` (num_tasks, split): transformer loss / G's loss on the
          same split's evaluation sequences
        - ``worst_ratio`` (num_tasks, split): transformer loss / max(L_M, L_G)
        - ``last_checkpoint`` (num_tasks): the step of the last checkpoint

        A split a run lacks is NaN.
    """
    rows = [_read_run(Path(p)) for p in paths]
    if not rows:
        raise RiclError("convergence: no predictions files given")
    runs = xr.concat(rows, dim="num_tasks", join="outer").sortby("num_tasks")
    strategies = runs["strategy_loss"].sel(strategy=list(WEIGHT_STRATEGIES))
    loss = runs["transformer_loss"]
    return runs.assign(
        best_ratio=loss / strategies.min("strategy"),
        generalizing_ratio=loss / runs["generalizing_loss"],
        worst_ratio=loss / strategies.max("strategy"),
    )


def unconverged(report: xr.Dataset, tolerance: float = TOLERANCE) -> list[int]:
    """The num_tasks values whose transformer did not reach its strategies (module docstring)."""
    num_tasks = report["num_tasks"].values
    extremes = np.isin(num_tasks, [num_tasks.min(), num_tasks.max()])
    id_best = report["best_ratio"].sel(split="id").values
    id_worst = report["worst_ratio"].sel(split="id").values
    failed = np.where(extremes, id_best > tolerance, id_worst > tolerance)
    # NaN (a diverged or missing loss) is a failure, not a pass
    failed |= ~np.isfinite(np.where(extremes, id_best, id_worst))
    largest = report["generalizing_ratio"].sel(num_tasks=num_tasks.max()).values  # (split,)
    largest = largest[~np.isnan(largest)]
    failed[num_tasks == num_tasks.max()] |= bool((largest > tolerance).any())
    return num_tasks[failed].tolist()


def summary_line(report: xr.Dataset, name: str) -> str:
    """One line: per num_tasks the id loss over the better strategy's, and at the largest
    num_tasks every split's loss over G's loss on that split."""
    num_tasks = report["num_tasks"].values
    parts = [
        f"D={d} {float(report['best_ratio'].sel(num_tasks=d, split='id')):.2f}x" for d in num_tasks
    ]
    largest = report.sel(num_tasks=num_tasks.max())
    over_g = [
        f"{split} {float(largest['generalizing_ratio'].sel(split=split)):.2f}x"
        for split in report["split"].values
        if np.isfinite(largest["generalizing_ratio"].sel(split=split))
    ]
    step = int(report["last_checkpoint"].max())
    return (
        f"convergence {name} (step {step}): id loss / best of L_M, L_G: {', '.join(parts)}; "
        f"D={num_tasks.max()} loss / G's on the split: {', '.join(over_g)}"
    )


def warning_line(report: xr.Dataset, name: str, tolerance: float = TOLERANCE) -> str | None:
    """A warning naming the unconverged num_tasks values, or None when every run converged."""
    failed = unconverged(report, tolerance)
    if not failed:
        return None
    return (
        f"WARNING: {name}: the transformers for num_tasks {', '.join(map(str, failed))} did "
        f"not reach their strategies (last-checkpoint loss above {tolerance:g}x the target: "
        "the better strategy at the smallest and largest num_tasks, G's loss on every split at "
        "the largest, the worse strategy elsewhere); the fit that follows reads an undertrained "
        "model; train longer or change the spec's [training] or [model]"
    )


def _read_run(path: Path) -> xr.Dataset:
    try:
        with open_netcdf(path) as ds:
            if "transformer_loss" not in ds or "strategy_loss" not in ds:
                raise RiclError(
                    f"convergence: {str(path)!r} has no transformer_loss or strategy_loss; "
                    "train it first (ricl train)"
                )
            loss = ds["transformer_loss"].isel(checkpoint=-1).drop_vars("checkpoint").load()
            if "strategy_evaluation_loss" in ds:
                generalizing = ds["strategy_evaluation_loss"].sel(strategy="generalizing")
            else:
                generalizing = ds["strategy_loss"].sel(strategy="generalizing") * xr.ones_like(loss)
            row = xr.Dataset(
                {
                    "transformer_loss": loss,
                    "strategy_loss": ds["strategy_loss"].load(),
                    "generalizing_loss": generalizing.drop_vars("strategy").load(),
                    "last_checkpoint": ((), int(ds["checkpoint"][-1])),
                }
            )
            return row.expand_dims(num_tasks=[int(ds.attrs["num_tasks"])])
    except (OSError, ValueError, KeyError) as err:
        raise RiclError(
            f"convergence: predictions file {str(path)!r} is unreadable ({type(err).__name__})"
        ) from None

"""Milliseconds per call of every Bayesian strategy, and of sampling one training batch.

Sizes from the foundation issue: categorical B=64, T=128, K=8, D=1024; regression B=64,
T=64, d=8, D=1024; classification B=64, T=128, d=8, D=1024. For contrast, per-position
loops (one call per position, as prior research code does) for the slowest strategies.

    python benchmarks/strategies.py [--dtype float32|float64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import torch

from rational_icl.data import CategoricalSequence, Classification, LinearRegression, generator
from rational_icl.modeling import STRATEGIES, strategy_prediction
from rational_icl.modeling.strategies import (
    categorical_memorizing,
    regression_generalizing,
    regression_memorizing,
)

TARGET_MS = {
    ("categorical-sequence", "memorizing"): 25,
    ("linear-regression", "memorizing"): 25,
}


def timed_ms(function, repeats: int) -> float:
    function()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def per_position(strategy, length):
    """Call a strategy once per position on the prefix before it: the loop we avoid."""

    def run():
        for t in range(1, length + 1):
            strategy(t)

    return run


def bench_setting(setting, dtype, repeats: int) -> list[tuple]:
    """Rows (setting, what, ms, target ms or None) for one setting at D = 1024, B = 64."""
    gen = generator(0, "benchmark", setting.name)
    tasks = setting.sample_tasks(1024, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = setting.sample_batch(tasks, 64, gen)
    rows = []
    for strategy in STRATEGIES:
        ms = timed_ms(partial(strategy_prediction, setting, batch, tasks, strategy), repeats)
        rows.append((setting.name, strategy, ms, TARGET_MS.get((setting.name, strategy), 5)))
    length = setting.context_length
    if setting.name == "categorical-sequence":
        loop = per_position(
            lambda t: categorical_memorizing(batch.tokens[:, :t], tasks.tasks), length
        )
        rows.append((setting.name, "memorizing, per-position loop", timed_ms(loop, 2), None))
        sample = partial(setting.sample_batch, tasks, 64, gen)
        rows.append((setting.name, "sample a training batch", timed_ms(sample, repeats), 2))
    if setting.name == "linear-regression":
        x, y, w = batch.x, batch.y, tasks.tasks
        loop = per_position(lambda t: regression_memorizing(x[:, :t], y[:, :t], w, 1.0), length)
        rows.append((setting.name, "memorizing, per-position loop", timed_ms(loop, 2), None))
        loop = per_position(lambda t: regression_generalizing(x[:, :t], y[:, :t], 1.0), length)
        rows.append((setting.name, "generalizing, per-position loop", timed_ms(loop, 2), None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    settings = [
        CategoricalSequence(num_dims=8, context_length=128),
        LinearRegression(num_dims=8, context_length=64, noise_variance=8 / 256),
        Classification(num_dims=8, context_length=128, within_class_variance=0.5),
    ]
    rows = [row for setting in settings for row in bench_setting(setting, dtype, args.repeats)]
    print(
        f"torch {torch.__version__}, {args.dtype}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'setting':<22} {'strategy':<34} {'ms/call':>9} {'target':>8}  ok")
    for name, strategy, ms, target in rows:
        verdict = "" if target is None else ("yes" if ms < target else "NO")
        target_text = "" if target is None else f"< {target}"
        print(f"{name:<22} {strategy:<34} {ms:>9.2f} {target_text:>8}  {verdict}")


if __name__ == "__main__":
    main()

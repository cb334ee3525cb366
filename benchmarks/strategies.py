"""Milliseconds per call of every Bayesian strategy, and of sampling one training batch.

Sizes from the foundation issue: categorical B=64, T=128, K=8, D=1024; regression B=64,
T=64, d=8, D=1024; classification B=64, T=128, d=8, D=1024. For contrast, per-position
loops (one call per position, as prior research code does) for the slowest strategies.
Beside each time, the fp32 matmul rate (1024 x 1024 x 1024, best of 5) measured just
before it: on a shared machine the load moves both, and a time means little without it.

    python benchmarks/strategies.py [--dtype float32|float64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import torch

from rational_icl.data import (
    STRATEGIES,
    CategoricalSequence,
    Classification,
    LinearRegression,
    generator,
)
from rational_icl.data.settings.categorical import categorical_memorizing
from rational_icl.data.settings.regression import regression_generalizing, regression_memorizing

TARGET_MS = {
    ("categorical-sequence", "memorizing"): 10,
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


def matmul_gflops(repeats: int = 5) -> float:
    """Measured fp32 matmul rate of this process (its torch threads), GFLOP/s."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / (timed_ms(lambda: a @ b, repeats) / 1000) / 1e9


def per_position(strategy, length):
    """Call a strategy once per position on the prefix before it: the loop we avoid."""

    def run():
        for t in range(1, length + 1):
            strategy(t)

    return run


def bench_setting(setting, dtype, repeats: int) -> list[tuple]:
    """Rows (setting, what, ms, target ms or None, GFLOP/s) for one setting at D = 1024,
    B = 64."""
    gen = generator(0, "benchmark", setting.name)
    tasks = setting.sample_tasks(1024, gen)
    tasks.tasks = tasks.tasks.to(dtype)
    batch = setting.sample_batch(tasks, 64, gen)
    rows = []
    for strategy in STRATEGIES:
        peak = matmul_gflops()
        ms = timed_ms(partial(setting.strategy_prediction, batch, tasks, strategy), repeats)
        target = TARGET_MS.get((setting.name, strategy), 5)
        rows.append((setting.name, strategy, ms, target, peak))
    length = setting.context_length
    if setting.name == "categorical-sequence":
        loop = per_position(
            lambda t: categorical_memorizing(batch.tokens[:, :t], tasks.tasks), length
        )
        peak = matmul_gflops()
        ms = timed_ms(loop, 2)
        rows.append((setting.name, "memorizing, per-position loop", ms, None, peak))
        sample = partial(setting.sample_batch, tasks, 64, gen)
        peak = matmul_gflops()
        ms = timed_ms(sample, repeats)
        rows.append((setting.name, "sample a training batch", ms, 2, peak))
    if setting.name == "linear-regression":
        x, y, w = batch.x, batch.y, tasks.tasks
        loop = per_position(lambda t: regression_memorizing(x[:, :t], y[:, :t], w, 1.0), length)
        peak = matmul_gflops()
        rows.append((setting.name, "memorizing, per-position loop", timed_ms(loop, 2), None, peak))
        loop = per_position(lambda t: regression_generalizing(x[:, :t], y[:, :t], 1.0), length)
        peak = matmul_gflops()
        ms = timed_ms(loop, 2)
        rows.append((setting.name, "generalizing, per-position loop", ms, None, peak))
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
    print(f"{'setting':<22} {'strategy':<34} {'ms/call':>9} {'target':>8}  ok  fp32 GFLOP/s")
    for name, strategy, ms, target, peak in rows:
        verdict = "" if target is None else ("yes" if ms < target else "NO ")
        target_text = "" if target is None else f"< {target}"
        print(f"{name:<22} {strategy:<34} {ms:>9.2f} {target_text:>8}  {verdict:<3} {peak:>8.1f}")


if __name__ == "__main__":
    main()

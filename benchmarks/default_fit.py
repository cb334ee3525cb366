"""The default model's fit beside the paper's on the same runs: wall by phase, CPU, peak RSS,
file size, R-hat, divergences and ESS per second; prints a table.

Each fit runs as ``ricl run`` fits (``FitSettings`` with ``drop_early`` and the barycentric
measure, NUTS 4 x 1000 + 1000, every split), in a fresh process so that its peak RSS is its
own. The phases:

- start: the model's inputs, the best of 256 prior draws and the MAP (compiles the log
  density and its gradient);
- NUTS: warm-up and draws (compiles the sampler once);
- per-draw: the per-cell deterministic sites, the posterior predictive and the pointwise
  log likelihood (``fits.tree.datatree``), with the metrics and skill;
- write: ``write_fit``.

Measured (2 AMD EPYC cores shared with a test run, load ~4; before = 48c1e95's package on
the same runs): default / paper wall 91 / 25 s, 95 / 27 s, 130 / 36 s on tiny-categorical,
-regression, -classification (before 319 / 49, 138 / 56, 354 / 34); peak RSS 0.9 GB (4.7-5.9);
fit.nc 12.7, 12.3, 16.0 MB (22.2, 21.7, 28.6); leapfrog steps per draw 60, 58, 50 (121, 68,
171); R-hat 1.006, 1.008, 1.005; divergences 0, 1, 0 (0, 0, 2). docs/science.md has the table.

Usage::

    python benchmarks/default_fit.py DIR [DIR ...] [--models anchored-offsets-drift paper]

where each DIR is a ``ricl run`` output folder (its ``behaviour.nc`` is read).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rational_icl.pipeline import configure_jax
from rational_icl.vocabulary import MODELS

configure_jax(4)  # at import: the spawned worker imports this file again

PHASES = ("start", "NUTS", "per-draw", "write")


def _timed(function, elapsed: dict, phase: str):
    """``function`` that adds its wall time to ``elapsed[phase]``."""

    def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed[phase] = elapsed.get(phase, 0.0) + time.perf_counter() - begin

    return timed


def fit_once(folder: str, model: str, options: dict) -> dict:
    """One fit of ``folder``'s behaviour with ``model`` (and FitSettings ``options``); its
    measurements."""
    from rational_icl.fits import engines, inference
    from rational_icl.fits.diagnostics import diagnostics
    from rational_icl.fits.inputs import FitSettings
    from rational_icl.fits.tree import parameter_names, write_fit
    from rational_icl.io import read_netcdf

    behaviour = read_netcdf(Path(folder) / "behaviour.nc")
    settings = FitSettings(model=model, drop_early=True, measure="barycentric", **options)
    elapsed: dict[str, float] = {}
    # the dict for the fits that look NUTS up by method, the module's name for those that
    # call it directly (models with run offsets)
    engines.nuts = engines.ENGINES["nuts"] = _timed(engines.nuts, elapsed, "NUTS")
    inference.datatree = _timed(inference.datatree, elapsed, "per-draw")
    wall, cpu = time.perf_counter(), time.process_time()
    tree = inference.fit(behaviour, settings)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "fit.nc"
        _timed(write_fit, elapsed, "write")(tree, path)
        size = path.stat().st_size / 2**20
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    elapsed["start"] = wall - sum(elapsed.values())
    found = diagnostics(tree)
    names = parameter_names(tree)
    rhat = max(float(found[f"{n}_r_hat"].max()) for n in names)
    worst = max(names, key=lambda n: float(found[f"{n}_r_hat"].max()))
    ess = min(float(found[f"{n}_ess_bulk"].min()) for n in names)
    skill = tree.predictive_skill.ds
    return {
        "model": model,
        "phases": elapsed,
        "wall": wall,
        "cpu": cpu,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB -> GiB
        "size": size,
        "rhat": rhat,
        "worst": worst,
        "ess_per_s": ess / elapsed["NUTS"],
        "divergences": int(tree.sample_stats.diverging.sum()),
        "steps": float(tree.sample_stats.n_steps.mean()),
        "skill": _skill_text(skill),
        "alpha": float(tree.posterior.alpha.median()),
    }


def _skill_text(skill) -> str:
    """The model's skill and coverage in each split, from the fit's predictive_skill."""
    parts = []
    for split in skill.split.values:
        row = skill.sel(split=split)
        coverage = float(row.coverage.sel(predictor="model"))
        parts.append(f"{split} {float(row.skill):+.2f} ({coverage:.2f})")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="ricl run output folders")
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=["anchored-offsets-drift", "paper"]
    )
    parser.add_argument("--target-accept", type=float, default=None)
    parser.add_argument("--mass-matrix", choices=("adapted", "laplace"), default="adapted")
    args = parser.parse_args()
    options = {"target_accept": args.target_accept, "mass_matrix": args.mass_matrix}
    print(f"{os.cpu_count()} CPUs; NUTS 4 x (1000 + 1000), drop-early, every split")
    header = " ".join(f"{p:>9}" for p in PHASES)
    print(f"{'runs':<22} {'model':<22} {header} {'wall s':>7} {'CPU s':>7} {'RSS GiB':>7} "
          f"{'MB':>5} {'R-hat':>6} {'div':>4} {'steps':>5} {'ESS/s':>6}  "
          "alpha, skill (coverage)")  # fmt: skip
    spawn = multiprocessing.get_context("spawn")  # JAX does not survive a fork
    for folder in args.folders:
        for model in args.models:
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                row = pool.submit(fit_once, folder, model, options).result()
            phases = " ".join(f"{row['phases'].get(p, 0.0):9.1f}" for p in PHASES)
            print(
                f"{Path(folder).name[:22]:<22} {model:<22} {phases} {row['wall']:7.1f} "
                f"{row['cpu']:7.1f} {row['rss']:7.2f} {row['size']:5.1f} {row['rhat']:6.3f} "
                f"{row['divergences']:4d} {row['steps']:5.0f} {row['ess_per_s']:6.1f}  "
                f"{row['alpha']:.3f}, {row['skill']} [worst R-hat: {row['worst']}]",
                flush=True,
            )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""``ricl fit``: fit the rational model to a folder of predictions files, write ``fit.nc``."""

from __future__ import annotations

import os
from pathlib import Path

from rational_icl.errors import RiclError

# The same choices as rational_icl.fits (a test checks), spelled out here so that
# `ricl --help` does not import JAX.
OBSERVATIONS = ("relative-distance", "outputs")
ABLATIONS = ("none", "linear-likelihood", "fixed-complexity", "unit-gamma", "linear-complexity")
POOLINGS = ("complete", "none", "partial")
METHODS = ("nuts", "map", "svi")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit the rational model (NumPyro) to a folder of predictions files",
        description="Fit the rational model of strategy weights to the behaviour of the "
        "transformers in RUNS_DIR (one setting; runs combined along num_tasks and any varying "
        "configuration). The first 80% of checkpoints and of num_tasks values are fitted, "
        "the other cells held out. Writes an ArviZ DataTree (netCDF) and prints a summary, "
        "diagnostics and the held-out correlations.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", type=Path, help="folder of run files")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output fit file (.nc)")
    parser.add_argument("--observation", choices=OBSERVATIONS, default="relative-distance")
    parser.add_argument("--ablation", choices=ABLATIONS, default="none")
    parser.add_argument("--pooling", choices=POOLINGS, default="complete")
    parser.add_argument(
        "--strategies",
        default="memorizing,generalizing",
        help="strategies in the softmax: memorizing,generalizing[,constant]",
    )
    parser.add_argument(
        "--context-dependent",
        action="store_true",
        help="weights also accumulate evidence along the context",
    )
    parser.add_argument("--method", choices=METHODS, default="nuts")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pointwise-draws",
        type=int,
        default=1000,
        help="draws (all chains together, evenly thinned) kept for the per-cell posterior "
        "predictive and log likelihood; summaries use every draw (default 1000)",
    )
    parser.add_argument(
        "--held-out-fraction",
        type=float,
        default=0.8,
        help="fraction of checkpoints and of num_tasks values fitted (default 0.8)",
    )
    parser.add_argument(
        "--drop-early",
        action="store_true",
        help="fit only checkpoints after the transformer is within 20%% of its range of the "
        "best memorizing-generalizing mixture",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing fit file")
    parser.set_defaults(func=run)


def run(args) -> int:
    _check_args(args)
    # Parallel chains need one XLA CPU device per chain, set before JAX starts its backend.
    import numpyro

    numpyro.set_host_device_count(max(args.chains, os.cpu_count() or 1))
    from rational_icl.fits import inference
    from rational_icl.fits.behaviour import behaviour
    from rational_icl.fits.runs import open_runs

    settings = inference.FitSettings(
        observation=args.observation,
        ablation=args.ablation,
        pooling=args.pooling,
        strategies=tuple(s.strip() for s in args.strategies.split(",")),
        context_dependent=args.context_dependent,
        method=args.method,
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        seed=args.seed,
        pointwise_draws=args.pointwise_draws,
        held_out_fraction=args.held_out_fraction,
        drop_early=args.drop_early,
        progress_bar=os.isatty(2),
    )
    runs = open_runs(args.runs_dir)
    measured = behaviour(runs).compute()
    needs_runs = args.observation == "outputs" or args.context_dependent
    tree = inference.fit(measured, settings, runs=runs if needs_runs else None)
    _report(tree, inference)
    inference.write_fit(tree, args.out)
    print(f"wrote {args.out}")
    return 0


def _check_args(args) -> None:
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise RiclError(f"-o {str(out)!r} is a folder, not a file")
    if out.exists() and not args.force:
        raise RiclError(f"fit file {str(out)!r} exists (use --force to overwrite)")
    if out.suffix != ".nc":
        raise RiclError(f"-o {str(out)!r} must end in .nc")
    for name in ("chains", "draws", "pointwise_draws"):
        if getattr(args, name) < 1:
            flag = name.replace("_", "-")
            raise RiclError(f"--{flag} must be at least 1; got {getattr(args, name)}")
    if args.warmup < 0:
        raise RiclError(f"--warmup must be at least 0; got {args.warmup}")


def _report(tree, inference) -> None:
    """Summary table, fit quality, dropped checkpoints, diagnostics and LOO, on stdout."""
    print(
        f"rational model, observation {tree.attrs['observation_model']}, ablation "
        f"{tree.attrs['ablation']}, pooling {tree.attrs['pooling']}, method "
        f"{tree.attrs['inference_method']}"
    )
    print(inference.summary(tree).to_string())
    for split in tree.observed_data.split.values:
        fitted = tree.attrs.get(f"fitted_correlation_{split}")
        held = tree.attrs.get(f"heldout_correlation_{split}")
        print(
            f"{split}: Pearson r predicted vs observed weight on memorizing: "
            f"held out {held:.3f}, fitted {fitted:.3f}; held-out Spearman "
            f"{tree.attrs.get(f'heldout_spearman_{split}'):.3f}, TVD "
            f"{tree.attrs.get(f'heldout_tvd_{split}'):.3f}, R^2 "
            f"{tree.attrs.get(f'heldout_r2_{split}'):.3f}"
        )
    if "dropped" in tree.constant_data:
        dropped = tree.constant_data.dropped
        dropped = dropped.any([d for d in dropped.dims if d not in ("num_tasks", "checkpoint")])
        for num_tasks in dropped.num_tasks.values:
            steps = dropped.checkpoint.values[dropped.sel(num_tasks=num_tasks).values]
            if steps.size:
                print(f"num_tasks {num_tasks}: early checkpoints not fitted {steps.tolist()}")
    for line in inference.diagnostic_warnings(tree):
        print(line)
    if "log_likelihood" in tree.children:
        result = inference.loo(tree)
        bad = int((result.pareto_k > 0.7).sum())
        print(f"PSIS-LOO: elpd_loo {result.elpd:.1f} (se {result.se:.1f}), p_loo {result.p:.1f}")
        if bad:
            print(f"warning: {bad} cell(s) with Pareto k > 0.7")

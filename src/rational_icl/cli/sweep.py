"""``ricl sweep``: train every run of a spec as Dask work units, locally or on a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

from rational_icl.cli.checks import add_memory_option, check_device, check_memory
from rational_icl.data import load_specs
from rational_icl.errors import RiclError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="train a spec's runs on Dask distributed (a LocalCluster or a scheduler address)",
        description="Expand a spec or preset into work units (one ensemble per model "
        "configuration) and train them on Dask distributed. Finished runs are skipped, "
        "interrupted ones resume, a failing unit is retried and then reported; the command "
        "ends with a summary table and exits non-zero if any unit failed.",
    )
    parser.add_argument("spec", metavar="SPEC_OR_PRESET", help="a TOML spec file or a preset name")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--scheduler",
        default="local",
        metavar="local|ADDRESS",
        help="'local' for an embedded LocalCluster (default) or a Dask scheduler address "
        "such as tcp://HOST:8786; workers must see the output folder at the same path",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="LocalCluster worker processes (default: one per unit, at most one per CPU)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="extra attempts for a failing unit (default 2)"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device on the workers (default: cuda where a worker has it, else cpu)",
    )
    add_memory_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from rational_icl.pipeline import check_same_experiment
    from rational_icl.training.sweep import format_summary, run_sweep

    if args.workers is not None and args.workers < 1:
        raise RiclError(f"--workers must be >= 1, got {args.workers}")
    if args.retries < 0:
        raise RiclError(f"--retries must be >= 0, got {args.retries}")
    if args.out.exists() and not args.out.is_dir():
        raise RiclError(f"--out {str(args.out)!r} is a file, not a folder")
    if args.workers is not None and args.scheduler != "local":
        print("note: --workers is ignored with a scheduler address", file=sys.stderr)
    specs = load_specs(args.spec)
    if args.scheduler == "local":  # a cluster's workers have memory of their own
        check_memory(specs, args)
    if args.device is not None:  # a remote cluster's workers may have devices this one lacks
        check_device(args.device, probe=args.scheduler == "local")
    check_same_experiment(specs, args.out)  # as ricl data and train
    outcomes = run_sweep(
        specs,
        args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        retries=args.retries,
        device=args.device,
    )
    print(format_summary(outcomes))
    failed = [o.unit for o in outcomes if o.status == "failed"]
    if failed:
        raise RiclError(
            f"{len(failed)} of {len(outcomes)} work unit(s) failed after "
            f"{args.retries + 1} attempt(s): {', '.join(failed)}"
        )
    return 0

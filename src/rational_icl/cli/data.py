"""``ricl data``: evaluation sequences, strategy predictions, losses and complexities per run."""

from __future__ import annotations

from pathlib import Path

from rational_icl.cli.checks import (
    add_memory_option,
    add_threads_option,
    check_device,
    check_memory,
    check_threads,
)
from rational_icl.data import load_specs
from rational_icl.pipeline import limit_threads, write_data


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="write each run's strategy predictions file (no transformer yet)",
        description="For every num_tasks value of a spec or preset, write a predictions file "
        "(docs/files.md) with the fixed evaluation sequences, the Bayesian strategies' "
        "predictions, losses and complexities, and the training tasks.",
    )
    parser.add_argument("spec", metavar="SPEC_OR_PRESET", help="a TOML spec file or a preset name")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--device", default="cpu", help="torch device for the loss estimates")
    add_threads_option(parser, "torch (the strategies' Monte Carlo losses)")
    add_memory_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    specs = load_specs(args.spec)
    check_memory(specs, args)
    check_device(args.device)
    limit_threads(check_threads(args.threads))
    write_data(specs, args.out, device=args.device, force=args.force)
    return 0

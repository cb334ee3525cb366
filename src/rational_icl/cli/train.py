"""``ricl train``: train every run of a spec and record its checkpoint predictions."""

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
from rational_icl.pipeline import train_specs


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the transformers of a spec, recording predictions at checkpoints",
        description="Train every num_tasks value of a spec or preset (one ensemble per model "
        "configuration) and leave one complete predictions file per run (docs/files.md). An "
        "interrupted command resumes from its last checkpoint when rerun; finished runs are "
        "kept unless --force.",
    )
    parser.add_argument("spec", metavar="SPEC_OR_PRESET", help="a TOML spec file or a preset name")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--force", action="store_true", help="retrain and overwrite finished or partial runs"
    )
    add_threads_option(parser, "torch")
    add_memory_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    specs = load_specs(args.spec)
    check_memory(specs, args)
    device = check_device(args.device)
    threads = check_threads(args.threads)
    train_specs(specs, args.out, device=device, force=args.force, threads=threads)
    return 0

"""``ricl data``: evaluation sequences, strategy predictions, losses and complexities per run."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from rational_icl.cli.checks import (
    add_memory_option,
    check_device,
    check_memory,
    make_out_folder,
)
from rational_icl.data import load_specs
from rational_icl.io import folder_lock, write_netcdf


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="write each run's strategy predictions file (no transformer yet)",
        description="For every num_tasks value of a spec or preset, write a predictions file "
        "(docs/files.md) with the fixed evaluation sequences, the Bayesian strategies' "
        "predictions, losses and complexities, and the training tasks.",
    )
    parser.add_argument("spec", metavar="SPEC_OR_PRESET", help="a TOML spec file or a preset name")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--device", default="cpu", help="torch device for the loss estimates")
    add_memory_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    specs = load_specs(args.spec)
    check_memory(specs, args)
    check_device(args.device)
    write_data(specs, args.out, device=args.device, force=args.force)
    return 0


def write_data(specs, out: Path, *, device="cpu", force: bool = False) -> list[Path]:
    """The data stage: one predictions file per run of ``specs`` in ``out`` (existing files
    are kept unless ``force``); returns the files written."""
    from rational_icl.training.predictions import strategy_dataset  # torch loads only here

    runs = [r for spec in specs for r in spec.runs()]
    make_out_folder(out)
    paths = {r: out / f"{r.name}.nc" for r in runs}
    todo = [r for r in runs if force or not paths[r].exists()]
    for r in runs:
        if r not in todo:
            print(f"exists, kept (use --force to overwrite): {paths[r]}")
    with (
        folder_lock(out, "ricl data"),  # one writer per folder
        tqdm(todo, desc="ricl data", unit="run", dynamic_ncols=True, disable=None) as bar,
    ):
        for r in bar:
            dataset = strategy_dataset(r, device=device, progress=bar.set_postfix_str)
            write_netcdf(dataset, paths[r])
    print(f"wrote {len(todo)} file(s) to {out}")
    return [paths[r] for r in todo]

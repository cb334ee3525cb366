"""``ricl run``: the main job, data -> train -> behaviour -> fit -> report, resumable.

Each stage writes its files into the output folder and a rerun skips the stages whose
output is already there and newer than its inputs (training resumes from its last
checkpoint). The stages run in ``rational_icl.pipeline.run_specs``, each the function
behind its own command (``write_data``, ``train_specs``, ``fit_runs``, ``report``), and each
announced as that command: what it does can be repeated, or redone with other options, one
command at a time. This module parses and checks the options before the first stage, and
prints each fit's summary (cli/fit.py) and the report's path.

Layout of ``DIR`` (one spec; a preset bundling several specs gets one such folder per
spec, ``DIR/<spec name>/``)::

    runs/           one predictions file per num_tasks (ricl data, then ricl train)
    behaviour.nc    the behaviour dataset (docs/files.md §2)
    fit.nc          the fit (docs/files.md §3)
    fit_paper.nc    the paper's model, fitted the same way
    fit_<design>.nc the default model under each of --verdict-designs (forecast-0.3,
                    num-tasks): the held-out designs the verdict on alpha reads
    report/         index.html, figures/*.png, tables/*.csv
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from rational_icl.cli.checks import (
    add_memory_option,
    add_threads_option,
    check_device,
    check_memory,
    check_sampler_options,
    check_threads,
    check_transition_level,
    check_writable_folder,
)
from rational_icl.cli.fit import add_fit_options, model_or_default, print_summary
from rational_icl.data import load_specs
from rational_icl.errors import RiclError
from rational_icl.pipeline import configure_jax, run_specs
from rational_icl.vocabulary import VERDICT_DESIGNS

DEFAULT_PRESET = "tiny-categorical"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the main job: data, train, behaviour, fit and report in one resumable command",
        description="Run every stage for a preset or spec file: write the strategy "
        "predictions (ricl data), train (ricl train), measure the behaviour, fit the rational "
        "model (ricl fit) and write the report (ricl report). A rerun skips finished stages "
        "and resumes an interrupted training. Prints the report's path at the end.",
    )
    parser.add_argument(
        "spec",
        metavar="PRESET",
        nargs="?",
        default=DEFAULT_PRESET,
        help=f"a preset name or TOML spec file (default {DEFAULT_PRESET})",
    )
    parser.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default=None, help="torch device for training")
    add_threads_option(parser, "every stage (torch, JAX)")
    add_fit_options(parser)
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="train N training seeds (the spec's seed and the N - 1 after it) as replicates; "
        "the fit pools them (partial pooling: population and per-seed alpha, beta, gamma) "
        "and --held-out seed:S can hold one out. Costs N times the training time",
    )
    parser.add_argument(
        "--verdict-designs",
        default=",".join(VERDICT_DESIGNS),
        metavar="DESIGNS",
        help="held-out designs fitted beside --held-out (default model, one fit file each: "
        "fit_<design>.nc) so that the report can say whether to believe alpha: the law must "
        "predict held-out checkpoints and held-out num_tasks (docs/science.md, When to "
        f"believe alpha). Comma-separated; none fits no more (default {','.join(VERDICT_DESIGNS)})",
    )
    parser.add_argument("--force", action="store_true", help="redo every stage from scratch")
    add_memory_option(parser)
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print runs, ensembles, member-steps, memory, disk and estimated time (from a "
        "short probe on this machine), and stop: nothing is written",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    _check_outputs(args)
    args.model = model_or_default(args)  # run observes weights: the default model
    specs = [with_seeds(spec, args.seeds) for spec in load_specs(args.spec)]
    check_memory(specs, args)
    if args.plan:
        from rational_icl.cli.plan import print_plan

        return print_plan(specs, args)
    configure_jax(max(args.chains, os.cpu_count() or 1), args.threads)  # before JAX starts
    pages = run_specs(
        specs,
        args.out,
        _fit_settings(args),
        verdict_designs=verdict_designs(args),
        device=args.device,
        threads=args.threads,
        force=args.force,
        transition_level=args.transition_level,
        ignore_memory=getattr(args, "ignore_memory_check", False),
        on_fit=functools.partial(print_summary, transition_level=args.transition_level),
    )
    for page in pages:
        print(f"report: {page}")
    return 0


def with_seeds(spec, count: int | None):
    """``spec`` with ``count`` training seeds from its own (unchanged when None)."""
    if count is None:
        return spec
    if not isinstance(spec.seed, int):
        raise RiclError(
            f"--seeds {count}: the spec already lists seeds {list(spec.seed)}; give one of them"
        )
    return dataclasses.replace(
        spec, seed=spec.seed if count == 1 else tuple(range(spec.seed, spec.seed + count))
    )


def _check_outputs(args) -> None:
    """Every option and the output folder, before the first stage starts."""
    check_writable_folder("-o", args.out)
    if args.seeds is not None and not 1 <= args.seeds <= 100:
        raise RiclError(f"--seeds must be between 1 and 100; got {args.seeds}")
    from rational_icl.fits.designs import held_out_design

    held_out_design(args.held_out)  # a bad design fails before training, not after
    for design in verdict_designs(args):
        try:
            held_out_design(design)
        except RiclError as error:
            raise RiclError(f"--verdict-designs: {error}") from None
    check_threads(args.threads)
    check_sampler_options(args)
    check_transition_level(args.transition_level)
    if args.device is not None:
        check_device(args.device)


def verdict_designs(args) -> list[str]:
    """``--verdict-designs`` as a list, without ``--held-out``'s design (fitted anyway)."""
    text = str(args.verdict_designs).strip()
    designs = [] if text == "none" else [d.strip() for d in text.split(",") if d.strip()]
    return [d for d in dict.fromkeys(designs) if d != args.held_out]


def _fit_settings(args):
    """ricl fit's defaults, with the options ricl run shares with it."""
    from rational_icl.cli.fit import shared_fit_settings
    from rational_icl.fits.inputs import FitSettings

    return FitSettings(**shared_fit_settings(args))

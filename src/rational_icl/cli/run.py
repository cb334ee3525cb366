"""``ricl run``: the main job, data -> train -> behaviour -> fit -> report, resumable.

Each stage writes its files into the output folder and a rerun skips the stages whose
output is already there and newer than its inputs (training resumes from its last
checkpoint). Each stage is a function of ``rational_icl.pipeline`` and the one behind its
own command (``write_data``, ``train_specs``, ``fit_runs``, ``report``), and ``ricl run``
prints that command as it goes:
what it does can be repeated, or redone with other options, one command at a time.

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

import argparse
import dataclasses
import os
import time
from contextlib import contextmanager
from pathlib import Path

from rational_icl.cli.checks import (
    IGNORE_MEMORY,
    add_memory_option,
    add_threads_option,
    check_device,
    check_memory,
    check_sampler_options,
    check_threads,
    check_transition_level,
    check_writable_folder,
)
from rational_icl.cli.fit import add_fit_options, model_or_default
from rational_icl.data import load_specs
from rational_icl.errors import RiclError
from rational_icl.io import folder_lock
from rational_icl.pipeline import configure_jax
from rational_icl.vocabulary import PAPER_MODEL

DEFAULT_PRESET = "tiny-categorical"
# The designs besides --held-out that test the verdict on alpha (fits/verdict.py).
VERDICT_DESIGNS = ("forecast:0.3", "num-tasks")


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
    pages = []
    with folder_lock(args.out, "ricl run"):  # one writer per folder
        for spec in specs:
            folder = args.out / spec.name if len(specs) > 1 else args.out
            pages.append(run_spec(spec, folder, args))
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


def run_spec(spec, folder: Path, args) -> Path:
    """Every stage for one spec into ``folder``; returns the report's index.html."""
    from rational_icl.pipeline import report, train_specs, write_data

    runs_dir, behaviour_file = folder / "runs", folder / "behaviour.nc"
    fit_file, report_dir = folder / "fit.nc", folder / "report"
    spec_file = folder / "spec.toml"
    folder.mkdir(parents=True, exist_ok=True)
    run_files = [runs_dir / f"{r.name}.nc" for r in spec.runs()]
    _check_same_experiment(spec_file, runs_dir, run_files)
    if not spec_file.exists() or spec_file.read_text() != spec.to_toml():
        spec_file.write_text(spec.to_toml())  # the commands printed below read it from here

    if args.force or not all(p.exists() for p in run_files):
        with _stage(["data", str(spec_file), "--out", str(runs_dir), *_force(args)]):
            write_data([spec], runs_dir, force=args.force)  # on the CPU, as `ricl data`
    else:
        _skip("data", runs_dir)
    if args.force or not _trained(spec, runs_dir):
        options = ["--device", args.device] if args.device else []
        options += ["--threads", str(args.threads)] if args.threads is not None else []
        with _stage(["train", str(spec_file), "--out", str(runs_dir), *options, *_force(args)]):
            device = check_device(args.device)
            train_specs([spec], runs_dir, device=device, force=args.force, threads=args.threads)
    else:
        _skip("train", runs_dir)
    _report_convergence(spec, runs_dir)
    if args.force or not _newer(behaviour_file, run_files):
        _behaviour(runs_dir, behaviour_file)
    else:
        _skip("behaviour", behaviour_file)
    fits = [(fit_file, args.model, args.held_out)]
    if args.model != PAPER_MODEL:  # the authors' form, always reported beside the default
        fits.append((folder / f"fit_{PAPER_MODEL}.nc", PAPER_MODEL, args.held_out))
    for design in verdict_designs(args):  # what the verdict on alpha needs
        fits.append((folder / f"fit_{design.replace(':', '-')}.nc", args.model, design))
    fit_files = [path for path, _, _ in fits]
    for path, model, design in fits:
        inputs = [*run_files, behaviour_file]
        _fit_stage(runs_dir, path, behaviour_file, inputs, model, design, args)
    page = report_dir / "index.html"
    if args.force or not _newer(page, [*fit_files, behaviour_file]):
        sources = [behaviour_file, *fit_files]
        level = args.transition_level
        options = ["--transition-level", f"{level:g}"] if level is not None else []
        with _stage(["report", *map(str, sources), "-o", str(report_dir), *options]):
            report(sources, report_dir, transition_level=level)
    else:
        _skip("report", page)
    return page


def verdict_designs(args) -> list[str]:
    """``--verdict-designs`` as a list, without ``--held-out``'s design (fitted anyway)."""
    text = str(args.verdict_designs).strip()
    designs = [] if text == "none" else [d.strip() for d in text.split(",") if d.strip()]
    return [d for d in dict.fromkeys(designs) if d != args.held_out]


def _fit_stage(runs_dir, fit_file, behaviour_file, inputs, model, design, args) -> None:
    """Fit ``model`` with held-out ``design`` into ``fit_file`` unless a fit with these
    options is newer than its inputs."""
    from rational_icl.cli.fit import fit_and_summarise

    args = argparse.Namespace(**{**vars(args), "model": model, "held_out": design})
    settings = _fit_settings(args)
    changed = _changed_fit_options(fit_file, fit_options(args), settings)
    if changed:
        print(f"== fit: options differ from {fit_file}'s ({changed}); fitting again")
    if args.force or changed or not _newer(fit_file, inputs):
        with _stage(_fit_command(runs_dir, fit_file, behaviour_file, args)):
            fit_and_summarise(
                runs_dir,
                fit_file,
                settings,
                behaviour_file=behaviour_file,
                transition_level=args.transition_level,
            )
    else:
        _skip("fit", fit_file)


def _check_same_experiment(spec_file: Path, runs_dir: Path, run_files: list[Path]) -> None:
    """Refuse a spec whose runs would join those another spec wrote to this folder: the fit
    and the report would mix both while spec.toml names one (issue 24, item 2)."""
    if not spec_file.exists() or not runs_dir.is_dir():
        return
    expected = {p.name for p in run_files}
    others = sorted(p.name for p in runs_dir.glob("*.nc") if p.name not in expected)
    if others:
        raise RiclError(
            f"{str(runs_dir)!r} holds runs of the spec in {str(spec_file)!r} (e.g. {others[0]!r}) "
            "that this spec does not make; give another -o, or move those runs away"
        )


def fit_options(args) -> dict:
    """The fit's root attributes (fits/tree.py) these options set, by attribute; None: not
    compared (``auto`` is resolved from the data). Options that join the fit join here."""
    return {
        "inference_method": args.method,
        "measure": None if args.measure == "auto" else args.measure,
        "fitted_splits": None if args.splits == "all" else args.splits,
        "drop_early": int(bool(args.drop_early)),
        "held_out_design": args.held_out,
        "model": args.model,
    }


def _recorded_fit_options(fit_file: Path) -> dict:
    """``fit_options``' attributes as ``fit_file`` records them (drop_early: whether it has
    the dropped cells); {} when there is no readable fit."""
    from rational_icl.fits.tree import read_fit

    if not fit_file.is_file():
        return {}
    try:
        tree = read_fit(fit_file)
    except RiclError:
        return {}  # an unreadable fit is refitted anyway (it is older than nothing)
    recorded = dict(tree.attrs)
    recorded["drop_early"] = int("dropped" in tree["constant_data"].data_vars)
    return recorded


def _changed_fit_options(fit_file: Path, options: dict, settings) -> str:
    """'name recorded -> wanted' for each option the existing fit was made with otherwise:
    every FitSettings field where the fit records them (``fit_settings``), else the
    ``options`` its attributes show (fits of earlier versions)."""
    import json

    from rational_icl.fits.inputs import FIT_SETTINGS

    recorded = _recorded_fit_options(fit_file)
    if not recorded:
        return ""
    if FIT_SETTINGS in recorded:
        before, wanted = json.loads(str(recorded[FIT_SETTINGS])), json.loads(settings.recorded())
        return ", ".join(
            f"{name} {_setting_text(before.get(name))} -> {_setting_text(value)}"
            for name, value in wanted.items()
            if before.get(name) != value
        )
    changed = [
        f"{name} {recorded.get(name)!s} -> {wanted}"
        for name, wanted in options.items()
        if wanted is not None and str(recorded.get(name)) != str(wanted)
    ]
    return ", ".join(changed)


def _setting_text(value) -> str:
    """A recorded FitSettings value as the options spell it (None: the default)."""
    if value is None:
        return "default"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _fit_settings(args):
    """ricl fit's defaults, with the options ricl run shares with it."""
    from rational_icl.cli.fit import shared_fit_settings
    from rational_icl.fits.inputs import FitSettings

    return FitSettings(**shared_fit_settings(args))


def _fit_command(runs_dir: Path, fit_file: Path, behaviour_file: Path, args) -> list[str]:
    """The ``ricl fit`` command line that repeats this stage."""
    argv = ["fit", str(runs_dir), "-o", str(fit_file), "--force", "--method", args.method]
    argv += ["--chains", str(args.chains), "--draws", str(args.draws)]
    argv += ["--warmup", str(args.warmup)]
    argv += ["--drop-early" if args.drop_early else "--no-drop-early"]
    argv += [] if args.law_free else ["--no-law-free"]
    argv += ["--measure", args.measure, "--behaviour", str(behaviour_file)]
    argv += ["--held-out", args.held_out] if args.held_out != "authors" else []
    argv += ["--model", args.model]
    return argv + (["--splits", args.splits] if args.splits != "all" else [])


def _force(args) -> list[str]:
    force = ["--force"] if args.force else []
    return force + ([IGNORE_MEMORY] if getattr(args, "ignore_memory_check", False) else [])


def _trained(spec, runs_dir: Path) -> bool:
    from rational_icl.training.loop import is_finished  # torch loads only here

    return all(is_finished(r, runs_dir) for r in spec.runs())


def _report_convergence(spec, runs_dir: Path) -> None:
    """Print each scalar spec's last-checkpoint loss ratios; warn (stderr) where a
    transformer did not reach its strategies, since the fit would then read an untrained
    model."""
    import sys

    from rational_icl.data import Run
    from rational_icl.training.convergence import convergence, summary_line, warning_line

    scalars = spec.expand()
    for scalar in scalars:
        runs = [Run(scalar, d) for d in dict.fromkeys(scalar.num_tasks)]
        report = convergence(runs_dir / f"{run.name}.nc" for run in runs)
        # a grid names each configuration by its run-file stem, num_tasks left out
        stem = runs[0].name.replace(f"_D{runs[0].num_tasks}_", "_")
        name = spec.name or scalar.setting
        name = f"{name} [{stem}]" if len(scalars) > 1 else name
        print(summary_line(report, name), flush=True)
        warning = warning_line(report, name)
        if warning:
            print(warning, file=sys.stderr, flush=True)


def _newer(output: Path, inputs: list[Path]) -> bool:
    """Whether ``output`` exists and is at least as new as every input."""
    if not output.exists():
        return False
    return all(output.stat().st_mtime >= p.stat().st_mtime for p in inputs if p.exists())


def _skip(stage: str, output: Path) -> None:
    print(f"== {stage}: done, kept {output} (rerun with --force to redo)")


@contextmanager
def _stage(argv: list[str]):
    """Announce a stage as the ``ricl`` command that repeats it, then time it."""
    print(f"== ricl {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)


def _behaviour(runs_dir: Path, out: Path) -> None:
    from rational_icl.pipeline import measure_behaviour

    print(f"== behaviour: {runs_dir} -> {out}", flush=True)
    start = time.perf_counter()
    measure_behaviour(runs_dir, out)
    print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)

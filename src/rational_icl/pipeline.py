"""The stages as Python functions: what each ``ricl`` command runs, for notebooks and scripts.

    from rational_icl import pipeline
    from rational_icl.data import load_specs
    from rational_icl.fits import FitSettings

    pipeline.configure_jax()  # first: float64 and one CPU device per chain
    specs = load_specs("tiny-categorical")
    pipeline.write_data(specs, "runs")
    pipeline.train_specs(specs, "runs")
    pipeline.measure_behaviour("runs", "behaviour.nc")
    pipeline.fit_runs("runs", "fit.nc", FitSettings())
    pipeline.report(["behaviour.nc", "fit.nc"], "report")
    pipeline.run_specs(specs, "job", FitSettings())  # all of the above, as `ricl run`

Each function writes its files atomically and returns what it wrote; torch, JAX and
matplotlib load only inside the stage that needs them. The ``ricl`` commands add option
checks and the printed summaries around these (``rational_icl.cli``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from rational_icl.errors import RiclError
from rational_icl.io import (
    check_no_live_writer,
    folder_lock,
    make_out_folder,
    netcdf_groups,
    output_lock,
    read_netcdf,
    write_netcdf,
)

log = logging.getLogger(__name__)  # the CLI prints it (cli/main.py)

# What the numerical libraries read for their thread pools: OpenMP (torch, numexpr), MKL,
# OpenBLAS, for whatever loads after limit_threads (and every child process).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# XLA's CPU backend takes no thread count: its Eigen pool is one thread or one per core.
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def configure_jax(cpu_devices: int | None = None, threads: int | None = None) -> None:
    """Set JAX up for fitting: float64 arrays and ``cpu_devices`` CPU devices (default: one
    per core), so that NUTS chains run in parallel.

    Call it before anything runs in JAX (the device count and the XLA flags are read when
    JAX starts its backend); ``ricl fit`` and ``ricl run`` call it first. Float64 is needed
    because K ** beta and N ** (1 - alpha) span more orders of magnitude than float32
    resolves; ``rational_icl.fits.fit`` refuses to run without it. ``threads`` (see
    :func:`limit_threads`) also caps the devices, each of which runs a chain on a thread of
    its own: with fewer threads than chains, the chains run one after another.
    """
    import numpyro

    devices = cpu_devices or os.cpu_count() or 1
    if threads is not None:
        limit_threads(threads)
        devices = min(devices, threads)
    numpyro.set_host_device_count(devices)
    numpyro.enable_x64()


def limit_threads(threads: int | None) -> None:
    """Compute on about ``threads`` CPU threads (None: the libraries' own choice, all cores).

    Torch gets the count directly where it is loaded, and through ``OMP_NUM_THREADS`` where
    it loads later; so do MKL and OpenBLAS (:data:`THREAD_VARIABLES`) for what loads later.
    XLA takes no count: with one thread its own pool is switched off, with more it keeps one
    per core (:func:`configure_jax` caps JAX's devices). Call it before the stage computes,
    and before JAX starts.
    """
    if threads is None:
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and _XLA_ONE_THREAD not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_XLA_ONE_THREAD}".strip()
    if "torch" in sys.modules:  # never imported here just to be told: fits run without it
        sys.modules["torch"].set_num_threads(threads)


def write_data(specs, out: str | Path, *, device="cpu", force: bool = False) -> list[Path]:
    """The data stage: one predictions file per run of ``specs`` in ``out`` (existing files
    are kept unless ``force``); returns the files written."""
    from rational_icl.training.predictions import strategy_dataset  # torch loads only here

    out = Path(out)
    runs = [r for spec in specs for r in spec.runs()]
    check_same_experiment(specs, out)
    make_out_folder(out)
    paths = {r: out / f"{r.name}.nc" for r in runs}
    todo = [r for r in runs if force or not paths[r].exists()]
    for r in runs:
        if r not in todo:
            log.info(f"exists, kept (use --force to overwrite): {paths[r]}")
    with (
        folder_lock(out, "ricl data"),  # one writer per folder
        tqdm(todo, desc="ricl data", unit="run", dynamic_ncols=True, disable=None) as bar,
    ):
        for r in bar:
            dataset = strategy_dataset(r, device=device, progress=bar.set_postfix_str)
            write_netcdf(dataset, paths[r])
    log.info(f"wrote {len(todo)} file(s) to {out}")
    return [paths[r] for r in todo]


def train_specs(
    specs, out: str | Path, *, device=None, force: bool = False, threads: int | None = None
) -> list[Path]:
    """The training stage: train every run of ``specs`` into ``out`` (finished runs are
    kept unless ``force``; partial ones resume) on ``device`` (default: cuda where there is
    one, else cpu); returns the files trained."""
    import torch  # loads only when the stage runs

    from rational_icl.training.loop import is_finished, run_path, train

    out = Path(out)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    limit_threads(threads)
    check_same_experiment(specs, out)
    make_out_folder(out)
    with folder_lock(out, "ricl train"):  # one writer per folder
        for spec in specs:
            for r in spec.runs():
                if not force and is_finished(r, out):
                    log.info(f"finished, kept (use --force to retrain): {run_path(r, out)}")
        written = []
        for spec in specs:
            written += train(spec, out, device=device, force=force)
    log.info(f"trained {len(written)} run(s) into {out}")
    return written


def check_same_experiment(specs, out: str | Path) -> None:
    """Refuse an output folder whose run files another spec wrote: the spec's keys in
    their ``spec`` attribute (all but its name and num_tasks list) differ from those of
    every scalar spec of ``specs``. Their runs would be kept as this spec's, or fitted
    together with its runs (issue 35, item 16)."""
    from rational_icl.fits.identity import spec_keys
    from rational_icl.io import netcdf_attributes

    out = Path(out)
    if not out.is_dir():
        return
    ours = [spec_keys(scalar.to_toml()) for spec in specs for scalar in spec.expand()]
    for path in sorted(out.glob("*.nc")):
        attributes = netcdf_attributes(path) or {}
        if "spec" not in attributes:
            continue  # not a run file (a behaviour or fit file, say)
        theirs = spec_keys(attributes["spec"])
        if theirs not in ours:
            key, mine, other = _first_difference(ours[0], theirs)
            raise RiclError(
                f"--out {str(out)!r} holds runs of another spec: file {path.name!r} has {key} "
                f"= {other!r} where this spec has {mine!r}; give another --out, or move those "
                "runs away"
            )


def _first_difference(ours, theirs, prefix: str = "") -> tuple[str, object, object]:
    """(key, our value, their value) of the first key where two spec dicts differ."""
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return (prefix.rstrip(".") or "spec", ours, theirs)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            return _first_difference(ours.get(key), theirs.get(key), f"{prefix}{key}.")
    return (prefix.rstrip(".") or "spec", ours, theirs)


def measure_behaviour(runs_dir: str | Path, out: str | Path | None = None):
    """The behaviour stage: the weights, distances and losses of docs/files.md §2 measured
    from a runs folder; written to ``out`` when given. Returns the dataset."""
    from rational_icl.fits import load_behaviour

    if out is None:
        return load_behaviour(runs_dir)
    with output_lock(out, "behaviour"):  # one writer per output file
        measured = load_behaviour(runs_dir)
        write_netcdf(measured, out)
    return measured


def fit_runs(
    runs_dir: str | Path, out: str | Path, settings, *, behaviour_file=None, force: bool = True
):
    """The fit stage: the rational model fitted to a runs folder (its behaviour measured
    here, or read from ``behaviour_file``) and written to ``out``; returns the DataTree.

    Runs that diverged or stopped early are named in a warning line and fitted as they are.
    ``out`` is locked from the start (two fits of one file cannot both write it); without
    ``force`` an existing ``out`` is refused once the lock is held.
    """
    with output_lock(out, "ricl fit"):
        if not force and Path(out).exists():
            raise RiclError(f"fit file {str(out)!r} exists (use --force to overwrite)")
        return _fit_runs(runs_dir, out, settings, behaviour_file)


def _fit_runs(runs_dir, out, settings, behaviour_file):
    from rational_icl.fits.behaviour import behaviour
    from rational_icl.fits.identity import RUNS_IDENTITY, check_same_runs
    from rational_icl.fits.inference import fit
    from rational_icl.fits.inputs import FIT_SETTINGS
    from rational_icl.fits.runs import open_runs
    from rational_icl.fits.tree import write_fit

    runs = open_runs(runs_dir)
    _warn_diverged(runs)
    _warn_unfinished(runs)
    if behaviour_file is not None:
        measured = read_netcdf(behaviour_file)
        _check_same_cells(measured, runs, behaviour_file, runs_dir)
        check_same_runs(
            runs.attrs[RUNS_IDENTITY], measured, f"--behaviour {str(behaviour_file)!r}", runs_dir
        )
    else:
        measured = behaviour(runs).compute()
    needs_runs = settings.observation == "outputs" or settings.context_dependent
    with warnings.catch_warnings():
        # NumPy's warning for a cell without values (e.g. a dropped checkpoint): no news
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        tree = fit(measured, settings, runs=runs if needs_runs else None)
    for recorded in ("unfinished_runs", RUNS_IDENTITY):  # which runs the fit was made from
        if recorded in runs.attrs:
            tree.attrs[recorded] = runs.attrs[recorded]
    tree.attrs[FIT_SETTINGS] = settings.recorded()  # how: ricl run refits when it changes
    write_fit(tree, out)
    return tree


def report(
    inputs: list[str | Path],
    out: str | Path,
    *,
    title: str = "rational-icl report",
    transition_level: float | None = None,
):
    """The report stage: figures, tables and index.html in ``out`` from runs folders,
    behaviour files and fit files; returns the page."""
    inputs, out = [Path(p) for p in inputs], Path(out)
    if out.exists() and not out.is_dir():
        raise RiclError(f"-o {str(out)!r} is a file, not a folder")
    behaviour, fits = read_report_inputs(inputs)
    import matplotlib

    matplotlib.use("Agg")  # figures go to files; never open a window
    from rational_icl.reports import write_report

    with output_lock(out, "ricl report"):  # one writer per report folder
        page = write_report(
            out,
            behaviour=behaviour,
            fits=fits,
            title=title,
            sources=[str(p) for p in inputs],
            transition_level=transition_level,
        )
    log.info(f"wrote {page}")
    return page


def read_report_inputs(paths: list[Path]):
    """``(behaviour or None, {name: fit})`` from runs folders, behaviour files and fit files.

    At most one runs folder or behaviour file; fits are named by file stem (by parent
    folder and stem where stems repeat).
    """
    from rational_icl.fits import load_behaviour
    from rational_icl.fits.tree import read_fit

    behaviour_sources, fit_paths = [], []
    for path in paths:
        if path.is_dir():
            check_no_live_writer(path, "ricl report")  # its runs are still being written
            behaviour_sources.append(path)
        elif not path.is_file():
            raise RiclError(f"input {str(path)!r} does not exist")
        elif "posterior" in netcdf_groups(path):
            fit_paths.append(path)
        else:
            behaviour_sources.append(path)
    if len(behaviour_sources) > 1:
        names = ", ".join(repr(str(p)) for p in behaviour_sources)
        raise RiclError(f"give at most one runs folder or behaviour file; got {names}")
    behaviour = None
    if behaviour_sources:
        source = behaviour_sources[0]
        if source.is_dir():
            behaviour = load_behaviour(source)
        else:
            behaviour = read_netcdf(source)
            if "relative_distance" not in behaviour:
                raise RiclError(
                    f"file {str(source)!r} is neither a fit (no posterior group) nor a "
                    "behaviour file (no relative_distance); give a runs folder instead"
                )
    stems = [p.stem for p in fit_paths]
    fits = {}
    for path in fit_paths:
        name = path.stem if stems.count(path.stem) == 1 else f"{path.parent.name}/{path.stem}"
        if name in fits:
            raise RiclError(f"fit {str(path)!r} is given twice")
        fits[name] = read_fit(path)
    _check_report_runs(behaviour, fits, behaviour_sources, fit_paths)
    return behaviour, fits


def _check_report_runs(behaviour, fits, behaviour_sources, fit_paths) -> None:
    """Every fit must have been made from the runs the report draws."""
    from rational_icl.fits.identity import RUNS_IDENTITY, check_same_runs

    if behaviour is None or RUNS_IDENTITY not in behaviour.attrs:
        return
    for fit, path in zip(fits.values(), fit_paths, strict=True):
        check_same_runs(
            str(behaviour.attrs[RUNS_IDENTITY]),
            fit,
            f"fit {str(path)!r}",
            str(behaviour_sources[0]),
        )


def _check_same_cells(measured, runs, behaviour_file, runs_dir) -> None:
    """A behaviour file must have been measured from these runs: the same grid of cells."""
    for dim in ("num_tasks", "checkpoint", "split"):
        if dim not in measured.dims or list(measured[dim].values) != list(runs[dim].values):
            raise RiclError(
                f"--behaviour {str(behaviour_file)!r} was not measured from "
                f"{str(runs_dir)!r} (its {dim} values differ); leave out --behaviour to "
                "measure the runs here"
            )


def _warn_unfinished(runs) -> None:
    """One line naming the runs that stopped before max_steps (a kill, or a live training)."""
    if "unfinished_runs" in runs.attrs:
        log.warning(
            f"warning: unfinished run(s), fitted as they are: {runs.attrs['unfinished_runs']}; "
            "resume them with `ricl train` for the full fit"
        )


def _warn_diverged(runs) -> None:
    """One warning per run whose final loss (id split) is above the constant strategy's,
    the rule by which training sets a run's ``diverged`` attribute."""
    sources = runs.source_file
    final = runs.transformer_loss.isel(checkpoint=-1).sel(split="id", drop=True)
    constant = runs.strategy_loss.sel(strategy="constant", drop=True).broadcast_like(final)
    final, constant = (x.transpose(*sources.dims).values for x in (final, constant))
    flagged = ~(final <= constant) & (sources.values != "")  # NaN: diverged too
    for source, loss, bound in zip(
        sources.values[flagged], final[flagged], constant[flagged], strict=True
    ):
        log.warning(
            f"warning: run {str(source)!r} diverged: its final transformer_loss {loss:.3g} nats "
            f"(id) is above the constant strategy's {bound:.3g}, so its weights mean nothing; "
            "retrain it with a lower learning_rate or move it out of RUNS_DIR"
        )


# ---------------------------------------------------------------------------- ricl run


def run_specs(
    specs,
    out: str | Path,
    settings,
    *,
    verdict_designs=(),
    device: str | None = None,
    threads: int | None = None,
    force: bool = False,
    transition_level: float | None = None,
    ignore_memory: bool = False,
    on_fit=None,
) -> list[Path]:
    """``ricl run``: every stage for each spec of ``specs``, skipping those whose outputs
    are newer than their inputs; returns each spec's report page.

    Parameters
    ----------
    specs : list of ExperimentSpec
        One folder each: ``out`` itself for one spec, ``out/<spec name>`` for several.
    out : str or Path
        The job's folder (locked while it runs).
    settings : FitSettings
        The fit of ``fit.nc``; the paper's model is fitted beside it (``fit_paper.nc``)
        and so is every held-out design of ``verdict_designs`` (``fit_<design>.nc``).
    verdict_designs : sequence of str
        The held-out designs the verdict on α reads, besides ``settings.held_out``.
    device, threads, force
        As :func:`train_specs` takes them; ``force`` redoes every stage.
    transition_level : float, optional
        The report's transition step forecast level (fits/transition.py).
    ignore_memory : bool
        Whether the memory check was waived (the printed commands say so).
    on_fit : callable, optional
        Called with each fit made and its file (``ricl run`` prints its summary).

    Each stage is announced (``logging``, INFO) as the ``ricl`` command that repeats it.
    """
    out = Path(out)
    job = _Job(
        settings,
        tuple(verdict_designs),
        device,
        threads,
        force,
        transition_level,
        ignore_memory,
        on_fit,
    )
    with folder_lock(out, "ricl run"):  # one writer per folder
        return [run_spec(spec, out / spec.name if len(specs) > 1 else out, job) for spec in specs]


@dataclasses.dataclass(frozen=True)
class _Job:
    """What :func:`run_specs` was asked, passed to every stage."""

    settings: object
    verdict_designs: tuple = ()
    device: str | None = None
    threads: int | None = None
    force: bool = False
    transition_level: float | None = None
    ignore_memory: bool = False
    on_fit: object = None


def run_spec(spec, folder: Path, job: _Job) -> Path:
    """Every stage for one spec into ``folder``; returns the report's index.html."""
    runs_dir, behaviour_file = folder / "runs", folder / "behaviour.nc"
    spec_file = folder / "spec.toml"
    folder.mkdir(parents=True, exist_ok=True)
    run_files = [runs_dir / f"{r.name}.nc" for r in spec.runs()]
    _check_spec_folder(spec_file, runs_dir, run_files)
    if not spec_file.exists() or spec_file.read_text() != spec.to_toml():
        spec_file.write_text(spec.to_toml())  # the commands announced below read it from here
    _data_and_training(spec, spec_file, runs_dir, run_files, job)
    if job.force or not _newer(behaviour_file, run_files):
        _behaviour(runs_dir, behaviour_file)
    else:
        _skip("behaviour", behaviour_file)
    fit_files = []
    for path, settings in _fits(folder, job):
        _fit_stage(runs_dir, path, behaviour_file, [*run_files, behaviour_file], settings, job)
        fit_files.append(path)
    return _report_stage(folder / "report", [behaviour_file, *fit_files], job)


def _data_and_training(spec, spec_file, runs_dir, run_files, job) -> None:
    """The data and training stages, each skipped where its files are there."""
    if job.force or not all(p.exists() for p in run_files):
        with _stage(["data", str(spec_file), "--out", str(runs_dir), *_force(job)]):
            write_data([spec], runs_dir, force=job.force)  # on the CPU, as `ricl data`
    else:
        _skip("data", runs_dir)
    if job.force or not _trained(spec, runs_dir):
        options = ["--device", job.device] if job.device else []
        options += ["--threads", str(job.threads)] if job.threads is not None else []
        with _stage(["train", str(spec_file), "--out", str(runs_dir), *options, *_force(job)]):
            train_specs([spec], runs_dir, device=job.device, force=job.force, threads=job.threads)
    else:
        _skip("train", runs_dir)
    _report_convergence(spec, runs_dir)


def _fits(folder: Path, job: _Job) -> list[tuple[Path, object]]:
    """(fit file, settings) of every fit: the model asked for, the paper's beside it, and
    the model under each verdict design."""
    from rational_icl.vocabulary import PAPER_MODEL

    settings = job.settings
    fits = [(folder / "fit.nc", settings)]
    if settings.model != PAPER_MODEL:  # the authors' form, always reported beside the default
        fits.append((folder / f"fit_{PAPER_MODEL}.nc", replace(settings, model=PAPER_MODEL)))
    for design in job.verdict_designs:  # what the verdict on alpha needs
        path = folder / f"fit_{design.replace(':', '-')}.nc"
        fits.append((path, replace(settings, held_out=design)))
    return fits


def _report_stage(report_dir: Path, sources: list[Path], job: _Job) -> Path:
    page = report_dir / "index.html"
    if job.force or not _newer(page, sources):
        level = job.transition_level
        options = ["--transition-level", f"{level:g}"] if level is not None else []
        with _stage(["report", *map(str, sources), "-o", str(report_dir), *options]):
            report(sources, report_dir, transition_level=level)
    else:
        _skip("report", page)
    return page


def _fit_stage(runs_dir, fit_file, behaviour_file, inputs, settings, job: _Job) -> None:
    """Fit ``settings`` into ``fit_file`` unless a fit with these settings is newer than
    its inputs."""
    changed = _changed_fit_options(fit_file, settings)
    if changed:
        log.info(f"== fit: options differ from {fit_file}'s ({changed}); fitting again")
    if job.force or changed or not _newer(fit_file, inputs):
        with _stage(_fit_command(runs_dir, fit_file, behaviour_file, settings)):
            tree = fit_runs(runs_dir, fit_file, settings, behaviour_file=behaviour_file)
            if job.on_fit is not None:
                job.on_fit(tree, fit_file)
    else:
        _skip("fit", fit_file)


def _check_spec_folder(spec_file: Path, runs_dir: Path, run_files: list[Path]) -> None:
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


def fit_options(settings) -> dict:
    """The fit's root attributes (fits/tree.py) these settings set, by attribute; None: not
    compared (``auto`` is resolved from the data)."""
    return {
        "inference_method": settings.method,
        "measure": None if settings.measure == "auto" else settings.measure,
        "fitted_splits": None if settings.splits is None else ",".join(settings.splits),
        "drop_early": int(bool(settings.drop_early)),
        "held_out_design": settings.held_out,
        "model": settings.model,
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


def _changed_fit_options(fit_file: Path, settings) -> str:
    """'name recorded -> wanted' for each option the existing fit was made with otherwise:
    every FitSettings field where the fit records them (``fit_settings``), else the
    ``fit_options`` its attributes show (fits of earlier versions)."""
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
        for name, wanted in fit_options(settings).items()
        if wanted is not None and str(recorded.get(name)) != str(wanted)
    ]
    return ", ".join(changed)


def _setting_text(value) -> str:
    """A recorded FitSettings value as the options spell it (None: the default)."""
    if value is None:
        return "default"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _fit_command(runs_dir: Path, fit_file: Path, behaviour_file: Path, settings) -> list[str]:
    """The ``ricl fit`` command line that repeats this stage."""
    s = settings
    argv = ["fit", str(runs_dir), "-o", str(fit_file), "--force", "--method", s.method]
    argv += ["--chains", str(s.chains), "--draws", str(s.draws), "--warmup", str(s.warmup)]
    argv += ["--drop-early" if s.drop_early else "--no-drop-early"]
    argv += [] if s.law_free else ["--no-law-free"]
    argv += ["--measure", s.measure, "--behaviour", str(behaviour_file)]
    argv += ["--held-out", s.held_out] if s.held_out != "authors" else []
    argv += ["--model", s.model]
    return argv + (["--splits", ",".join(s.splits)] if s.splits is not None else [])


def _force(job: _Job) -> list[str]:
    from rational_icl.vocabulary import IGNORE_MEMORY

    force = ["--force"] if job.force else []
    return force + ([IGNORE_MEMORY] if job.ignore_memory else [])


def _trained(spec, runs_dir: Path) -> bool:
    from rational_icl.training.loop import is_finished  # torch loads only here

    return all(is_finished(r, runs_dir) for r in spec.runs())


def _report_convergence(spec, runs_dir: Path) -> None:
    """Each scalar spec's last-checkpoint loss ratios (INFO); a warning where a transformer
    did not reach its strategies, since the fit would then read an untrained model."""
    from rational_icl.data import Run
    from rational_icl.training.convergence import convergence, summary_line, warning_line

    scalars = spec.expand()
    for scalar in scalars:
        runs = [Run(scalar, d) for d in dict.fromkeys(scalar.num_tasks)]
        found = convergence(runs_dir / f"{run.name}.nc" for run in runs)
        # a grid names each configuration by its run-file stem, num_tasks left out
        stem = runs[0].name.replace(f"_D{runs[0].num_tasks}_", "_")
        name = spec.name or scalar.setting
        name = f"{name} [{stem}]" if len(scalars) > 1 else name
        log.info(summary_line(found, name))
        warning = warning_line(found, name)
        if warning:
            log.warning(warning)


def _newer(output: Path, inputs: list[Path]) -> bool:
    """Whether ``output`` exists and is at least as new as every input."""
    if not output.exists():
        return False
    return all(output.stat().st_mtime >= p.stat().st_mtime for p in inputs if p.exists())


def _skip(stage: str, output: Path) -> None:
    log.info(f"== {stage}: done, kept {output} (rerun with --force to redo)")


@contextmanager
def _stage(argv: list[str]):
    """Announce a stage as the ``ricl`` command that repeats it, then time it."""
    log.info(f"== ricl {' '.join(argv)}")
    start = time.perf_counter()
    yield
    log.info(f"   ({time.perf_counter() - start:.0f} s)")


def _behaviour(runs_dir: Path, out: Path) -> None:
    log.info(f"== behaviour: {runs_dir} -> {out}")
    start = time.perf_counter()
    measure_behaviour(runs_dir, out)
    log.info(f"   ({time.perf_counter() - start:.0f} s)")

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

Each function writes its files atomically and returns what it wrote; torch, JAX and
matplotlib load only inside the stage that needs them. The ``ricl`` commands add option
checks and the printed summaries around these (``rational_icl.cli``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
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

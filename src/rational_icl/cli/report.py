"""``ricl report``: a self-contained HTML report (figures, tables) of runs and fits."""

from __future__ import annotations

from pathlib import Path

from rational_icl.errors import RiclError
from rational_icl.io import check_no_live_writer, netcdf_groups, read_netcdf


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report (figures and tables) of a runs folder and/or fits",
        description="Write OUT/index.html, self-contained (figures embedded as PNG, opens "
        "offline), plus every figure as PNG in OUT/figures and every table as CSV in "
        "OUT/tables. Inputs: a folder of run files, a behaviour file (behaviour.nc, as "
        "`ricl run` writes), and/or fit files (fit.nc). Figures show the first fit; with "
        "several fits the report adds their LOO comparison. Without a fit, the figures that "
        "need one are listed, not drawn.",
    )
    parser.add_argument(
        "inputs",
        metavar="FIT_OR_RUNS",
        nargs="+",
        type=Path,
        help="a runs folder, a behaviour .nc file or a fit .nc file (several fits allowed)",
    )
    parser.add_argument("-o", "--out", required=True, type=Path, help="report folder")
    parser.add_argument("--title", default="rational-icl report", help="title of the page")
    parser.set_defaults(func=run)


def run(args) -> int:
    report(args.inputs, args.out, title=args.title)
    return 0


def report(inputs: list[Path], out: Path, *, title: str = "rational-icl report") -> Path:
    """The report stage: figures, tables and index.html in ``out`` from runs folders,
    behaviour files and fit files; returns the page."""
    if out.exists() and not out.is_dir():
        raise RiclError(f"-o {str(out)!r} is a file, not a folder")
    behaviour, fits = read_inputs(inputs)
    import matplotlib

    matplotlib.use("Agg")  # figures go to files; never open a window
    from rational_icl.reports import write_report

    page = write_report(
        out, behaviour=behaviour, fits=fits, title=title, sources=[str(p) for p in inputs]
    )
    print(f"wrote {page}")
    return page


def read_inputs(paths: list[Path]):
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
        elif _is_fit(path):
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
    _check_same_runs(behaviour, fits, behaviour_sources, fit_paths)
    return behaviour, fits


def _check_same_runs(behaviour, fits, behaviour_sources, fit_paths) -> None:
    """Every fit must have been made from the runs the report draws (issue 24, item 5)."""
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


def _is_fit(path: Path) -> bool:
    """Whether a netCDF file holds a ``posterior`` group (a fit) rather than a dataset."""
    return "posterior" in netcdf_groups(path)

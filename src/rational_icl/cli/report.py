"""``ricl report``: a self-contained HTML report (figures, tables) of runs and fits."""

from __future__ import annotations

from pathlib import Path

from rational_icl.cli.checks import (
    add_threads_option,
    add_transition_level_option,
    check_threads,
    check_transition_level,
)
from rational_icl.pipeline import limit_threads, report


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report (figures and tables) of a runs folder and/or fits",
        description="Write OUT/index.html, self-contained (figures embedded as PNG, opens "
        "offline), plus every figure as PNG in OUT/figures and every table as CSV in "
        "OUT/tables (those of an earlier report in OUT that this one does not draw are "
        "removed). Inputs: a folder of run files, a behaviour file (behaviour.nc, as "
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
    add_threads_option(parser, "the behaviour measures and figures (NumPy, JAX)")
    add_transition_level_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    limit_threads(check_threads(args.threads))
    level = check_transition_level(args.transition_level)
    report(args.inputs, args.out, title=args.title, transition_level=level)
    return 0

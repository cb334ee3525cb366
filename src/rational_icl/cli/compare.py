"""``ricl compare``: rank fits (full model, ablations) by their PSIS-LOO ELPD."""

from __future__ import annotations

from pathlib import Path

from rational_icl.cli.checks import add_threads_option, check_threads
from rational_icl.errors import RiclError
from rational_icl.pipeline import limit_threads


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="rank fit files by expected log predictive density (PSIS-LOO), beside their "
        "held-out skills",
        description="Rank fits of the same runs (for instance the full model and its "
        "ablations) by ELPD from PSIS-LOO over the fitted cells (arviz_stats.compare). "
        "Fits are named by their file stem. A fit whose PSIS-LOO is unreliable (more than 10%% "
        "of the cells with Pareto k above 0.7, or p_loo above 3 times its parameters; common "
        "for MAP/Laplace and SVI fits, rare for NUTS) is left out of the ranking with a "
        "warning line; fewer than two reliable fits is an error. Each fit's held-out skill "
        "against the best baseline and against the law-free reference (what the law adds) "
        "is printed beside its ELPD.",
    )
    parser.add_argument("fits", metavar="FIT", nargs="+", type=Path, help="fit files (.nc)")
    add_threads_option(parser, "PSIS-LOO (NumPy)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rational_icl.fits.diagnostics import compare
    from rational_icl.fits.tree import read_fit

    limit_threads(check_threads(args.threads))
    names = [path.stem for path in args.fits]
    if len(set(names)) != len(names):
        raise RiclError("two fit files have the same name; give each fit a distinct file name")
    fits = {name: read_fit(path) for name, path in zip(names, args.fits, strict=True)}
    _check_same_cells(fits, args.fits)
    _check_same_runs(fits, args.fits)
    table = compare(fits)
    for name in table.index:
        table.loc[name, "ablation"] = fits[name].attrs.get("ablation", "")
        table.loc[name, "method"] = fits[name].attrs.get("inference_method", "")
        for column, value in _held_out_skills(fits[name]).items():
            table.loc[name, column] = value
    print(table.to_string())
    if any(c.startswith("law_free_skill") for c in table.columns):
        print(
            "skill: 1 - held-out RMSE / that of the best baseline; law_free_skill: against "
            "the better law-free reference (what the law adds), each on the fit's own "
            "held-out cells"
        )
    for name, why in table.attrs.get("not_ranked", {}).items():
        print(f"warning: {name} not ranked: {why}")
    return 0


def _held_out_skills(tree) -> dict[str, float]:
    """``skill_{split}`` and ``law_free_skill_{split}`` of a fit, those it records."""
    names = ("skill", "law_free_skill")
    splits = [str(s) for s in tree["observed_data"]["split"].values]
    found = {f"{n}_{s}": tree.attrs.get(f"{n}_{s}") for n in names for s in splits}
    return {k: float(v) for k, v in found.items() if v is not None}


def _check_same_runs(fits, paths) -> None:
    """Fits of different runs (recorded ``runs_identity``) cannot be ranked against each
    other; fits written before the identity was recorded are let through."""
    from rational_icl.fits.identity import RUNS_IDENTITY, check_same_runs

    first = [(t, p) for t, p in zip(fits.values(), paths, strict=True) if RUNS_IDENTITY in t.attrs]
    for tree, path in first[1:]:
        check_same_runs(
            str(first[0][0].attrs[RUNS_IDENTITY]), tree, f"fit {str(path)!r}", str(first[0][1])
        )


def _check_same_cells(fits, paths) -> None:
    """Fits compared by ELPD must score the same fitted cells."""
    reference = None
    for tree, path in zip(fits.values(), paths, strict=True):
        if "log_likelihood" not in tree.children:
            raise RiclError(
                f"{path}: no log_likelihood group (context-dependent outputs fits have none; "
                "refit without --context-dependent)"
            )
        size = tree.log_likelihood.sizes.get("fitted_cell")
        if reference is None:
            reference = (path, size)
        elif size != reference[1]:
            raise RiclError(
                f"{path}: {size} fitted cells, but {reference[0]} has {reference[1]}: "
                "compare fits of the same runs and held-out split"
            )

"""One fit's summary, computed once as data: what ``ricl fit`` prints, the report's tables
(reports/tables.py) and its HTML page (reports/html.py) render the same
:class:`FitSummary` rather than each reading the fit again.

    from rational_icl.fits.summary import fit_summary

    found = fit_summary(tree)  # a FitSummary of pandas and xarray objects
    found.parameters           # mean, sd, 90% interval, ESS, R-hat per scalar parameter
    found.splits.loc["id", "skill"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.vocabulary import SAMPLE_DIMS

# The skill rows under the predictors: (variable of the predictive_skill group, row label).
SKILL_ROWS = (
    ("skill", "skill: 1 - RMSE model / RMSE best baseline"),
    ("crps_skill", "CRPS skill: 1 - CRPS model / CRPS best baseline"),
    ("law_free_skill", "what the law adds: 1 - RMSE model / RMSE better law-free reference"),
    ("law_free_crps_skill", "the same by CRPS"),
)
# The predictors' columns of the skill table, per split: (predictive_skill variable, title).
SKILL_METRICS = (
    ("rmse", "RMSE"),
    ("correlation", "Pearson r"),
    ("coverage", "90% coverage"),
    ("crps", "CRPS"),
)
ALPHA_QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class FitSummary:
    """Everything a reader is told about one fit, as data (nothing formatted).

    Attributes
    ----------
    about : dict of str to str
        What was fitted: ``setting``, ``model``, ``strategies``, ``observed`` (the measure
        in words), ``fitted_splits``, ``ablation``, ``pooling``, ``method``,
        ``held_out_design``, ``context_dependent`` ("1" or "0"), as the fit records them.
    parameters : pd.DataFrame
        One row per scalar parameter (``arviz_stats.summary``, 90% equal-tailed interval):
        mean, sd, ``eti90_lb``, ``eti90_ub`` and, for NUTS, ``ess_bulk``, ``ess_tail``,
        ``r_hat``, ``mcse_mean``, ``mcse_sd``. It prints with arviz-stats' digits.
    alpha : xr.DataArray or None
        α's posterior 5%, 50% and 95% quantiles (dim ``quantile``) per configuration.
    diagnostics : pd.DataFrame
        One row per sampler problem (``fits.diagnostics.diagnostic_warnings``): ``kind``
        (``r-hat``, ``ess``, ``divergences``, ``e-bfmi``, ``optimizer``) and ``problem``.
    sampler : dict of str to float
        ``divergences`` (after warm-up), ``max_r_hat`` and ``min_ess_bulk`` over the
        scalar parameters (NaN where the method has no chains).
    splits : pd.DataFrame
        One row per split: the fit's ``split_scores`` (agreement on held-out and fitted
        cells, the oracle, the skills, the best baseline) and, from the
        ``predictive_skill`` group, ``num_cells`` and, where scored, ``best_crps_baseline``
        and ``best_law_free``.
    skill : pd.DataFrame or None
        The predictive skill table: a row per predictor (the model, each baseline, the
        law-free references, the oracle) and a row per skill (``SKILL_ROWS``); columns
        (split, metric). None without a ``predictive_skill`` group.
    law_free_seconds : float
        How long the law-free reference took (NaN where not fitted).
    authors : dict of str to float, or None
        The authors' evaluation (``authors_*`` attributes) and ``law_alone`` (1.0 where it
        scores the law alone, without the drift); None where the fit has none.
    dropped : dict of int to list of int
        The early checkpoints not fitted, per num_tasks (empty: every checkpoint fitted).
    run_offsets : xr.Dataset or None
        The offset models' per-run shifts and their spread (``fits.diagnostics.run_offsets``;
        None without them).
    population : xr.Dataset or None
        A partially pooled fit's ``fits.diagnostics.population_summary``.
    inadequate : pd.Series
        The worst family distance (over splits) at each num_tasks the strategies cannot
        represent (empty: none); ``family_distance_threshold`` is the bound it exceeds.
    family_distance_threshold : float
    verdict : xr.Dataset or None
        ``fits.verdict.alpha_verdict`` of this fit and the fits given beside it.
    transition : xr.Dataset or None
        A ``forecast:F`` fit's ``fits.transition.transition_forecast``.
    loo : object or None
        PSIS-LOO of the fitted cells (``fits.diagnostics.loo``) where it can be reported.
        Computed on first reading (a pass of PSIS over every draw of every fitted cell),
        since the report ranks fits with its own LOO and never reads this one.
    loo_problem : str or None
        Why PSIS-LOO is not reported (too few draws, unreliable importance weights); read
        on first use as ``loo``.
    tree : xr.DataTree
        The fit summarised, which ``loo`` reads.
    """

    about: dict
    parameters: pd.DataFrame
    alpha: xr.DataArray | None
    diagnostics: pd.DataFrame
    sampler: dict
    splits: pd.DataFrame
    skill: pd.DataFrame | None
    law_free_seconds: float
    authors: dict | None
    dropped: dict
    run_offsets: xr.Dataset | None
    population: xr.Dataset | None
    inadequate: pd.Series
    family_distance_threshold: float
    verdict: xr.Dataset | None
    transition: xr.Dataset | None
    tree: xr.DataTree = field(repr=False, compare=False)

    @cached_property  # a frozen dataclass still caches: it writes the instance's __dict__
    def _psis(self) -> tuple[object | None, str | None]:
        return _loo(self.tree)

    @property
    def loo(self) -> object | None:
        return self._psis[0]

    @property
    def loo_problem(self) -> str | None:
        return self._psis[1]


def fit_summary(
    tree: xr.DataTree,
    *,
    transition_level: float | None = None,
    verdict_fits: Sequence[xr.DataTree] = (),
) -> FitSummary:
    """Summarise one fit (docs/files.md §3) for every reader.

    Parameters
    ----------
    tree : xr.DataTree
        The fit.
    transition_level : float, optional
        The level whose crossing a ``forecast:F`` fit's transition step forecast reads
        (default: halfway, fits/transition.py).
    verdict_fits : sequence of xr.DataTree
        Fits of the same model under other held-out designs, read by the verdict on α
        beside ``tree`` (fits/verdict.py).

    Returns
    -------
    FitSummary
    """
    from rational_icl.fits.diagnostics import population_summary, run_offsets, summary

    parameters = summary(tree)  # arviz-stats' digits when printed, every digit in its values
    partial = tree.attrs.get("pooling") == "partial"
    return FitSummary(
        about=about(tree),
        parameters=parameters,
        alpha=_alpha(tree),
        diagnostics=_diagnostics(tree),
        sampler=_sampler(tree, parameters),
        splits=split_summary(tree),
        skill=skill_table(tree),
        law_free_seconds=_law_free_seconds(tree),
        authors=_authors(tree),
        dropped=_dropped(tree),
        run_offsets=run_offsets(tree),
        population=population_summary(tree) if partial else None,
        inadequate=_inadequate(tree),
        family_distance_threshold=float(tree.attrs.get("family_distance_threshold", np.nan)),
        verdict=_verdict(tree, verdict_fits),
        transition=_transition(tree, transition_level),
        tree=tree,
    )


def about(tree: xr.DataTree) -> dict[str, str]:
    """What was fitted, from the fit's root attributes (``FitSummary.about``)."""
    from rational_icl.fits.tree import observed_description

    a = tree.attrs
    return {
        "setting": str(a.get("setting", "?")),
        "model": str(a.get("model", "paper")),
        "strategies": str(a.get("strategies", "memorizing,generalizing")),
        "observed": observed_description(a),
        "fitted_splits": str(a.get("fitted_splits", "all")),
        "ablation": str(a.get("ablation", "?")),
        "pooling": str(a.get("pooling", "?")),
        "method": str(a.get("inference_method", "?")),
        "held_out_design": str(a.get("held_out_design", "authors")),
        "context_dependent": str(a.get("context_dependent", "0")),
    }


def _alpha(tree: xr.DataTree) -> xr.DataArray | None:
    if "alpha" not in tree.posterior.data_vars:
        return None
    return tree.posterior["alpha"].quantile(list(ALPHA_QUANTILES), dim=SAMPLE_DIMS)


def _diagnostics(tree: xr.DataTree) -> pd.DataFrame:
    from rational_icl.fits.diagnostics import diagnostic_warnings

    rows = [{"kind": d.kind, "problem": d.text} for d in diagnostic_warnings(tree)]
    return pd.DataFrame(rows, columns=["kind", "problem"])


def _sampler(tree: xr.DataTree, parameters: pd.DataFrame) -> dict[str, float]:
    stats = tree.get("sample_stats")
    diverging = stats["diverging"] if stats is not None and "diverging" in stats else None
    return {
        "divergences": float(diverging.sum()) if diverging is not None else np.nan,
        "max_r_hat": _column(parameters, "r_hat", "max"),
        "min_ess_bulk": _column(parameters, "ess_bulk", "min"),
    }


def _column(table: pd.DataFrame, name: str, how: str) -> float:
    return float(getattr(pd.Series(table[name], dtype=float), how)()) if name in table else np.nan


def split_summary(tree: xr.DataTree) -> pd.DataFrame:
    """``FitSummary.splits``: one row per split, the fit's scores and its skill's counts."""
    from rational_icl.fits.metrics import split_scores

    table = split_scores(tree).to_dataframe()
    if "predictive_skill" not in tree.children:
        return table
    skill = tree["predictive_skill"].to_dataset()
    for name in ("num_cells", "best_crps_baseline", "best_law_free"):
        if name in skill:
            table[name] = pd.Series(skill[name].values, index=skill.split.values.astype(str))
    return table


def skill_table(tree: xr.DataTree) -> pd.DataFrame | None:
    """``FitSummary.skill``: one row per predictor and per skill the fit has
    (``SKILL_ROWS``); columns (split, metric). None without a predictive_skill group."""
    if "predictive_skill" not in tree.children:
        return None
    skill = tree["predictive_skill"].to_dataset()
    rows = [(name, label) for name, label in SKILL_ROWS if name in skill]
    blank = [np.nan] * len(rows)
    columns = {}
    for split in [str(s) for s in skill.split.values]:
        row = skill.sel(split=split)
        for name, title in SKILL_METRICS:
            if name in row:
                columns[(split, title)] = [*row[name].values, *blank]
        skills = [float(row[name]) for name, _ in rows]
        columns[(split, "skill")] = [np.nan] * skill.sizes["predictor"] + skills
    index = [*map(str, skill.label.values), *(label for _, label in rows)]
    table = pd.DataFrame(columns, index=pd.Index(index, name="predictor"))
    return table.dropna(how="all")


def _law_free_seconds(tree: xr.DataTree) -> float:
    if "predictive_skill" not in tree.children:
        return np.nan
    return float(tree["predictive_skill"].attrs.get("law_free_seconds", np.nan))


def _authors(tree: xr.DataTree) -> dict[str, float] | None:
    from rational_icl.fits.metrics import authors_score_the_law

    a = tree.attrs
    if "authors_correlation" not in a:
        return None
    found = {k: float(v) for k, v in a.items() if k.startswith("authors_")}
    return found | {"law_alone": float(authors_score_the_law(tree))}


def _dropped(tree: xr.DataTree) -> dict[int, list[int]]:
    if "dropped" not in tree.constant_data:
        return {}
    dropped = tree.constant_data.dropped
    dropped = dropped.any([d for d in dropped.dims if d not in ("num_tasks", "checkpoint")])
    found = {}
    for num_tasks in dropped.num_tasks.values:
        steps = dropped.checkpoint.values[dropped.sel(num_tasks=num_tasks).values]
        if steps.size:
            found[num_tasks.item()] = steps.tolist()
    return found


def _inadequate(tree: xr.DataTree) -> pd.Series:
    flagged = str(tree.attrs.get("inadequate_num_tasks", ""))
    if not flagged:
        return pd.Series([], dtype=float, index=pd.Index([], name="num_tasks"))
    summary = tree.constant_data.family_distance_summary
    worst = summary.sel(num_tasks=[int(d) for d in flagged.split(",")]).max("split")
    index = pd.Index([int(d) for d in worst.num_tasks.values], name="num_tasks")
    return pd.Series(worst.values.astype(float), index=index, name="family_distance")


def _verdict(tree: xr.DataTree, others: Sequence[xr.DataTree]) -> xr.Dataset | None:
    from rational_icl.fits.verdict import alpha_verdict

    if "alpha" not in tree.posterior.data_vars:
        return None
    return alpha_verdict([tree, *others])


def _transition(tree: xr.DataTree, level: float | None) -> xr.Dataset | None:
    from rational_icl.fits.transition import transition_forecast

    if not str(tree.attrs.get("held_out_design", "")).startswith("forecast:"):
        return None
    return transition_forecast(tree, level)


def _loo(tree: xr.DataTree) -> tuple[object | None, str | None]:
    """PSIS-LOO and None, or None and why it is not reported (None, None: no log
    likelihood to score)."""
    from rational_icl.fits.diagnostics import loo, loo_problem

    if "log_likelihood" not in tree.children:
        return None, None
    try:
        result = loo(tree)
    except RiclError as err:  # e.g. too few draws for PSIS
        return None, str(err)
    problem = loo_problem(tree, result)
    return (None, problem) if problem else (result, None)

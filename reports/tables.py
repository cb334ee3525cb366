"""The report's tables, as pandas DataFrames (written as HTML and CSV by ``reports.html``).

- :func:`parameter_table`: mean, sd, 90% interval, R-hat and ESS of every parameter;
- :func:`diagnostics_table`: one row per problem, in plain words (empty: nothing to report);
- :func:`heldout_table`: correlation, Spearman, mean |error| and R² on fitted and held-out
  cells, per split (the fit's root attributes);
- :func:`skill_table`: the model and the baselines on the held-out cells (RMSE, r, 90%
  coverage) and the skill, per split (the fit's ``predictive_skill`` group);
- :func:`comparison_table`: PSIS-LOO comparison of several fits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

_METRICS = {
    "correlation": "Pearson r",
    "spearman": "Spearman ρ",
    "tvd": "mean |predicted − observed|",
    "r2": "R²",
}
_EXPLANATIONS = {  # by Diagnostic.kind
    "r-hat": "the chains disagree (R-hat above 1.01): run longer or check the model",
    "ess": "too few effective draws (ESS below 400): estimates of this parameter are noisy",
    "divergences": "the sampler hit regions it could not follow (divergences): the posterior "
    "may be biased; consider more warm-up or a reparametrisation",
    "e-bfmi": "the sampler explored the energy poorly (E-BFMI below 0.3): tails may be missed",
    "optimizer": "the optimiser stopped before it converged: the MAP point may be off",
}


def parameter_table(fit: xr.DataTree) -> pd.DataFrame:
    """One row per scalar parameter (``sigma[id]``, ``beta[mlp_expansion_factor=4]``...):
    mean, sd, 90% equal-tailed interval and, for NUTS, bulk/tail ESS, R-hat and MCSE
    (``arviz_stats.summary``)."""
    import arviz_stats as azs

    from rational_icl.fits.tree import parameter_names

    kind = "all" if fit.attrs.get("inference_method") == "nuts" else "stats"
    table = azs.summary(
        fit,
        var_names=parameter_names(fit, per_run=False),
        kind=kind,
        ci_prob=0.9,
        ci_kind="eti",
        round_to="none",
    )
    return table.rename(columns={"eti90_lb": "5%", "eti90_ub": "95%"}).rename_axis("parameter")


def diagnostics_table(fit: xr.DataTree) -> pd.DataFrame:
    """The fit's sampler warnings, each with what it means in plain words."""
    from rational_icl.fits.diagnostics import diagnostic_warnings

    method = fit.attrs.get("inference_method", "")
    rows = []
    for problem in diagnostic_warnings(fit):
        rows.append({"problem": problem.text, "what it means": _EXPLANATIONS[problem.kind]})
    if method != "nuts":
        rows.append(
            {
                "problem": f"inference method {method!r}: no MCMC chains",
                "what it means": "R-hat, ESS and divergences are not available; intervals "
                "come from an approximation (MAP with Laplace, or SVI)",
            }
        )
    return pd.DataFrame(rows, columns=["problem", "what it means"])


def heldout_table(fit: xr.DataTree) -> pd.DataFrame:
    """Agreement of predicted and observed weights: rows (cells, split), one column per
    metric (the fit's ``split_scores``)."""
    from rational_icl.fits.metrics import split_scores

    scores = split_scores(fit)
    rows = []
    for subset, label in [("heldout", "held out"), ("fitted", "fitted")]:
        for split in [str(s) for s in scores.split.values]:
            row = {"cells": label, "split": split}
            for metric, title in _METRICS.items():
                row[title] = float(scores[f"{subset}_{metric}"].sel(split=split))
            rows.append(row)
    return pd.DataFrame(rows)


# The skill rows under the predictors: (variable of the skill dataset, row label).
_SKILL_ROWS = (
    ("skill", "skill: 1 - RMSE model / RMSE best baseline"),
    ("crps_skill", "CRPS skill: 1 - CRPS model / CRPS best baseline"),
    ("law_free_skill", "what the law adds: 1 - RMSE model / RMSE better law-free reference"),
    ("law_free_crps_skill", "the same by CRPS"),
)


def skill_table(fit: xr.DataTree) -> pd.DataFrame:
    """One row per predictor (the model, each baseline seeing only fitted cells, the
    law-free references, the labelled oracle) and a row per skill (``_SKILL_ROWS``, those
    the fit has); columns (split, metric)."""
    skill = fit["predictive_skill"].to_dataset()
    rows = [(name, label) for name, label in _SKILL_ROWS if name in skill]
    blank = [np.nan] * len(rows)
    columns = {}
    for split in [str(s) for s in skill.split.values]:
        row = skill.sel(split=split)
        columns[(split, "RMSE")] = [*row.rmse.values, *blank]
        columns[(split, "Pearson r")] = [*row.correlation.values, *blank]
        columns[(split, "90% coverage")] = [*row.coverage.values, *blank]
        if "crps" in row:
            columns[(split, "CRPS")] = [*row.crps.values, *blank]
        skills = [float(row[name]) for name, _ in rows]
        columns[(split, "skill")] = [np.nan] * skill.sizes["predictor"] + skills
    index = [*map(str, skill.label.values), *(label for _, label in rows)]
    table = pd.DataFrame(columns, index=pd.Index(index, name="predictor"))
    return table.dropna(how="all")


def model_skill_table(fits: dict[str, xr.DataTree]) -> pd.DataFrame:
    """One row per fit: its model, strategies and held-out design, and per split the
    model's RMSE and 90% coverage, the best baseline's RMSE and the skill, the CRPS skill
    and the skill against the law-free reference (the fits' own ``predictive_skill``
    groups, so each on the cells its design held out; NaN where a fit predates them)."""
    from rational_icl.fits.metrics import split_scores

    rows = []
    for name, fit in fits.items():
        row = {
            ("fit", ""): name,
            ("model", ""): fit.attrs.get("model", "paper"),
            ("strategies", ""): fit.attrs.get("strategies", "memorizing,generalizing"),
            ("held-out design", ""): fit.attrs.get("held_out_design", "authors"),
        }
        if "predictive_skill" in fit.children:
            scores = split_scores(fit)
            for split in [str(s) for s in fit["predictive_skill"].split.values]:
                at = scores.sel(split=split)
                row[(split, "RMSE")] = float(at.heldout_rmse)
                row[(split, "90% coverage")] = float(at.heldout_coverage)
                row[(split, "best baseline RMSE")] = float(at.best_baseline_rmse)
                row[(split, "skill")] = float(at.skill)
                row[(split, "CRPS skill")] = float(at.crps_skill)
                row[(split, "vs law-free")] = float(at.law_free_skill)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def _loo_note(fit) -> str | None:
    """Why a fit's PSIS-LOO is not to be trusted (None when it is), or why there is none."""
    from rational_icl.errors import RiclError
    from rational_icl.fits.diagnostics import loo, loo_problem

    try:
        return loo_problem(fit, loo(fit))
    except RiclError as err:
        return str(err)


def comparison_table(fits: dict[str, xr.DataTree]) -> pd.DataFrame:
    """PSIS-LOO comparison (ELPD, best first) of two or more fits, by name.

    A fit whose LOO is unreliable (``diagnostics.loo_problem``) gets a row with no numbers
    and the reason in the ``note`` column; with fewer than two reliable fits, all rows are
    such rows."""
    from rational_icl.errors import RiclError
    from rational_icl.fits.diagnostics import compare

    try:
        table = compare(fits)
        not_ranked = table.attrs.get("not_ranked", {})
    except RiclError:
        if len({fit.attrs.get("observation_model") for fit in fits.values()}) > 1:
            raise
        table = pd.DataFrame()
        alone = "the only fit with a reliable PSIS-LOO: nothing to rank it against"
        not_ranked = {name: _loo_note(fit) or alone for name, fit in fits.items()}
    table = table.reset_index().rename(columns={"index": "fit"})
    table["note"] = ""
    skipped = pd.DataFrame({"fit": list(not_ranked), "note": list(not_ranked.values())})
    return pd.concat([table, skipped], ignore_index=True)


def transition_table(found) -> pd.DataFrame:
    """The transition step forecast (``fits.transition.transition_forecast``), one row per
    run that crosses after the forecast origin: observed, forecast (median, 90% interval)
    and the line's step."""
    columns = ["level", "observed_step", "predicted_median", "predicted_low"]
    columns += ["predicted_high", "no_crossing", "baseline_step", "covered"]
    frame = found[columns + ["scored"]].to_dataframe()
    frame = frame[frame["scored"].astype(bool)]
    return frame[columns]

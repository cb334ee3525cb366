"""The report's tables, as pandas DataFrames (written as HTML and CSV by ``reports.html``).
The tables of one fit render its ``FitSummary`` (fits/summary.py); the others read fits.

- :func:`parameter_table`: mean, sd, 90% interval, R-hat and ESS of every parameter;
- :func:`diagnostics_table`: one row per problem, in plain words (empty: nothing to report);
- :func:`heldout_table`: correlation, Spearman, mean |error| and R² on fitted and held-out
  cells, per split;
- the skill table is ``FitSummary.skill`` itself: the model and the baselines on the
  held-out cells (RMSE, r, 90% coverage) and the skill, per split;
- :func:`model_skill_table`: the skill of several fits, one row each;
- :func:`comparison_table`: PSIS-LOO comparison of several fits.
"""

from __future__ import annotations

import pandas as pd
import xarray as xr

from rational_icl.fits.summary import FitSummary

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


def parameter_table(found: FitSummary) -> pd.DataFrame:
    """One row per scalar parameter (``sigma[id]``, ``beta[mlp_expansion_factor=4]``...):
    mean, sd, 90% equal-tailed interval (``5%``, ``95%``) and, for NUTS, bulk/tail ESS,
    R-hat and MCSE, every digit (``FitSummary.parameters``)."""
    table = pd.DataFrame(found.parameters)  # the values, not arviz-stats' printed digits
    return table.rename(columns={"eti90_lb": "5%", "eti90_ub": "95%"}).rename_axis("parameter")


def diagnostics_table(found: FitSummary) -> pd.DataFrame:
    """The fit's sampler warnings, each with what it means in plain words."""
    rows = [
        {"problem": row.problem, "what it means": _EXPLANATIONS[row.kind]}
        for row in found.diagnostics.itertuples()
    ]
    method = found.about["method"]
    if method != "nuts":
        rows.append(
            {
                "problem": f"inference method {method!r}: no MCMC chains",
                "what it means": "R-hat, ESS and divergences are not available; intervals "
                "come from an approximation (MAP with Laplace, or SVI)",
            }
        )
    return pd.DataFrame(rows, columns=["problem", "what it means"])


def heldout_table(found: FitSummary) -> pd.DataFrame:
    """Agreement of predicted and observed weights: rows (cells, split), one column per
    metric (``FitSummary.splits``)."""
    rows = []
    for subset, label in [("heldout", "held out"), ("fitted", "fitted")]:
        for split, scores in found.splits.iterrows():
            row = {"cells": label, "split": str(split)}
            for metric, title in _METRICS.items():
                row[title] = float(scores[f"{subset}_{metric}"])
            rows.append(row)
    return pd.DataFrame(rows)


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

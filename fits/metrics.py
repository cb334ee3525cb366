"""How well a fit predicts the observed weight on memorizing: our held-out evaluation,
the authors' evaluation, the oracle beside both (root attributes of the fit, docs/files.md
§3), and the predictive skill against baselines that see only fitted cells (the fit's
``predictive_skill`` group, rational_icl.fits.baselines).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats
import xarray as xr

from rational_icl.fits.baselines import held_out_mean, predictive_skill
from rational_icl.fits.lawfree import law_free_predictions
from rational_icl.fits.parameters import Priors
from rational_icl.vocabulary import SAMPLE_DIMS

# Agreement metrics (``_agreement``) and the per-split scores a fit stores as root
# attributes ``{score}_{split}`` (docs/files.md §3); ``split_scores`` reads them back.
AGREEMENT = ("correlation", "spearman", "tvd", "r2")
SPLIT_SCORES = (
    *(f"{subset}_{m}" for subset in ("heldout", "fitted", "oracle_heldout") for m in AGREEMENT),
    "skill",
    "heldout_rmse",
    "heldout_coverage",
    "best_baseline_rmse",
    "heldout_crps",
    "crps_skill",
    "law_free_skill",
    "law_free_crps_skill",
)


def split_scores(tree: xr.DataTree) -> xr.Dataset:
    """The fit's per-split scores, read back from its root attributes.

    Returns
    -------
    xr.Dataset
        Dims (split,): one float variable per name of ``SPLIT_SCORES`` (NaN where the file
        has none) and ``best_baseline``, the best baseline's name ("" where none).
    """
    splits = [str(s) for s in tree["observed_data"]["split"].values]
    attrs = tree.attrs
    data = {
        name: ("split", [float(attrs.get(f"{name}_{s}", math.nan)) for s in splits])
        for name in SPLIT_SCORES
    }
    data["best_baseline"] = ("split", [str(attrs.get(f"best_baseline_{s}", "")) for s in splits])
    return xr.Dataset(data, coords={"split": splits})


def skill_of(tree: xr.DataTree, priors: Priors = Priors(), law_free: bool = True) -> xr.Dataset:
    """The model, the baselines and the law-free references scored on the fit's held-out
    cells (those the agreement metrics score too):
    :func:`rational_icl.fits.baselines.predictive_skill`.

    The law-free references (``lawfree.law_free_predictions``, with the fit's seed and
    noise and drift ``priors``) are fitted here, on the fit's fitted cells, unless there is
    no held-out cell to score or ``law_free`` is False (about 15 s a fit on a tiny preset).
    """
    predicted = predicted_weight(tree)
    observed = tree.observed_data.observed_weight
    constant = tree.constant_data
    predictive = None
    if "posterior_predictive" in tree.children:
        predictive = tree.posterior_predictive.observed_weight
    scored = constant.held_out & _usable(observed, constant)
    references = None
    if law_free and bool(scored.any()) and bool(constant.fit_mask.any()):
        seed = int(tree.attrs.get("seed", 0))
        references = law_free_predictions(observed, constant.fit_mask, seed=seed, priors=priors)
    skill = predictive_skill(
        observed,
        predicted,
        fitted=constant.fit_mask,
        scored=scored,
        predictive=predictive,
        references=references,
    )
    return skill.assign_attrs(held_out_design=str(tree.attrs.get("held_out_design", "authors")))


def predicted_weight(tree: xr.DataTree) -> xr.DataArray:
    """The model's prediction of every cell: the posterior mean of ``expected_weight``,
    (config..., num_tasks, checkpoint, split).

    A drift fit predicts a cell from its run's observed cells, as the posterior predictive
    does, and keeps ``expected_weight`` beside it, on the same thinned draws; the other fits
    keep it in the posterior.
    """
    group = "posterior" if "expected_weight" in tree.posterior else "posterior_predictive"
    # skipna=False: per-cell draws are never NaN, and a broadcast view stays a view
    return tree[group]["expected_weight"].mean(SAMPLE_DIMS, skipna=False)


def skill_attributes(skill: xr.Dataset) -> dict[str, float | str]:
    """The skills, the model's held-out RMSE, CRPS and coverage and the best baseline per
    split, as flat root attributes (``skill_id``, ``law_free_skill_id``, ``heldout_rmse_id``,
    ...; NaN where the skill dataset has none), and ``law_free_seconds``."""
    out = {}
    for split in skill.split.values:
        row = skill.sel(split=split)
        model = row.sel(predictor="model")
        out[f"skill_{split}"] = float(row.skill)
        out[f"heldout_rmse_{split}"] = float(model.rmse)
        out[f"heldout_coverage_{split}"] = float(model.coverage)
        out[f"heldout_crps_{split}"] = float(model.get("crps", math.nan))
        out[f"best_baseline_{split}"] = str(row.best_baseline.values)
        best = str(row.best_baseline.values)
        out[f"best_baseline_rmse_{split}"] = float(row.rmse.sel(predictor=best))
        for name in ("crps_skill", "law_free_skill", "law_free_crps_skill"):
            out[f"{name}_{split}"] = float(row.get(name, math.nan))
    if "law_free_seconds" in skill.attrs:
        out["law_free_seconds"] = float(skill.attrs["law_free_seconds"])
    return out


def _usable(observed, constant):
    usable = observed.notnull()
    if "dropped" in constant:
        usable = usable & ~constant.dropped
    return usable


def fit_metrics(tree: xr.DataTree) -> dict[str, float]:
    """How well the predicted (posterior mean) weight on memorizing matches the observed one.

    Our evaluation, per split, on held-out and on fitted cells: Pearson and Spearman
    correlation, mean TVD and R^2, and the same for an oracle that predicts each
    num_tasks' mean observed weight over the very cells it is scored on
    (``oracle_heldout_*``: it sees the held-out cells, so it is no baseline; the fair ones
    are in :func:`skill_of`). The authors' evaluation (``authors_*``, where the fit has
    ``constant_data.authors_kept``; of the law alone where the fit has a drift,
    :func:`_law_weight`): the id split, every checkpoint from their common early threshold
    on, pooled over num_tasks, per configuration then averaged; with the same
    oracle (``authors_oracle_*``) and the threshold itself (``authors_threshold``, the
    latest over configurations).
    """
    predicted = predicted_weight(tree)
    observed = tree.observed_data.observed_weight
    constant = tree.constant_data
    usable = _usable(observed, constant)
    metrics = {}
    for subset, mask in [("heldout", constant.held_out & usable), ("fitted", constant.fit_mask)]:
        for split in observed.split.values:
            cells = mask.broadcast_like(observed).sel(split=split)
            o, p = observed.sel(split=split), predicted.sel(split=split)
            metrics |= _agreement(p, o, cells, f"{subset}_{{}}_{split}")
            if subset == "heldout":
                baseline = held_out_mean(o, cells)
                metrics |= _agreement(baseline, o, cells, f"oracle_heldout_{{}}_{split}")
    if "authors_kept" in constant and "id" in observed.split.values:
        kept = constant.authors_kept & usable.sel(split="id", drop=True)
        metrics |= _authors_metrics(_law_weight(tree, predicted), observed, kept)
        threshold = constant.checkpoint.where(constant.authors_kept).min("checkpoint").max()
        metrics["authors_threshold"] = float(threshold)
    return metrics


def _law_weight(tree: xr.DataTree, predicted: xr.DataArray) -> xr.DataArray:
    """What the authors' evaluation scores: the law's posterior mean weight.

    With a drift the posterior mean of ``expected_weight`` is, for a fitted cell, its
    prediction from its run's other fitted cells, which would credit the law with what the
    neighbours say; the law alone (``weight_memorizing``, run offsets included) is what the
    paper's pooled r measures. A context-dependent fit's law differs by split and is not
    recorded apart from the drift, so it keeps ``expected_weight``.
    """
    if not authors_score_the_law(tree):
        return predicted
    law = tree.posterior.weight_memorizing.mean(SAMPLE_DIMS, skipna=False)
    return law.broadcast_like(predicted).transpose(*predicted.dims)


LAW_ALONE = "the law alone, without the drift"  # how summaries name what was then scored


def authors_score_the_law(tree: xr.DataTree) -> bool:
    """Whether the authors' evaluation of this fit scores the law alone rather than the
    posterior mean of ``expected_weight`` (a drift fit that is not context-dependent)."""
    drift = "drift_scale" in tree.posterior
    return drift and not int(tree.attrs.get("context_dependent", 0))


def _authors_metrics(predicted, observed, kept) -> dict[str, float]:
    """The authors' pooled agreement on the id split, per configuration, then averaged."""
    o, p = observed.sel(split="id", drop=True), predicted.sel(split="id", drop=True)
    kept = kept.broadcast_like(o)
    configurations = [d for d in o.dims if d not in ("num_tasks", "checkpoint")]
    stacked = [(o, p, kept)]
    if configurations:
        stack = {"configuration": configurations}
        o, p, kept = (x.stack(stack) for x in (o, p, kept))
        stacked = [
            (o.isel(configuration=i), p.isel(configuration=i), kept.isel(configuration=i))
            for i in range(o.sizes["configuration"])
        ]
    per_configuration = []
    for o_c, p_c, kept_c in stacked:
        row = _agreement(p_c, o_c, kept_c, "authors_{}")
        row |= _agreement(held_out_mean(o_c, kept_c), o_c, kept_c, "authors_oracle_{}")
        per_configuration.append(row)
    return {k: float(np.nanmean([r[k] for r in per_configuration])) for k in per_configuration[0]}


def _agreement(predicted, observed, cells, name: str) -> dict[str, float]:
    """Pearson, Spearman, mean |difference| (TVD) and R^2 over the cells where ``cells``."""
    m = cells.broadcast_like(observed).values & observed.notnull().values
    p = predicted.broadcast_like(observed).values[m]
    o = observed.values[m]
    if p.size < 3 or np.std(p) == 0 or np.std(o) == 0:
        values = dict.fromkeys(("correlation", "spearman"), math.nan)
    else:
        values = {
            "correlation": scipy.stats.pearsonr(p, o).statistic,
            "spearman": scipy.stats.spearmanr(p, o).statistic,
        }
    values["tvd"] = float(np.mean(np.abs(p - o))) if p.size else math.nan
    total = np.sum((o - o.mean()) ** 2) if p.size else 0.0
    values["r2"] = 1.0 - np.sum((o - p) ** 2) / total if total > 0 else math.nan
    return {name.format(k): float(v) for k, v in values.items()}

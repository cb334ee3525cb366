"""Whether to believe α: docs/science.md's criteria ("When to believe α"), evaluated on the
fits at hand.

α is the law's growth exponent. It describes the transformers only where the law predicts
what it has not seen better than the simplest baselines and than the same model without the
law, along training (``forecast:F``) and across task diversity (``num-tasks``), with
calibrated intervals; where the sampler converged; where training seeds agree; and where the
strategies can represent the transformer at all. Each criterion is passed, failed or not
tested by the fits given (a design nobody fitted tests nothing), and the verdict is
``believe`` only when every criterion passed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from rational_icl.fits.diagnostics import diagnostic_warnings, population_summary
from rational_icl.fits.metrics import split_scores
from rational_icl.vocabulary import VERDICT_DESIGNS

# The predictive criteria: the held-out designs whose skill α's law must earn, in order.
DESIGN_CRITERIA = ("forecast", "num-tasks", "authors")
CRITERIA = (*DESIGN_CRITERIA, "sampler", "seeds", "adequacy")
PASSED, FAILED, UNTESTED = "pass", "fail", "untested"
# A 90% predictive interval is calibrated when it covers this share of the held-out cells:
# below, the model is overconfident; above, it is too vague to be tested by the cells.
COVERAGE_RANGE = (0.80, 0.97)
# The designs `ricl fit --held-out` takes to test each design criterion: those `ricl run`
# fits for the verdict, and the authors' own.
DESIGN_TO_FIT = {"authors": "authors"} | {d.split(":")[0]: d for d in VERDICT_DESIGNS}


def alpha_verdict(fits: Sequence[xr.DataTree]) -> xr.Dataset:
    """Evaluate the criteria for believing α on ``fits``: fits of one model to the same runs,
    each with its own held-out design; α is read from the first.

    Parameters
    ----------
    fits : sequence of xr.DataTree
        The fits (docs/files.md §3). A design criterion is tested by the fits of that design
        (every one must pass); the sampler criterion by every NUTS fit; the seeds and
        adequacy criteria by the first fit.

    Returns
    -------
    xr.Dataset
        Dim ``criterion`` (``CRITERIA``): ``status`` (pass, fail or untested) and ``detail``
        (what was measured, or how to test it). Attributes: ``verdict`` (``believe``,
        ``do not believe`` or ``undecided``), ``alpha_median``, ``alpha_low``,
        ``alpha_high`` (posterior median and 90% interval of the first fit's α, pooled over
        configurations), ``model``.
    """
    if not fits:
        raise ValueError("alpha_verdict needs at least one fit")
    first = fits[0]
    results = [_design_criterion(kind, fits) for kind in DESIGN_CRITERIA]
    results += [_sampler_criterion(fits), _seeds_criterion(first), _adequacy_criterion(first)]
    status = np.array([r[0] for r in results], dtype=object)
    verdict = (
        "do not believe"
        if (status == FAILED).any()
        else "undecided"
        if (status == UNTESTED).any()
        else "believe"
    )
    alpha = first.posterior["alpha"]
    low, median, high = (float(alpha.quantile(q)) for q in (0.05, 0.5, 0.95))
    return xr.Dataset(
        {
            "status": ("criterion", status.astype(str)),
            "detail": ("criterion", np.array([r[1] for r in results], dtype=str)),
        },
        coords={"criterion": list(CRITERIA)},
        attrs={
            "verdict": verdict,
            "alpha_median": median,
            "alpha_low": low,
            "alpha_high": high,
            "model": str(first.attrs.get("model", "paper")),
        },
    )


def verdict_line(verdict: xr.Dataset) -> str:
    """One line: α with its interval, the verdict and the criteria that decide it."""
    status = verdict.status.to_series()
    failed = [
        f"{c} ({verdict.detail.sel(criterion=c).item()})" for c in status.index[status == FAILED]
    ]
    untested = list(status.index[status == UNTESTED])
    passed = list(status.index[status == PASSED])
    a = verdict.attrs
    text = (
        f"alpha {a['alpha_median']:.3f} [90%: {a['alpha_low']:.3f}, {a['alpha_high']:.3f}]: "
        f"{a['verdict']}"
    )
    if failed:
        text += "; fails " + "; ".join(failed)
    if untested:
        text += "; untested " + ", ".join(untested)
    if passed:
        text += "; passes " + ", ".join(passed)
    return text


def how_to_test(verdict: xr.Dataset) -> list[str]:
    """For each untested criterion, what would test it."""
    status = verdict.status.to_series()
    return [
        f"{c}: {verdict.detail.sel(criterion=c).item()}" for c in status.index[status == UNTESTED]
    ]


def _design_criterion(kind: str, fits: Sequence[xr.DataTree]) -> tuple[str, str]:
    """Skill > 0 against the best fair baseline and against the law-free reference (where
    scored), with 90% coverage inside ``COVERAGE_RANGE``, in every split of every fit of
    this design."""
    tested = [tree for tree in fits if _design_kind(tree) == kind]
    if not tested:
        return UNTESTED, f"fit with --held-out {DESIGN_TO_FIT[kind]}"
    problems, measured = [], []
    for tree in tested:
        design = str(tree.attrs.get("held_out_design", "authors"))
        scores = split_scores(tree)
        for split in scores.split.values:
            s = scores.sel(split=split)
            if np.isnan(s.skill):
                continue
            law_free = float(s.law_free_skill)
            coverage = float(s.heldout_coverage)
            measured.append(
                f"{design} {split}: skill {float(s.skill):+.2f} against "
                f"{s.best_baseline.item() or 'the best baseline'}, the law adds "
                f"{law_free:+.2f}, coverage {coverage:.2f}"
            )
            if float(s.skill) <= 0:
                problems.append(f"{design} {split}: skill {float(s.skill):+.2f} ≤ 0")
            if not np.isnan(law_free) and law_free <= 0:
                problems.append(f"{design} {split}: the law adds {law_free:+.2f} ≤ 0")
            low, high = COVERAGE_RANGE
            if not low <= coverage <= high:
                problems.append(
                    f"{design} {split}: 90% coverage {coverage:.2f} outside [{low}, {high}]"
                )
    if not measured:
        return UNTESTED, f"no scored held-out cell in the {kind} fits"
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, "; ".join(measured)


def _design_kind(tree: xr.DataTree) -> str:
    return str(tree.attrs.get("held_out_design", "authors")).partition(":")[0]


def _sampler_criterion(fits: Sequence[xr.DataTree]) -> tuple[str, str]:
    """No divergence and R-hat ≤ 1.01 in every NUTS fit; untested without one."""
    sampled = [tree for tree in fits if tree.attrs.get("inference_method") == "nuts"]
    if not sampled:
        method = fits[0].attrs.get("inference_method", "?")
        return UNTESTED, f"fitted by {method}; fit with --method nuts for R-hat and divergences"
    problems = [
        f"{tree.attrs.get('held_out_design', 'authors')}: {problem.text}"
        for tree in sampled
        for problem in diagnostic_warnings(tree)
        if problem.kind in ("r-hat", "divergences")
    ]
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, f"{len(sampled)} NUTS fit(s): no divergence, R-hat ≤ 1.01"


def _seeds_criterion(tree: xr.DataTree) -> tuple[str, str]:
    """Every training seed's α (posterior median) inside the population's 95% range."""
    alpha = tree.posterior["alpha"]
    if "seed" not in alpha.dims:
        return UNTESTED, "one training seed; ricl run --seeds 3 pools three"
    found = population_summary(tree)
    if "alpha" not in found:
        return UNTESTED, "seeds fitted without partial pooling (--pooling partial)"
    population = found["alpha"].sel(quantity="new_configuration")
    each = found["alpha"].sel(quantity="configuration", statistic="median")
    low = population.sel(statistic="low")
    high = population.sel(statistic="high")
    outside = ((each < low) | (each > high)).any([d for d in each.dims if d != "seed"])
    if bool(outside.any()):
        seeds = ", ".join(str(s) for s in each.seed.values[np.asarray(outside)])
        return FAILED, f"seed(s) {seeds}: alpha outside the population's 95% range"
    return PASSED, f"{each.sizes['seed']} seeds inside the population's 95% range"


def _adequacy_criterion(tree: xr.DataTree) -> tuple[str, str]:
    """No num_tasks where the transformer lies outside the strategy family."""
    if "family_distance_summary" not in tree.constant_data:
        return UNTESTED, "the fit records no distance to the strategy family"
    flagged = str(tree.attrs.get("inadequate_num_tasks", ""))
    if flagged:
        return FAILED, f"num_tasks {flagged} outside the strategy family"
    return PASSED, "every num_tasks within the strategy family"

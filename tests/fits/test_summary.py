"""One fit's summary (fits/summary.py): its numbers against the posterior and the held-out
cells, computed here by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rational_icl.fits.summary import SKILL_ROWS, fit_summary


@pytest.fixture(scope="module")
def found(law_free_map_fit):
    return fit_summary(law_free_map_fit)


def _draws(fit, name: str) -> np.ndarray:
    return fit.posterior[name].values.reshape(-1)  # (chain x draw) of a scalar parameter


def test_parameters_are_the_posteriors_mean_sd_and_90_percent_interval(found, law_free_map_fit):
    for name in ("alpha", "beta", "gamma"):
        draws = _draws(law_free_map_fit, name)
        row = found.parameters.loc[name]
        assert row["mean"] == pytest.approx(draws.mean(), rel=1e-9)
        assert row["sd"] == pytest.approx(draws.std(ddof=1), rel=1e-6)
        low, high = np.quantile(draws, [0.05, 0.95])
        assert row["eti90_lb"] == pytest.approx(low, rel=1e-9)
        assert row["eti90_ub"] == pytest.approx(high, rel=1e-9)


def test_alpha_is_its_median_and_90_percent_interval(found, law_free_map_fit):
    expected = np.quantile(_draws(law_free_map_fit, "alpha"), [0.05, 0.5, 0.95])
    np.testing.assert_allclose(found.alpha.values, expected, rtol=1e-12)
    verdict = found.verdict.attrs
    low, median, high = expected
    assert (verdict["alpha_low"], verdict["alpha_median"], verdict["alpha_high"]) == (
        pytest.approx(low),
        pytest.approx(median),
        pytest.approx(high),
    )


def _held_out(fit):
    """Observed weights and the posterior mean prediction on the held-out cells, per split."""
    observed = fit.observed_data.observed_weight
    predicted = fit.posterior.expected_weight.mean(("chain", "draw"))
    cells = fit.constant_data.held_out.broadcast_like(observed) & observed.notnull()
    for split in observed.split.values:
        keep = cells.sel(split=split).values
        yield (
            str(split),
            observed.sel(split=split).values[keep],
            predicted.sel(split=split).values[keep],
        )


def test_skill_is_one_minus_the_models_rmse_over_the_best_baselines(found, law_free_map_fit):
    skill_row = dict(SKILL_ROWS)["skill"]
    table = found.skill
    for split, observed, predicted in _held_out(law_free_map_fit):
        rmse = np.sqrt(np.mean((observed - predicted) ** 2))
        model = "rational model (posterior mean)"
        assert table.loc[model, (split, "RMSE")] == pytest.approx(rmse, rel=1e-9)
        best = found.splits.loc[split, "best_baseline"]
        baseline = law_free_map_fit["predictive_skill"].rmse.sel(split=split, predictor=best)
        assert table.loc[skill_row, (split, "skill")] == pytest.approx(1 - rmse / float(baseline))
        assert found.splits.loc[split, "skill"] == pytest.approx(1 - rmse / float(baseline))
        correlation = np.corrcoef(observed, predicted)[0, 1]
        assert found.splits.loc[split, "heldout_correlation"] == pytest.approx(correlation)


def test_what_the_law_adds_is_against_the_better_law_free_reference(found, law_free_map_fit):
    group = law_free_map_fit["predictive_skill"]
    row = dict(SKILL_ROWS)["law_free_skill"]
    for split in found.splits.index:
        rmse = group.rmse.sel(split=split)
        model = float(rmse.sel(predictor="model"))
        best = float(rmse.sel(predictor=found.splits.loc[split, "best_law_free"]))
        assert found.skill.loc[row, (split, "skill")] == pytest.approx(1 - model / best)
        cells = int(group.num_cells.sel(split=split))
        assert found.splits.loc[split, "num_cells"] == cells > 0


def test_a_map_fit_has_no_chains_to_diagnose_and_no_forecast(found):
    assert found.about["method"] == "map" and found.about["model"] == "paper"
    assert set(found.diagnostics.columns) == {"kind", "problem"}
    assert set(found.diagnostics["kind"]) <= {"optimizer"}
    assert np.isnan(found.sampler["divergences"]) and np.isnan(found.sampler["max_r_hat"])
    assert found.transition is None and found.population is None
    assert found.dropped == {}  # PAPER_FIT fits every checkpoint
    assert (found.loo is None) != (found.loo_problem is None)  # a number or why not
    assert found.law_free_seconds > 0


def test_the_verdict_reads_the_fits_given_beside(law_free_map_fit):
    other = law_free_map_fit.copy()
    other.attrs = {**law_free_map_fit.attrs, "held_out_design": "num-tasks"}
    alone = fit_summary(law_free_map_fit).verdict
    beside = fit_summary(law_free_map_fit, verdict_fits=[other]).verdict
    assert alone.status.sel(criterion="num-tasks").item() == "untested"
    assert beside.status.sel(criterion="num-tasks").item() != "untested"


def test_loo_is_computed_once_and_only_when_read(law_free_map_fit, monkeypatch):
    from rational_icl.fits import diagnostics

    calls = []
    real = diagnostics.loo
    monkeypatch.setattr(diagnostics, "loo", lambda tree: calls.append(1) or real(tree))
    summary = fit_summary(law_free_map_fit)
    assert calls == []  # the report never reads it: no PSIS pass
    first = (summary.loo, summary.loo_problem)
    assert (summary.loo, summary.loo_problem) == first and calls == [1]
    # this fit's LOO stands (its Pareto k are fine), so the number is checked, not skipped
    assert summary.loo_problem is None
    assert summary.loo.elpd == pytest.approx(real(law_free_map_fit).elpd, rel=1e-12)

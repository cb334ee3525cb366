"""The fit's agreement metrics: the oracle, and the skill group beside it."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from rational_icl.fits import metrics


def test_oracle_is_each_num_tasks_held_out_mean(map_fit):
    """The oracle's agreement, recomputed by hand from the fit's own observed cells."""
    observed = map_fit.observed_data.observed_weight.sel(split="id")
    cells = (map_fit.constant_data.held_out & observed.notnull()).values
    values = np.where(cells, observed.values, np.nan)
    baseline = np.broadcast_to(np.nanmean(values, axis=1, keepdims=True), values.shape)
    p, o = baseline[cells], observed.values[cells]
    expected = scipy.stats.pearsonr(p, o).statistic
    assert map_fit.attrs["oracle_heldout_correlation_id"] == pytest.approx(expected)
    assert map_fit.attrs["oracle_heldout_tvd_id"] == pytest.approx(np.mean(np.abs(p - o)))


def test_no_unlabelled_baseline_sees_held_out_cells(map_fit):
    assert not any(k.startswith(("baseline_", "authors_baseline_")) for k in map_fit.attrs)


def test_skill_group_scores_the_posterior_mean_on_the_held_out_cells(map_fit):
    skill = map_fit.predictive_skill.to_dataset()
    assert map_fit.attrs["held_out_design"] == "authors"
    observed = map_fit.observed_data.observed_weight
    predicted = map_fit.posterior.expected_weight.mean(("chain", "draw"))
    cells = (map_fit.constant_data.held_out & observed.notnull()).broadcast_like(observed)
    for split in observed.split.values:
        m = cells.sel(split=split).values
        o, p = observed.sel(split=split).values[m], predicted.sel(split=split).values[m]
        rmse = np.sqrt(np.mean((p - o) ** 2))
        assert float(skill.rmse.sel(predictor="model", split=split)) == pytest.approx(rmse)
        assert map_fit.attrs[f"heldout_rmse_{split}"] == pytest.approx(rmse)
        best = map_fit.attrs[f"best_baseline_{split}"]
        expected = 1 - rmse / float(skill.rmse.sel(predictor=best, split=split))
        assert map_fit.attrs[f"skill_{split}"] == pytest.approx(expected)
        assert 0.0 <= map_fit.attrs[f"heldout_coverage_{split}"] <= 1.0


def test_split_scores_read_back_every_per_split_attribute(map_fit):
    scores = metrics.split_scores(map_fit)
    splits = [str(s) for s in map_fit.observed_data.split.values]
    assert list(scores.split.values) == splits
    for split in splits:
        for name in metrics.SPLIT_SCORES:
            stored = map_fit.attrs.get(f"{name}_{split}", np.nan)
            np.testing.assert_equal(float(scores[name].sel(split=split)), stored)
        assert (
            str(scores.best_baseline.sel(split=split).values)
            == map_fit.attrs[f"best_baseline_{split}"]
        )
    # every per-split float the fit stores is one of the scores (nothing read by key strings)
    stored = {k.rsplit("_", 1)[0] for k in map_fit.attrs if k.rsplit("_", 1)[-1] in splits}
    assert stored - set(metrics.SPLIT_SCORES) == {"best_baseline"}

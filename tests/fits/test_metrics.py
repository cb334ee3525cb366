"""The fit's agreement metrics: the oracle, and the skill group beside it."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import xarray as xr

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


def _drift_tree(context_dependent: int = 0) -> xr.DataTree:
    """A fit by hand: 2 draws, 3 num_tasks x 4 checkpoints, split id; the drift's
    predictions (expected_weight) differ from the law (weight_memorizing)."""
    rng = np.random.default_rng(0)
    cells = {"num_tasks": [2, 4, 8], "checkpoint": [10, 20, 30, 40]}
    law = rng.uniform(0.1, 0.9, size=(1, 2, 3, 4))
    expected = np.clip(law + rng.normal(0, 0.1, size=law.shape), 0, 1)[..., None]
    observed = np.clip(law.mean((0, 1)) + rng.normal(0, 0.05, size=(3, 4)), 0, 1)[..., None]
    dims = ("chain", "draw", "num_tasks", "checkpoint")
    posterior = xr.Dataset(
        {
            "weight_memorizing": (dims, law),
            "expected_weight": ((*dims, "split"), expected),
            "drift_scale": (("chain", "draw", "split"), np.full((1, 2, 1), 0.1)),
        },
        coords={**cells, "split": ["id"]},
    )
    kept = np.array([[0, 1, 1, 1]] * 3, bool)  # the authors' early threshold at step 20
    constant = xr.Dataset(
        {
            "held_out": (("num_tasks", "checkpoint"), np.zeros((3, 4), bool)),
            "fit_mask": (("num_tasks", "checkpoint"), np.ones((3, 4), bool)),
            "authors_kept": (("num_tasks", "checkpoint"), kept),
        },
        coords=cells,
    )
    observed_data = xr.Dataset(
        {"observed_weight": (("num_tasks", "checkpoint", "split"), observed)},
        coords={**cells, "split": ["id"]},
    )
    tree = xr.DataTree.from_dict(
        {"posterior": posterior, "constant_data": constant, "observed_data": observed_data}
    )
    tree.attrs["context_dependent"] = context_dependent
    return tree


@pytest.mark.parametrize("context_dependent", [0, 1])
def test_authors_evaluation_of_a_drift_fit_scores_the_law_alone(context_dependent):
    tree = _drift_tree(context_dependent)
    kept = tree.constant_data.authors_kept.values
    observed = tree.observed_data.observed_weight.values[..., 0][kept]
    # a context-dependent fit records no law apart from the drift: it keeps expected_weight
    name = "expected_weight" if context_dependent else "weight_memorizing"
    scored = tree.posterior[name].mean(("chain", "draw")).values.reshape(3, 4, -1)[..., 0]
    assert metrics.authors_score_the_law(tree) == (not context_dependent)
    got = metrics.fit_metrics(tree)
    expected = scipy.stats.pearsonr(scored[kept], observed).statistic
    assert got["authors_correlation"] == pytest.approx(expected)
    assert got["authors_tvd"] == pytest.approx(np.mean(np.abs(scored[kept] - observed)))
    assert got["authors_threshold"] == 20


@pytest.mark.slow
def test_the_law_free_skill_is_against_the_better_reference_on_the_same_cells(law_free_map_fit):
    map_fit = law_free_map_fit
    skill = map_fit.predictive_skill.to_dataset()
    assert map_fit.attrs["law_free_seconds"] > 0
    for split in map_fit.observed_data.split.values:
        row = skill.sel(split=split)
        references = row.rmse.sel(predictor=["law_free_level", "law_free_trend"])
        expected = 1 - float(row.rmse.sel(predictor="model")) / float(references.min())
        assert map_fit.attrs[f"law_free_skill_{split}"] == pytest.approx(expected)
        assert str(row.best_law_free.values) == str(references.idxmin("predictor").values)
        # proper scores of every predictor but the oracle
        crps = row.crps.drop_sel(predictor="oracle")
        assert np.isfinite(crps).all() and (crps > 0).all()
        best = float(row.crps.sel(predictor=str(row.best_crps_baseline.values)))
        expected = 1 - float(row.crps.sel(predictor="model")) / best
        assert map_fit.attrs[f"crps_skill_{split}"] == pytest.approx(expected)


@pytest.mark.slow
def test_without_the_law_free_reference_the_skill_has_no_law_free_rows(law_free_map_fit):
    map_fit = law_free_map_fit
    skill = metrics.skill_of(map_fit, law_free=False)
    assert not {"law_free_level", "law_free_trend"} & set(skill.predictor.values.tolist())
    assert "law_free_skill" not in skill and "law_free_seconds" not in skill.attrs
    # the rest is the same scoring: the model's row and its skill
    stored = map_fit.predictive_skill.to_dataset()
    np.testing.assert_allclose(skill.skill, stored.skill, rtol=1e-12)
    np.testing.assert_allclose(
        skill.rmse.sel(predictor="model"), stored.rmse.sel(predictor="model"), rtol=1e-12
    )

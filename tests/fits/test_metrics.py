"""The fit's agreement metrics: the no-skill baseline."""

import numpy as np
import pytest
import scipy.special
import scipy.stats


def test_no_skill_baseline_is_each_num_tasks_mean(map_fit):
    """The baseline's agreement, recomputed by hand from the fit's own observed cells."""
    observed = map_fit.observed_data.relative_distance.sel(split="id")
    cells = (map_fit.constant_data.held_out & observed.notnull()).values
    values = np.where(cells, observed.values, np.nan)
    baseline = np.broadcast_to(np.nanmean(values, axis=1, keepdims=True), values.shape)
    p, o = baseline[cells], observed.values[cells]
    expected = scipy.stats.pearsonr(p, o).statistic
    assert map_fit.attrs["baseline_heldout_correlation_id"] == pytest.approx(expected)
    assert map_fit.attrs["baseline_heldout_tvd_id"] == pytest.approx(np.mean(np.abs(p - o)))

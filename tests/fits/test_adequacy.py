"""Adequacy: the family-distance summary per num_tasks and the flagged values."""

import numpy as np
import xarray as xr

from rational_icl.fits import adequacy


def test_summary_is_the_late_median_and_flags_the_values_above_the_threshold():
    steps = np.arange(6)
    late = np.array([[0.0, 0.0, 0.0, 0.1, 0.3, 0.2], [9.0, 9.0, 9.0, 0.05, 0.05, 0.05]])
    values = xr.DataArray(
        np.stack([late, late / 10], axis=-1),
        dims=("num_tasks", "checkpoint", "split"),
        coords={"num_tasks": [4, 16], "checkpoint": steps, "split": ["id", "ood"]},
    )
    summary = adequacy.family_distance_summary(values)
    # the later half: checkpoints 3-5; median 0.2 and 0.05; early values left out
    np.testing.assert_allclose(summary.sel(split="id").values, [0.2, 0.05])
    np.testing.assert_allclose(summary.sel(split="ood").values, [0.02, 0.005])
    assert adequacy.inadequate_num_tasks(summary, 0.15) == [4]
    assert adequacy.inadequate_num_tasks(summary, 0.25) == []
    grid = xr.concat([values, values * 3], dim="mlp_expansion_factor")
    wide = adequacy.family_distance_summary(grid)  # the worst configuration counts
    np.testing.assert_allclose(wide.sel(split="id").values, [0.6, 0.15])

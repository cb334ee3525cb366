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


def test_the_unit_is_the_sweeps_largest_memorizing_generalizing_distance():
    # the same distance to the family, 0.3 of each run's own M-G distance; M and G 10x
    # closer at D = 64 than at D = 4: in the sweep's unit D = 64 is 0.03 from the family
    values = xr.DataArray(
        np.full((2, 4, 2), 0.3),
        dims=("num_tasks", "checkpoint", "split"),
        coords={"num_tasks": [4, 64], "checkpoint": np.arange(4), "split": ["id", "ood"]},
    )
    between = xr.DataArray(
        [[0.5, 0.8], [0.05, 0.08]],
        dims=("num_tasks", "split"),
        coords={"num_tasks": [4, 64], "split": ["id", "ood"]},
    )
    own = adequacy.family_distance_summary(values)
    sweep = adequacy.family_distance_summary(values, between)
    np.testing.assert_allclose(own.values, 0.3)
    np.testing.assert_allclose(sweep.sel(num_tasks=4).values, 0.3)
    np.testing.assert_allclose(sweep.sel(num_tasks=64).values, 0.03)
    assert adequacy.inadequate_num_tasks(own) == [4, 64]
    assert adequacy.inadequate_num_tasks(sweep) == [4]
    assert sweep.attrs["unit"] == "the sweep's largest memorizing-generalizing distance"

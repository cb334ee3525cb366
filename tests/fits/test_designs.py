"""Held-out designs: the masks of each design on small grids, and their one-line errors."""

import numpy as np
import pytest
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits import designs
from tests.fits.simulated import NUM_TASKS


def test_held_out_mask_is_the_last_20_percent():
    held_out = designs.held_out_cells(NUM_TASKS, np.arange(1, 101) * 10)
    assert held_out.dims == ("num_tasks", "checkpoint")
    fitted = ~held_out.values
    assert fitted[:9, :80].all()  # round(0.8 * 11) = 9 num_tasks, 80 checkpoints
    assert not fitted[9:].any() and not fitted[:, 80:].any()
    shuffled = designs.held_out_cells([8, 2, 4, 16, 32], [30, 10, 20, 40, 50])
    # ranks, not positions: the largest values are held out
    assert shuffled.sel(num_tasks=32).all() and not shuffled.sel(num_tasks=2, checkpoint=10)
    assert shuffled.sel(checkpoint=50).all()


def _grid(**dims) -> xr.Dataset:
    shape = tuple(len(v) for v in dims.values())
    return xr.Dataset(
        {"weight": (tuple(dims), np.zeros(shape))}, coords=dims, attrs={"max_steps": 100}
    )


def test_held_out_designs_on_a_small_grid():
    grid = _grid(num_tasks=[8, 2, 4, 16, 32], checkpoint=[10, 20, 30, 60, 100], seed=[1, 2, 3])
    forecast = designs.held_out_cells_of(grid, "forecast:0.3")
    assert forecast.dims == ("checkpoint",) and forecast.attrs["design"] == "forecast:0.3"
    np.testing.assert_array_equal(forecast.values, [False, False, False, True, True])
    every_other = designs.held_out_cells_of(grid, "num-tasks")
    # by rank: 2, 4, 8, 16, 32 -> 4 and 16 held out
    np.testing.assert_array_equal(every_other.values, [False, False, True, True, False])
    seed = designs.held_out_cells_of(grid, "seed:2")
    np.testing.assert_array_equal(seed.sel(seed=[1, 2, 3]).values, [False, True, False])
    authors = designs.held_out_cells_of(grid, "authors", 0.8)
    np.testing.assert_array_equal(
        authors.values,
        designs.held_out_cells(grid.num_tasks.values, grid.checkpoint.values, 0.8).values,
    )


@pytest.mark.parametrize(
    ("design", "message"),
    [
        ("forecast:1.5", "forecast:1.5' is not valid.*0 < F < 1"),
        ("forecast:x", "is not valid"),
        ("seeds:1", "allowed: authors, forecast:F, num-tasks, seed:S"),
        ("forecast:0.05", "leaves no checkpoint to fit"),
        ("seed:7", "the runs' seeds are 1, 2, 3"),
    ],
)
def test_bad_held_out_designs_are_refused_in_one_line(design, message):
    grid = _grid(num_tasks=[2, 4], checkpoint=[10, 20, 100], seed=[1, 2, 3])
    with pytest.raises(RiclError, match=message):
        designs.held_out_cells_of(grid, design)


def test_a_seed_design_needs_several_seeds():
    with pytest.raises(RiclError, match="needs runs of several training seeds"):
        designs.held_out_cells_of(_grid(num_tasks=[2, 4], checkpoint=[1, 2]), "seed:1")

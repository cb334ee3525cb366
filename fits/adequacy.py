"""Adequacy: whether the strategies the model knows can represent the transformer at all.

The observed weight on memorizing is read off the closest mixture of the strategies (the
barycentric family, or the memorizing-generalizing line). A transformer that learned some
other strategy still gets a weight: the projection of that strategy onto the family, which
the rational model then fits as if it were a mixture. ``family_distance`` (behaviour
dataset) says how far the transformer is from the family, in units of the distance between
memorizing and generalizing; this module summarises it per num_tasks and names the values
where it is too far to trust the weight.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

# A num_tasks value is flagged where, over the later half of training, the transformer's
# median distance to the family exceeds this fraction of the memorizing-generalizing
# distance. Chosen on the classification case (docs/science.md, "Adequacy"): there the
# transformers at D = 8-32 learn a memory + context predictor outside the family.
THRESHOLD = 0.2


def family_distance_summary(family_distance: xr.DataArray) -> xr.DataArray:
    """Median of ``family_distance`` over the later half of the checkpoints, the largest
    over configurations: dims (num_tasks, split)."""
    checkpoints = family_distance.sizes["checkpoint"]
    late = family_distance.isel(checkpoint=slice(checkpoints // 2, None))
    median = late.median("checkpoint")
    rest = [d for d in median.dims if d not in ("num_tasks", "split")]
    summary = median.max(rest) if rest else median
    return summary.transpose("num_tasks", "split").assign_attrs(
        long_name="median distance to the strategy family, later half of training",
        units="1",
        description="family_distance (over the memorizing-generalizing distance), median "
        "over the later half of the checkpoints, largest over configurations",
        threshold=THRESHOLD,
    )


def inadequate_num_tasks(summary: xr.DataArray, threshold: float = THRESHOLD) -> list[int]:
    """The num_tasks values whose summary exceeds ``threshold`` in any split."""
    flagged = (summary > threshold).any("split")
    return [int(d) for d in summary.num_tasks.values[np.asarray(flagged)]]

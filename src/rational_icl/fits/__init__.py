"""Fits of the rational model: behaviour measures, simulation, NumPyro models and inference.

Nothing in this subpackage imports torch: it works from the predictions files alone.
"""

from rational_icl.fits.behaviour import (
    behaviour,
    best_mixture,
    best_mixture_kl,
    distance_kind,
    load_behaviour,
    prediction_distance,
    relative_distance,
)
from rational_icl.fits.runs import CONFIG_DIMS, config_dims, open_runs
from rational_icl.fits.simulate import (
    rational_log_posterior,
    rational_weight,
    simulate_runs,
)

# ---- models and inference (rational_icl.fits.model, rational_icl.fits.inference) ----
# The model/inference helper adds its imports and __all__ entries here.

__all__ = [
    "CONFIG_DIMS",
    "behaviour",
    "best_mixture",
    "best_mixture_kl",
    "config_dims",
    "distance_kind",
    "load_behaviour",
    "open_runs",
    "prediction_distance",
    "rational_log_posterior",
    "rational_weight",
    "relative_distance",
    "simulate_runs",
]

"""Fits of the rational model: behaviour measures, simulation, NumPyro models and inference.

Nothing in this subpackage imports torch: it works from the predictions files alone.
``fit``, ``FitSettings``, ``fit_summary``, ``read_fit`` and ``write_fit`` load on first
use, so importing this package loads neither JAX nor NumPyro (nor changes their settings).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from rational_icl.fits.inference import fit
    from rational_icl.fits.inputs import FitSettings
    from rational_icl.fits.summary import fit_summary
    from rational_icl.fits.tree import read_fit, write_fit

# name -> the module (of this package) that defines it, imported when the name is first read
_ON_FIRST_USE = {
    "fit": "inference",
    "FitSettings": "inputs",
    "fit_summary": "summary",
    "read_fit": "tree",
    "write_fit": "tree",
}


def __getattr__(name: str):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_ON_FIRST_USE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})


__all__ = [
    "CONFIG_DIMS",
    "FitSettings",
    "behaviour",
    "best_mixture",
    "best_mixture_kl",
    "config_dims",
    "distance_kind",
    "fit",
    "fit_summary",
    "load_behaviour",
    "open_runs",
    "prediction_distance",
    "rational_log_posterior",
    "rational_weight",
    "read_fit",
    "relative_distance",
    "simulate_runs",
    "write_fit",
]

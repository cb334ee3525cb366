"""The benchmarks' settings still fit their own simulated data: a change of FitSettings'
defaults (the default model, the early-checkpoint rule) once broke every one of them
silently, since nothing ran them between measurements."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from rational_icl.fits.inputs import model_inputs
from rational_icl.vocabulary import DEFAULT_MODEL

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def benchmark(monkeypatch):
    """Import a benchmark script by name; the XLA flags it sets at import (its CPU
    devices) are put back afterwards, so that later tests' subprocesses do not see them."""
    if "XLA_FLAGS" in os.environ:
        monkeypatch.setenv("XLA_FLAGS", os.environ["XLA_FLAGS"])
    else:
        monkeypatch.delenv("XLA_FLAGS", raising=False)

    def load(name: str):
        spec = importlib.util.spec_from_file_location(
            f"benchmark_{name}", BENCHMARKS / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _fitted_cells(data, settings) -> int:
    return int(np.asarray(model_inputs(data, settings).fit_mask).sum())


def test_paper_grid_settings_fit_the_simulated_grid(benchmark):
    fits = benchmark("fits")
    data, _ = fits.paper_behaviour(0)
    for base in (fits.PAPER_MAP, fits.PAPER_NUTS):
        settings = fits._paper_settings(base, "paper")
        assert settings.model == "paper" and _fitted_cells(data, settings) > 0
    drifting, truth = fits.paper_behaviour(0, drift=True)
    settings = fits._paper_settings(fits.PAPER_NUTS, DEFAULT_MODEL)
    assert _fitted_cells(drifting, settings) > 0 and "drift_length" in truth


def test_small_grid_and_calibration_fit_the_paper_model(benchmark):
    fits, calibration = benchmark("fits"), benchmark("calibration")
    assert fits.SMALL_NUTS.model == calibration.SETTINGS.model == "paper"
    cells = fits.behaviour().relative_distance.size
    assert 0 < _fitted_cells(fits.behaviour(), fits.SMALL_NUTS) <= cells
    assert _fitted_cells(calibration.template(), calibration.SETTINGS) > 0

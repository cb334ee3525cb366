"""Fixtures for tests/reports: a tiny simulated sweep, its behaviour, and a MAP fit of it.

The sweep is real ``ricl data`` output (categorical, K = 4, T = 8, D = 2 ... 256) turned
into "trained" runs by ``fits.simulate_runs`` with known alpha, beta, gamma, so no
transformer is trained; the fit is ``fits.inference.fit`` with ``method="map"`` (Laplace
draws, 2 chains), which takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

from rational_icl.cli.main import main
from rational_icl.fits import load_behaviour, simulate_runs
from tests.fits.simulated import PAPER_FIT

SPEC = """\
setting = "categorical-sequence"
num_dims = 4
context_length = 8
num_tasks = [2, 4, 8, 16, 32, 64, 128, 256]
seed = 1

[training]
max_steps = 2000
num_checkpoints = 12

[evaluation]
num_sequences = 4
num_loss_sequences = 64
"""


@pytest.fixture(scope="session")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="session")
def runs_folder(spec_file, tmp_path_factory) -> Path:
    """Simulated runs (alpha 0.5, beta 0.3, gamma 3): small D memorize, large D do not."""
    root = tmp_path_factory.mktemp("sweep")
    assert main(["data", str(spec_file), "--out", str(root / "data")]) == 0
    return simulate_runs(root / "data", root / "runs", 0.5, 0.3, 3.0, noise=0.1, seed=1)


@pytest.fixture(scope="session")
def behaviour(runs_folder) -> xr.Dataset:
    return load_behaviour(runs_folder)


@pytest.fixture(scope="session")
def fit(behaviour) -> xr.DataTree:
    from rational_icl.fits.inference import fit as fit_model
    from rational_icl.fits.inputs import FitSettings

    # the paper's model, scored beside the law-free reference: the report shows what the law adds
    return fit_model(
        behaviour,
        FitSettings(**(PAPER_FIT | {"law_free": True}), method="map", chains=2, draws=100, seed=0),
    )


@pytest.fixture(scope="session")
def fit_file(fit, tmp_path_factory) -> Path:
    from rational_icl.fits.tree import write_fit

    return write_fit(fit, tmp_path_factory.mktemp("fit") / "fit.nc")

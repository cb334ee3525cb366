"""docs/extending.md, "A new task setting": one module is a whole setting. The toy coin of
tests/coin.py, registered and no package file changed, runs through ``ricl data``, a few
training steps and the behaviour measure."""

import math
import re

import numpy as np
import pytest
import xarray as xr

from rational_icl.cli.main import main
from rational_icl.fits import load_behaviour
from tests.layout import modules

SPEC = """\
setting = "coin"
coin_concentration = 2
num_dims = 2
context_length = 12
num_tasks = [2, 16]
seed = 3

[model]
hidden_size = 16
position_encoding = "learned"

[training]
batch_size = 16
learning_rate = 0.003
max_steps = 40
num_checkpoints = 3

[evaluation]
num_sequences = 8
num_loss_sequences = 64
"""


def _memorizing(flips: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """P(heads) at each position under a uniform prior over the stored coins, (..., T)."""
    before = np.cumsum(flips, -1) - flips  # heads before t
    count = np.arange(flips.shape[-1])
    log_likelihood = before[..., None] * np.log(heads) + (count - before)[..., None] * np.log(
        1 - heads
    )  # (..., T, D)
    weights = np.exp(log_likelihood - log_likelihood.max(-1, keepdims=True))
    return (weights * heads).sum(-1) / weights.sum(-1)


def test_a_new_setting_runs_through_data_training_and_behaviour(coin_setting, tmp_path):
    assert not [p for p in modules().values() if re.search(r"\bcoin\b", p.read_text())]
    spec = tmp_path / "coin.toml"
    spec.write_text(SPEC)
    assert main(["data", str(spec), "--out", str(tmp_path / "data")]) == 0
    paths = sorted((tmp_path / "data").glob("coin_K2_T12_D*_seed3.nc"))
    assert [p.name.split("_")[3] for p in paths] == ["D16", "D2"]
    data = xr.load_dataset(paths[0])
    assert data.attrs["coin_concentration"] == 2 and data.attrs["loss_kind"] == "cross-entropy"
    # the strategies, recomputed from the file's flips and stored coins
    flips, heads = data.flips.values, data.training_tasks.values[:, 0]  # (split, S, T), (D,)
    heads_before, count = np.cumsum(flips, -1) - flips, np.arange(12)
    prediction = data.strategy_prediction.sel(outcome=1)
    generalizing = (heads_before + 2) / (count + 4)  # Beta(2, 2) predictive
    np.testing.assert_allclose(prediction.sel(strategy="generalizing"), generalizing, rtol=1e-12)
    memorizing = _memorizing(flips[0], heads)  # the id split
    np.testing.assert_allclose(prediction.sel(strategy="memorizing", split="id"), memorizing)
    assert data.strategy_loss.sel(strategy="constant") == pytest.approx(math.log(2), abs=1e-12)
    complexity = data.strategy_complexity
    assert complexity.sel(strategy="memorizing") > complexity.sel(strategy="generalizing") > 0

    assert main(["train", str(spec), "--out", str(tmp_path / "runs"), "--threads", "1"]) == 0
    run = xr.load_dataset(tmp_path / "runs" / paths[1].name)
    p = run.transformer_prediction.values.astype(np.float64)  # (C, split, S, P, O)
    chosen = np.take_along_axis(p, run.flips.values[None, ..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(run.transformer_loss, -np.log(chosen).mean((-1, -2)), rtol=1e-5)
    measured = load_behaviour(tmp_path / "runs")
    assert measured.num_tasks.values.tolist() == [2, 16] and measured.sizes["checkpoint"] == 3
    assert measured.attrs["distance_measure"] == "symmetrized KL divergence"
    assert np.isfinite(measured.distance).all() and np.isfinite(measured.strategy_mass).all()

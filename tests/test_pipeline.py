"""The stages as Python functions: a notebook's whole pipeline on a small spec, and the same
fit as `ricl fit`."""

import shutil

import numpy as np
import xarray as xr

from rational_icl import pipeline
from rational_icl.cli.main import main
from rational_icl.data import load_specs
from rational_icl.fits import FitSettings, read_fit, simulate_runs
from rational_icl.io import read_netcdf
from tests.fits.simulated import PAPER_FIT

SPEC = """
setting = "categorical-sequence"
num_dims = 4
context_length = 6
num_tasks = [2, 4, 8]

[model]
hidden_size = 8
position_encoding = "learned"

[training]
batch_size = 4
max_steps = 40
num_checkpoints = 4

[evaluation]
num_sequences = 2
num_loss_sequences = 10
"""


def test_the_pipeline_functions_run_every_stage_as_the_commands_do(tmp_path, capsys):
    spec_file = tmp_path / "small.toml"
    spec_file.write_text(SPEC)
    specs = load_specs(str(spec_file))
    runs = tmp_path / "runs"
    written = pipeline.write_data(specs, runs)
    assert [p.name for p in written] == [f"{r.name}.nc" for r in specs[0].runs()]
    data = tmp_path / "data"
    shutil.copytree(runs, data)
    trained = pipeline.train_specs(specs, runs)  # the default device, as `ricl train`
    assert sorted(trained) == sorted(written)
    assert all("transformer_prediction" in read_netcdf(p) for p in trained)
    # a few training steps leave no weight to fit: fit runs simulated from the law instead
    runs = tmp_path / "simulated"
    simulate_runs(data, runs, 0.5, 0.3, 3.0, checkpoints=12, noise=0.05, seed=1)
    measured = pipeline.measure_behaviour(runs, tmp_path / "behaviour.nc")
    xr.testing.assert_identical(read_netcdf(tmp_path / "behaviour.nc"), measured)
    settings = FitSettings(
        **PAPER_FIT, method="map", chains=1, draws=50, pointwise_draws=50, seed=3
    )
    fit = pipeline.fit_runs(runs, tmp_path / "fit.nc", settings)
    back = read_fit(tmp_path / "fit.nc")
    np.testing.assert_array_equal(back.posterior.alpha.values, fit.posterior.alpha.values)
    # `ricl fit` with the same settings runs the same function: the same draws, bit for bit
    argv = ["fit", str(runs), "-o", str(tmp_path / "cli.nc"), "--method", "map"]
    argv += ["--chains", "1", "--draws", "50", "--pointwise-draws", "50", "--sampler-seed", "3"]
    argv += ["--model", "paper", "--measure", "auto", "--splits", "all", "--no-drop-early"]
    argv += ["--no-law-free"]
    assert main(argv) == 0
    cli = read_fit(tmp_path / "cli.nc")
    for name in ("alpha", "beta", "gamma"):
        np.testing.assert_array_equal(cli.posterior[name].values, fit.posterior[name].values)
    page = pipeline.report([tmp_path / "behaviour.nc", tmp_path / "fit.nc"], tmp_path / "report")
    assert page == tmp_path / "report" / "index.html" and page.stat().st_size > 0
    capsys.readouterr()


def test_run_specs_fits_the_model_the_papers_beside_it_and_each_verdict_design(tmp_path):
    """`ricl run`'s fits (pipeline.run_specs): the settings asked for into fit.nc, the
    paper's model beside them, and the same settings under each verdict design; each
    announced as the `ricl fit` command that repeats it."""
    settings = FitSettings(splits=("id",))
    job = pipeline._Job(settings, verdict_designs=("forecast:0.3", "num-tasks"))
    fits = pipeline._fits(tmp_path, job)
    names = ["fit.nc", "fit_paper.nc", "fit_forecast-0.3.nc", "fit_num-tasks.nc"]
    assert [path.name for path, _ in fits] == names
    assert [s.model for _, s in fits] == [settings.model, "paper", settings.model, settings.model]
    assert [s.held_out for _, s in fits] == ["authors", "authors", "forecast:0.3", "num-tasks"]
    assert fits[1][1] == FitSettings(splits=("id",), model="paper")
    path, forecast = fits[2]
    command = pipeline._fit_command(tmp_path / "runs", path, tmp_path / "b.nc", forecast)
    assert " ".join(command).endswith(
        f"--held-out forecast:0.3 --model {settings.model} --splits id"
    )

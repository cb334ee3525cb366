"""The job plan: counts from the spec, disk estimates against files actually written."""

import dataclasses
import tomllib

import pytest

from rational_icl.data import spec_from_dict
from rational_icl.fits import inference, inputs
from rational_icl.fits.behaviour import behaviour
from rational_icl.fits.runs import open_runs
from rational_icl.fits.tree import write_fit
from rational_icl.training.loop import train
from rational_icl.training.plan import format_plan, plan_job
from tests.fits.simulated import PAPER_FIT
from tests.specs import SMALL_CATEGORICAL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spec():
    spec = spec_from_dict(tomllib.loads(SMALL_CATEGORICAL))
    training = dataclasses.replace(spec.training, max_steps=300, num_checkpoints=6)
    return dataclasses.replace(spec, training=training)


@pytest.fixture(scope="module")
def plan(spec):
    return plan_job([spec], chains=2, draws=200, pointwise_draws=100, probe_steps=2)


def test_counts_follow_the_spec(spec, plan):
    assert plan.runs == 4
    assert len(plan.ensembles) == 1 and plan.ensembles[0].members == 4
    assert plan.member_steps == 4 * 300
    assert plan.seconds > 0 and plan.peak_memory_bytes > 0
    assert plan.fit_cells == 4 * 6 * 2  # num_tasks x checkpoints x splits
    text = format_plan(plan)
    for word in ("runs", "ensembles", "member-steps", "peak memory", "predictions", "fit", "time"):
        assert word in text


def test_disk_estimates_are_within_10_percent_of_the_files_written(spec, plan, tmp_path):
    files = train(spec, tmp_path / "runs", progress=False)
    written = sum(path.stat().st_size for path in files)
    assert plan.predictions_bytes == pytest.approx(written, rel=0.10)
    runs = open_runs(tmp_path / "runs")
    settings = inputs.FitSettings(**PAPER_FIT, chains=2, warmup=100, draws=200, pointwise_draws=100)
    tree = inference.fit(behaviour(runs).compute(), settings)
    fit_file = write_fit(tree, tmp_path / "fit.nc")
    assert plan.fit_bytes == pytest.approx(fit_file.stat().st_size, rel=0.10)

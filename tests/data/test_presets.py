"""Built-in presets: each one's setting, num_tasks, steps and grid size, and that it is a valid
spec; the tiny ones sweep num_tasks log-spaced from 2 to 1024, and the tiny classification
preset keeps its two strategies measurably apart at both ends of that grid."""

from __future__ import annotations

import tomllib

import pytest
import torch

from rational_icl.data import Run, generator, load_specs, make_setting
from rational_icl.data.presets import PRESETS, preset_specs
from rational_icl.data.spec import ExperimentSpec, spec_from_dict
from rational_icl.training.predictions import training_tasks

TINY = ["tiny-categorical", "tiny-regression", "tiny-classification"]
PAPER = ["paper-categorical", "paper-regression", "paper-classification"]
POWERS_OF_TWO = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
NUM_TASKS = {
    "tiny-categorical": [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    "tiny-regression": [2, 3, 4, 6, 8, 12, 16, 64, 256, 1024],
    "tiny-classification": [2, 4, 6, 8, 12, 16, 32, 64, 256, 1024],
    **{name: POWERS_OF_TWO for name in PAPER},
}
# preset -> (setting, max_steps, num_layers, batch_size, scalar specs, runs); the paper grids
# are 3 num_dims x 3 context lengths x 3 MLP factors (classification: one num_dims)
EXPECTED = {
    "tiny-categorical": ("categorical-sequence", 4000, 1, 32, 1, 10),
    "tiny-regression": ("linear-regression", 1500, 3, 128, 1, 10),
    "tiny-classification": ("classification", 3000, 1, 128, 1, 10),
    "paper-categorical": ("categorical-sequence", 100_000, 1, 64, 27, 297),
    "paper-regression": ("linear-regression", 100_000, 8, 128, 27, 297),
    "paper-classification": ("classification", 100_000, 1, 64, 9, 99),
}


def test_presets_name_their_members():
    assert PRESETS == {**{name: [name] for name in EXPECTED}, "tiny": TINY, "paper": PAPER}
    assert [s.name for s in preset_specs("tiny")] == TINY
    assert [s.name for s in preset_specs("paper")] == PAPER


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_preset_is_a_valid_spec_with_its_values(name):
    (spec,) = preset_specs(name)
    setting, max_steps, num_layers, batch_size, grid, runs = EXPECTED[name]
    assert isinstance(spec, ExperimentSpec) and spec.name == name
    assert (spec.setting, list(spec.num_tasks)) == (setting, NUM_TASKS[name])
    assert (spec.training.max_steps, spec.model.num_layers) == (max_steps, num_layers)
    assert spec.training.batch_size == batch_size
    assert (len(spec.expand()), len(spec.runs())) == (grid, runs)
    # it validates: its TOML reads back through the spec checks to the same spec
    assert spec_from_dict(tomllib.loads(spec.to_toml())) == spec


def test_tiny_presets_sweep_num_tasks_from_2_to_1024():
    for spec in load_specs("tiny"):
        num_tasks = list(spec.num_tasks)
        assert num_tasks[0] == 2 and num_tasks[-1] == 1024, spec.name
        # increasing, at most a factor 4 apart over the whole range, and denser where the
        # weights move (regression and classification crowd D = 3-16: see presets.py)
        ratios = [b / a for a, b in zip(num_tasks, num_tasks[1:], strict=False)]
        assert all(1 < r <= 4 for r in ratios), spec.name
        assert sum(2 < d <= 16 for d in num_tasks) >= 3, spec.name


def _losses_and_distance(run: Run, num_sequences: int = 4000):
    """L_M, L_G (cross-entropy, nats) and d_MG (symmetrized KL) on id sequences of the run's
    own training tasks, float64."""
    setting, tasks, num_tasks = make_setting(run.spec), training_tasks(run), run.num_tasks
    batch = setting.sample_batch(tasks, num_sequences, generator(7, "preset-batch", num_tasks))
    assert tasks.tasks.dtype == torch.float64  # the strategies compute in this dtype
    memorizing, generalizing = (
        setting.strategy_prediction(batch, tasks, q)[:, 0] for q in ("memorizing", "generalizing")
    )
    label = batch.query_label[:, None]

    def loss(p):
        return -p.clamp_min(1e-300).log().gather(1, label).mean().item()

    log_ratio = memorizing.clamp_min(1e-12).log() - generalizing.clamp_min(1e-12).log()
    distance = (0.5 * (memorizing - generalizing) * log_ratio).sum(-1).mean().item()
    return loss(memorizing), loss(generalizing), distance


@pytest.mark.parametrize("num_tasks", [2, 1024])
def test_tiny_classification_keeps_memorizing_and_generalizing_apart(num_tasks):
    (spec,) = load_specs("tiny-classification")
    memorizing, generalizing, distance = _losses_and_distance(Run(spec, num_tasks))
    if num_tasks == 2:
        # few tasks: memorizing wins, but is not so sure that every prediction is 0 or 1
        assert memorizing < generalizing
        assert memorizing > 1e-3
    else:
        # many tasks: memorizing is near chance while the in-context look-up stays good
        assert generalizing < 0.3
        assert memorizing > generalizing + 0.2
    assert distance > 0.1

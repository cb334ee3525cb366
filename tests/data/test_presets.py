"""Built-in presets: the tiny ones sweep num_tasks log-spaced from 2 to 1024, and the tiny
classification preset keeps its two strategies measurably apart at both ends of that grid."""

from __future__ import annotations

import pytest
import torch

from rational_icl.data import Run, generator, load_specs, make_setting
from rational_icl.data.presets import PRESETS, preset_specs
from rational_icl.training.predictions import training_tasks


def test_every_preset_loads():
    for name in PRESETS:
        assert preset_specs(name)


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

import math

import pytest
import torch

from rational_icl.data import spec_from_dict
from rational_icl.training.ensemble import EnsembleTrainer, clip_grad_norm_per_member
from rational_icl.training.predictions import training_tasks

_SPEC = {
    "setting": "categorical-sequence",
    "num_dims": 4,
    "context_length": 8,
    "num_tasks": [2, 8, 64],
    "model": {"num_layers": 1, "hidden_size": 16, "position_encoding": "learned"},
    "training": {"batch_size": 16, "learning_rate": 3e-3},
}


def _spec(setting="categorical-sequence", **training):
    return spec_from_dict(
        {**_SPEC, "setting": setting, "training": {**_SPEC["training"], **training}}
    )


def test_loss_falls_to_the_task_entropy_within_a_few_dozen_steps():
    spec = spec_from_dict({**_SPEC, "num_tasks": [1], "training": {"learning_rate": 1e-2}})
    trainer = EnsembleTrainer(spec)
    theta = trainer.tasks[0].tasks[0]  # one task: the best prediction is theta itself
    entropy = -(theta * theta.log()).sum().item()  # 0.67 nats for this seed
    losses = torch.stack([trainer.train_step() for _ in range(40)])[:, 0]
    assert losses[0] == pytest.approx(math.log(4), abs=0.05)  # uniform at initialisation
    assert losses[-10:].mean().item() == pytest.approx(entropy, abs=0.06)


@pytest.mark.parametrize("setting", ["categorical-sequence", "linear-regression", "classification"])
def test_ensemble_member_follows_the_single_run_trajectory(setting):
    spec = _spec(setting)
    ensemble = EnsembleTrainer(spec)
    singles = [EnsembleTrainer(spec, num_tasks=[d]) for d in spec.num_tasks]
    for _ in range(20):
        ensemble_loss = ensemble.train_step()
        for e, single in enumerate(singles):
            torch.testing.assert_close(single.train_step()[0], ensemble_loss[e], rtol=1e-5, atol=0)
    batch, _ = ensemble.sample()
    prediction = ensemble.predict(batch)
    for e, single in enumerate(singles):
        member_batch = type(batch)(**{k: v[e : e + 1] for k, v in vars(batch).items()})
        single_prediction = single.predict(member_batch)[0]
        error = (single_prediction - prediction[e]).norm() / prediction[e].norm()
        assert error < 1e-5  # categorical and classification agree bitwise on CPU


def test_members_train_on_the_task_set_every_stage_sees():
    spec = _spec()
    trainer = EnsembleTrainer(spec)
    for run, tasks in zip(trainer.runs, trainer.tasks, strict=True):
        torch.testing.assert_close(tasks.tasks, training_tasks(run).tasks, rtol=0, atol=0)
    batch, targets = trainer.sample()
    assert batch.tokens.shape == (3, 16, 8) and targets.shape == (3, 16, 8)
    assert batch.task_index[0].max() < 2  # member 0 draws from its 2 tasks only


def test_gradients_are_clipped_per_member():
    a = torch.zeros(3, 2, requires_grad=True)
    b = torch.zeros(3, 1, 1, requires_grad=True)
    a.grad = torch.tensor([[3.0, 0.0], [0.3, 0.0], [0.0, 6.0]])
    b.grad = torch.tensor([[[4.0]], [[0.4]], [[8.0]]])
    norm = clip_grad_norm_per_member([a, b], max_norm=1.0)
    torch.testing.assert_close(norm, torch.tensor([5.0, 0.5, 10.0], dtype=torch.float64))
    # members 0 and 2 scaled to norm 1, member 1 (norm 0.5) untouched
    torch.testing.assert_close(a.grad[:, 0], torch.tensor([0.6, 0.3, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.grad.flatten(), torch.tensor([0.8, 0.4, 0.8]), atol=1e-6, rtol=0)


def test_state_dict_round_trip_continues_identically():
    spec = _spec(warmup_steps=5)
    first = EnsembleTrainer(spec)
    for _ in range(3):
        first.train_step()
    second = EnsembleTrainer(spec)
    second.load_state_dict(first.state_dict())
    assert second.step == 3
    torch.testing.assert_close(second.train_step(), first.train_step(), rtol=0, atol=0)


def test_bf16_autocast_trains_and_predicts_close_to_float32():
    spec32, spec16 = _spec(), _spec(precision="bf16")
    full, half = EnsembleTrainer(spec32), EnsembleTrainer(spec16)
    half.model.load_state_dict(full.model.state_dict())
    batch, _ = full.sample()
    difference = (half.predict(batch) - full.predict(batch)).abs().max()
    assert 0 < difference < 0.02  # bf16 keeps ~3 significant digits
    assert torch.isfinite(half.train_step()).all()

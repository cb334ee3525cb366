import numpy as np
import torch

from rational_icl.data import Run, spec_from_dict
from rational_icl.training.ensemble import EnsembleTrainer
from rational_icl.training.evaluation import evaluate, evaluation_inputs
from rational_icl.training.predictions import evaluation_batches, strategy_dataset, training_tasks


def _spec(setting, num_tasks):
    return spec_from_dict(
        {
            "setting": setting,
            "num_dims": 4,
            "context_length": 5,
            "num_tasks": num_tasks,
            "model": {"hidden_size": 8},
            "evaluation": {"num_sequences": 3, "num_loss_sequences": 10},
        }
    ).expand()[0]


def test_sequences_rebuilt_from_the_file_are_the_ones_the_strategies_saw():
    spec = _spec("linear-regression", [4])
    run = Run(spec, 4)
    (inputs_id, inputs_ood) = evaluation_inputs([strategy_dataset(run)])
    batch, _ = evaluation_batches(run, training_tasks(run))["id"]
    torch.testing.assert_close(inputs_id.batch.x[0], batch.x, rtol=0, atol=0)
    torch.testing.assert_close(inputs_id.batch.y[0], batch.y, rtol=0, atol=0)
    assert inputs_ood.split == "ood" and inputs_ood.members == [0]


def test_members_lacking_a_split_are_left_out_of_it():
    spec = _spec("classification", [1, 4])  # one task: no in-weights split
    datasets = [strategy_dataset(Run(spec, d)) for d in (1, 4)]
    inputs = evaluation_inputs(datasets)
    assert [i.split for i in inputs] == ["id", "ood", "iwl"]
    assert inputs[2].members == [1]
    trainer = EnsembleTrainer(spec)
    results = evaluate(trainer, inputs)
    assert sorted(results[0].losses) == ["id", "ood"]
    assert sorted(results[1].losses) == ["id", "iwl", "ood"]
    prediction = results[1].predictions["iwl"]  # (S, P=1, O=2)
    assert prediction.shape == (3, 1, 2) and prediction.dtype == np.float32


def test_losses_are_the_strategy_losses_applied_to_the_transformer():
    spec = _spec("categorical-sequence", [4])
    run = Run(spec, 4)
    (inputs_id, _) = evaluation_inputs([strategy_dataset(run)])
    trainer = EnsembleTrainer(spec)
    result = evaluate(trainer, [inputs_id])[0]
    batch, tasks = evaluation_batches(run, training_tasks(run))["id"]
    prediction = torch.from_numpy(result.predictions["id"]).double()
    expected = trainer.setting.prediction_loss(prediction, batch, tasks).mean().item()
    assert result.losses["id"] == expected

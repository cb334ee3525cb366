import pytest
import torch
from torch.utils.data import DataLoader

from rational_icl.data import Run, spec_from_dict
from rational_icl.errors import RiclError
from rational_icl.modeling.model import EnsembleTransformer, TransformerConfig
from rational_icl.training.ensemble import EnsembleTrainer
from rational_icl.training.tasks_dataset import TaskStream, read_out_loss, read_out_of

SETTINGS = ["categorical-sequence", "linear-regression", "classification"]


def _spec(setting):
    (spec,) = spec_from_dict(
        {
            "setting": setting,
            "num_dims": 4,
            "context_length": 6,
            "num_tasks": [2, 8],
            "model": {"num_layers": 1, "hidden_size": 8},
            "training": {"batch_size": 5, "max_steps": 10, "num_checkpoints": 1},
            "evaluation": {"num_sequences": 4, "num_loss_sequences": 20},
        }
    ).expand()
    return spec


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_stream_is_what_ricl_train_draws_and_resumes_at_a_step(setting):
    spec = _spec(setting)
    trainer = EnsembleTrainer(spec)
    drawn = [trainer.sample() for _ in range(3)]  # (batch (E, B, ...), targets (E, B, P))
    stream = list(TaskStream(Run(spec, 8), batched=True, num_steps=3))
    layout = read_out_of(Run(spec, 8)).layout
    for (batch, targets), example in zip(drawn, stream, strict=True):
        tokens = trainer.setting.tokens(batch, layout, torch.float32)
        assert torch.equal(example["targets"], targets[1])
        for name in ("features", "symbols"):
            if getattr(tokens, name) is None:
                assert name not in example
            else:
                assert torch.equal(example[name], getattr(tokens, name)[1])
    resumed = next(iter(TaskStream(Run(spec, 8), start_step=2, batched=True)))
    assert torch.equal(resumed["targets"], stream[2]["targets"])


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_data_loader_rebuilds_the_batches_and_the_loss_is_ricl_trains(setting):
    spec = _spec(setting)
    run = Run(spec, 2)
    stream = TaskStream(run, num_steps=2)
    assert len(stream) == 10
    loaded = list(DataLoader(stream, batch_size=5))
    batched = list(TaskStream(run, batched=True, num_steps=2))
    for a, b in zip(loaded, batched, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    model = EnsembleTransformer(TransformerConfig.from_spec(spec), seeds=[3])
    trainer = EnsembleTrainer(spec, [2])
    batch, targets = trainer.sample()
    output, loss = model(batch, targets)  # (1, B, P, O), (1,)
    ours = read_out_loss(output[0], targets[0], read_out_of(run).kind)
    torch.testing.assert_close(ours, loss[0], rtol=1e-5, atol=1e-6)


def test_read_out_describes_each_setting():
    kinds = [read_out_of(Run(_spec(s), 2)) for s in SETTINGS]
    assert [k.kind for k in kinds] == ["logits", "mean", "logits"]
    assert (
        kinds[0].describe()
        == "6 tokens of one of 5 symbols per token in; 6 predictions of 4 logits out"
    )
    assert kinds[1].layout.num_predictions == 6 and kinds[1].layout.sequence_length == 11
    assert kinds[2].layout.num_predictions == 1
    with pytest.raises(RiclError, match="start_step 11"):
        TaskStream(Run(_spec(SETTINGS[0]), 2), start_step=11)

import tomllib

import numpy as np
import pytest
import torch
import xarray as xr

from rational_icl.cli.main import main
from rational_icl.data import Run, spec_from_dict

SPEC = """
setting = "categorical-sequence"
num_dims = 4
context_length = 6
num_tasks = [2]

[training]
max_steps = 30
num_checkpoints = 3

[evaluation]
num_sequences = 4
num_loss_sequences = 20
"""

FACTORY = '''
import torch
from torch import nn


class Counts(nn.Module):
    """Logits from an embedding of each token: a model of any shape the recorder accepts."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(5, 4)

    def forward(self, tokens):
        return self.table(tokens.symbols)  # (S, L, O)


def build(run):
    return Counts()
'''


@pytest.fixture
def setup(tmp_path):
    spec_file = tmp_path / "small.toml"
    spec_file.write_text(SPEC)
    (tmp_path / "factory.py").write_text(FACTORY)
    (spec,) = spec_from_dict(tomllib.loads(SPEC)).expand()
    folder = tmp_path / "ckpt" / Run(spec, 2).name
    folder.mkdir(parents=True)
    tables = {}
    for step, name in [(20, "checkpoint-20.pt"), (30, "step-30.pt")]:
        tables[step] = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
        torch.save({"table.weight": tables[step]}, folder / name)
    hf_like = folder / "checkpoint-25"  # a folder as the HF Trainer saves one
    hf_like.mkdir()
    tables[25] = torch.zeros(5, 4)
    torch.save({"table.weight": tables[25]}, hf_like / "pytorch_model.bin")
    (hf_like / "trainer_state.json").write_text('{"log_history": [{"step": 25, "loss": 1.2}]}')
    return tmp_path, spec_file, tables


def _ricl(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_record_loads_each_saved_checkpoint_and_records_it(setup, capsys):
    tmp_path, spec_file, tables = setup
    argv = ["record", spec_file, "--runs", tmp_path / "runs", "--checkpoints", tmp_path / "ckpt"]
    argv += ["--model", f"{tmp_path / 'factory.py'}:build"]
    code, out, err = _ricl(capsys, *argv)
    assert code == 0, err
    assert "recorded 3 checkpoint(s)" in out
    (path,) = (tmp_path / "runs").glob("*.nc")
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    assert ds["checkpoint"].values.tolist() == [20, 25, 30]
    assert ds["train_loss"].values.tolist() == [1.2] and ds["step"].values.tolist() == [25]
    start = np.full((4, 1), 4)  # the categorical start symbol K, then the first T - 1 draws
    symbols = np.concatenate([start, ds["tokens"].sel(split="id").values[:, :-1]], 1)  # (S, T)
    expected = torch.softmax(tables[30][torch.from_numpy(symbols)], -1).numpy()  # (S, T, K)
    np.testing.assert_allclose(
        ds["transformer_prediction"].sel(checkpoint=30, split="id").values, expected, rtol=1e-6
    )
    np.testing.assert_allclose(ds["transformer_prediction"].sel(checkpoint=25).values, 0.25)
    code, _, err = _ricl(capsys, *argv)  # everything is recorded already
    assert code != 0 and "no new checkpoints recorded" in err and err.count("\n") == 1


def test_a_bad_factory_or_checkpoint_is_one_line(setup, capsys):
    tmp_path, spec_file, _ = setup
    base = ["record", spec_file, "--runs", tmp_path / "runs", "--checkpoints", tmp_path / "ckpt"]
    code, _, err = _ricl(capsys, *base, "--model", f"{tmp_path / 'factory.py'}:missing")
    assert code != 0 and "has no function 'missing'" in err and err.count("\n") == 1
    (tmp_path / "other.py").write_text(FACTORY.replace("nn.Embedding(5, 4)", "nn.Embedding(5, 3)"))
    code, _, err = _ricl(capsys, *base, "--model", f"{tmp_path / 'other.py'}:build")
    assert code != 0 and "does not fit the factory's model" in err and err.count("\n") == 1


def test_a_second_model_is_refused_in_one_line_until_the_file_starts_over(setup, capsys):
    tmp_path, spec_file, _ = setup
    base = ["record", spec_file, "--runs", tmp_path / "runs", "--checkpoints", tmp_path / "ckpt"]
    code, _, err = _ricl(capsys, *base, "--model", f"{tmp_path / 'factory.py'}:build")
    assert code == 0, err
    (path,) = (tmp_path / "runs").glob("*.nc")
    # another model's checkpoint at a later step
    torch.save({"table.weight": torch.zeros(5, 4)}, tmp_path / "ckpt" / path.stem / "step-35.pt")
    (tmp_path / "other.py").write_text(
        FACTORY.replace("class Counts", "class Other").replace("Counts()", "Other()")
    )
    other = ["--model", f"{tmp_path / 'other.py'}:build"]
    code, _, err = _ricl(capsys, *base, *other)
    assert code == 1 and err.count("\n") == 1
    assert err == (
        f"ricl record: error: cannot record Other into {str(path)!r}: its checkpoints (up to "
        "step 30) are of Counts, and one run file holds one model; record into another folder, "
        "or drop its checkpoints with Recorder(path).start_over() (ricl record --start-over)\n"
    )
    with xr.open_dataset(path) as ds:
        assert ds["checkpoint"].values.tolist() == [20, 25, 30]  # nothing lost
    code, out, err = _ricl(capsys, *base, *other, "--start-over")
    assert code == 0, err
    with xr.open_dataset(path) as ds:
        assert ds["checkpoint"].values.tolist() == [20, 25, 30, 35]
        assert ds.attrs["recorded_model"] == "Other"

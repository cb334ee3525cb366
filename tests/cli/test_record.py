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
    argv = ["record", spec_file, "-o", tmp_path / "runs", "--checkpoints", tmp_path / "ckpt"]
    argv += ["--factory", f"{tmp_path / 'factory.py'}:build"]
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
    base = ["record", spec_file, "-o", tmp_path / "runs", "--checkpoints", tmp_path / "ckpt"]
    code, _, err = _ricl(capsys, *base, "--factory", f"{tmp_path / 'factory.py'}:missing")
    assert code != 0 and "has no function 'missing'" in err and err.count("\n") == 1
    (tmp_path / "other.py").write_text(FACTORY.replace("nn.Embedding(5, 4)", "nn.Embedding(5, 3)"))
    code, _, err = _ricl(capsys, *base, "--factory", f"{tmp_path / 'other.py'}:build")
    assert code != 0 and "does not fit the factory's model" in err and err.count("\n") == 1


def _record(setup, capsys, model, runs="runs"):
    tmp_path, spec_file, _ = setup
    argv = ["record", spec_file, "-o", tmp_path / runs, "--checkpoints", tmp_path / "ckpt"]
    return _ricl(capsys, *argv, "--factory", model)


def _one_line(code, err) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("ricl record: error: ")
    return lines[0]


BAD_MODULES = {
    "raises": FACTORY + "\n\ndef broken(run):\n    raise ValueError('no such size')\n",
    "none": FACTORY + "\n\ndef broken(run):\n    return None\n",
    "syntax": "def broken(run)\n    return 1\n",
    "import": "raise RuntimeError('needs a GPU')\n",
    "nan": FACTORY.replace("self.table(tokens.symbols)", "self.table(tokens.symbols) * torch.nan")
    + "\n\ndef broken(run):\n    return Counts()\n",
}


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("raises", "(run 'categorical-sequence_K4_T6_D2_mlp4_seed1') failed: ValueError: no "),
        ("none", "returned NoneType; allowed: a torch.nn.Module"),
        ("syntax", "failed: SyntaxError: expected ':' (bad.py, line 1)"),
        ("import", "failed: RuntimeError: needs a GPU"),
        ("nan", "the model's output holds 96 NaN or infinite value(s) of 96; allowed: finite"),
    ],
)
def test_a_factory_that_fails_is_one_line(setup, capsys, kind, words):
    # Issue 35, items 5 and 8: each was a traceback, and NaN outputs were recorded (rc 0).
    tmp_path, *_ = setup
    (tmp_path / "bad.py").write_text(BAD_MODULES[kind])
    line = _one_line(*_record(setup, capsys, f"{tmp_path / 'bad.py'}:broken")[::2])
    assert words in line
    if kind != "nan":  # a failing factory writes nothing
        assert not list((tmp_path / "runs").glob("*.nc"))
    else:  # the strategy part is kept, no checkpoint recorded
        (path,) = (tmp_path / "runs").glob("*.nc")
        assert "step 20 for " in line
        with xr.open_dataset(path) as ds:
            assert "transformer_prediction" not in ds


def test_bad_checkpoints_are_one_line_without_unsafe_advice(setup, capsys):
    # Issue 35, items 8 and 15: an overflowing step name, a non-integer logged step, a
    # corrupt file (torch advised weights_only=False) and a shape no key named.
    tmp_path, *_ = setup
    folder = next((tmp_path / "ckpt").iterdir())
    model = f"{tmp_path / 'factory.py'}:build"
    huge = folder / ("checkpoint-" + "9" * 23 + ".pt")
    huge.write_bytes(b"")
    line = _one_line(*_record(setup, capsys, model)[::2])
    assert f"step {'9' * 23} is out of range; allowed: steps from 1 to 9007199254740992" in line
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.nc"))
    huge.unlink()

    state = folder / "checkpoint-25" / "trainer_state.json"
    state.write_text('{"log_history": [{"step": "x", "loss": 1.2}]}')
    line = _one_line(*_record(setup, capsys, model)[::2])
    assert "log_history step 'x' is not a training step; allowed: integers" in line
    state.write_text('{"log_history": []}')

    corrupt = folder / "checkpoint-20.pt"
    corrupt.write_bytes(b"\x80\x02not a pickle at all" * 8)
    line = _one_line(*_record(setup, capsys, model, "runs2")[::2])
    assert f"cannot load checkpoint {str(corrupt)!r}: " in line and "weights_only" not in line

    torch.save({"table.weight": torch.zeros(5, 3)}, corrupt)
    line = _one_line(*_record(setup, capsys, model, "runs3")[::2])
    assert "does not fit the factory's model: table.weight has shape [5, 3] in the " in line
    assert "checkpoint, [5, 4] in the model" in line


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="needs /sys")
def test_an_unwritable_runs_folder_is_one_line(setup, capsys):
    # Issue 35, item 8: a PermissionError traceback. /sys stands in for a read-only folder.
    tmp_path, spec_file, _ = setup
    argv = ["record", spec_file, "-o", "/sys/ricl-test-runs"]
    argv += ["--checkpoints", tmp_path / "ckpt"]
    line = _one_line(*_ricl(capsys, *argv, "--factory", f"{tmp_path / 'factory.py'}:build")[::2])
    assert "-o '/sys/ricl-test-runs': cannot write to folder '/sys'" in line


def test_a_second_model_is_refused_in_one_line_until_the_file_starts_over(setup, capsys):
    tmp_path, spec_file, _ = setup
    base = ["record", spec_file, "-o", tmp_path / "runs", "--checkpoints", tmp_path / "ckpt"]
    code, _, err = _ricl(capsys, *base, "--factory", f"{tmp_path / 'factory.py'}:build")
    assert code == 0, err
    (path,) = (tmp_path / "runs").glob("*.nc")
    # another model's checkpoint at a later step
    torch.save({"table.weight": torch.zeros(5, 4)}, tmp_path / "ckpt" / path.stem / "step-35.pt")
    (tmp_path / "other.py").write_text(
        FACTORY.replace("class Counts", "class Other").replace("Counts()", "Other()")
    )
    other = ["--factory", f"{tmp_path / 'other.py'}:build"]
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

import pytest

from rational_icl.cli.main import main
from rational_icl.data import load_specs
from rational_icl.training.checkpoint import state_path

SPEC = """
setting = "categorical-sequence"
num_dims = 4
context_length = 6
num_tasks = [2, 4]

[model]
hidden_size = 8
position_encoding = "learned"

[training]
batch_size = 4
max_steps = 20
num_checkpoints = 1

[evaluation]
num_sequences = 2
num_loss_sequences = 10
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SPEC)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ricl train: error: ")
    return err


def test_train_writes_one_file_per_run_then_keeps_them(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", str(spec_file), "--out", str(out), "--device", "cpu"]) == 0
    assert "trained 2 run(s)" in capsys.readouterr().out
    assert len(list(out.glob("*.nc"))) == 2
    assert main(["train", str(spec_file), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished, kept") == 2 and "trained 0 run(s)" in printed


def test_a_bad_spec_value_is_one_line_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('setting = "categorical-sequence"\n[training]\nlearning_rate = -1\n')
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "training.learning_rate" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_is_one_line(spec_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert main(["train", str(spec_file), "--out", str(blocker / "out")]) == 1
    assert "cannot write to output folder" in _one_error_line(capsys)
    assert main(["train", str(spec_file), "--out", str(blocker)]) == 1
    assert "is a file, not a folder" in _one_error_line(capsys)
    assert blocker.read_text() == "keep me"


def test_a_corrupt_checkpoint_is_one_line_and_kept(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    (spec,) = load_specs(spec_file)
    path = state_path(out, spec.expand()[0], [2, 4])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a checkpoint")
    assert main(["train", str(spec_file), "--out", str(out), "--device", "cpu"]) == 1
    assert "is corrupt or unreadable" in _one_error_line(capsys)
    assert path.read_bytes() == b"half a checkpoint"


def test_an_unknown_device_is_one_line(spec_file, tmp_path, capsys):
    assert main(["train", str(spec_file), "--out", str(tmp_path), "--device", "tpu9"]) == 1
    assert "--device 'tpu9'" in _one_error_line(capsys)


def test_a_bad_thread_count_is_one_line(spec_file, tmp_path, capsys):
    assert main(["train", str(spec_file), "--out", str(tmp_path), "--threads", "0"]) == 1
    assert "--threads 0" in _one_error_line(capsys)

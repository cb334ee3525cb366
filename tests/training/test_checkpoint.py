import pytest
import torch

from rational_icl.data import spec_from_dict
from rational_icl.errors import RiclError
from rational_icl.training.checkpoint import ensemble_name, load_state, save_state, state_path


def _spec():
    return spec_from_dict({"setting": "categorical-sequence", "num_tasks": [2, 16]}).expand()[0]


def test_state_lives_in_a_hidden_folder_named_after_the_ensemble(tmp_path):
    path = state_path(tmp_path, _spec(), [2, 16])
    assert path.parent == tmp_path / ".state"
    assert path.name == "categorical-sequence_K8_T64_D2-16_mlp4_seed1_L1_H64_h1_rotary.pt"
    assert ensemble_name(_spec(), [16]) != ensemble_name(_spec(), [2, 16])


def test_state_round_trips_with_weights_only_loading(tmp_path):
    state = {
        "step": 7,
        "spec": "setting = 1",
        "model": {"w": torch.arange(3.0)},
        "data_generators": [torch.Generator().get_state()],
    }
    path = tmp_path / ".state" / "x.pt"
    save_state(state, path)
    loaded = load_state(path)
    assert loaded["step"] == 7 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]  # no temporary left over


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04broken zip"])
def test_a_corrupt_state_is_one_clear_line(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(RiclError, match=r"x.pt' is corrupt or unreadable .*--force") as err:
        load_state(path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == content  # nothing lost


def test_a_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(RiclError, match="not a ricl training state"):
        load_state(path)

"""Spec loading, validation (one-line errors) and grid expansion."""

import math
import re
import tomllib

import pytest

from rational_icl.data import PRESETS, load_specs, make_setting, spec_from_dict
from rational_icl.errors import SpecError


def test_defaults_follow_the_paper():
    spec = spec_from_dict({"setting": "categorical-sequence"})
    assert spec.model.hidden_size == 64 and spec.model.num_heads == 1
    assert spec.training.learning_rate == 5e-4 and spec.training.weight_decay == 0.0
    assert spec.training.grad_clip == 1.0 and spec.training.num_checkpoints == 100
    assert spec.effective_num_loss_sequences == 10_000
    assert spec_from_dict({"setting": "classification"}).effective_num_loss_sequences == 50_000
    regression = spec_from_dict({"setting": "linear-regression", "num_dims": 16})
    assert make_setting(regression).noise_variance == 16 / 256


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"setting": "urns"}, "spec key 'setting': value 'urns' is out of range; allowed: one of"),
        ({"setting": "classification", "colour": 1}, "spec key 'colour' is unknown"),
        (
            {"setting": "classification", "num_tasks": [4, 0]},
            "'num_tasks': value 0 is out of range",
        ),
        ({"setting": "classification", "num_dims": 1}, "'num_dims': value 1 is out of range"),
        ({"setting": "classification", "context_length": 1}, "'context_length': value 1"),
        (
            {"setting": "classification", "num_dims": "8"},
            "'num_dims': value '8' has the wrong type",
        ),
        ({"setting": "classification", "seed": True}, "'seed': value True has the wrong type"),
        ({"setting": "classification", "model": {"depth": 2}}, "'model.depth' is unknown"),
        ({"setting": "classification", "training": {"learning_rate": -1}}, "out of range"),
        ({"setting": "classification", "training": {"max_steps": [1, 2]}}, "is a list"),
        ({"setting": "classification", "model": {"num_heads": 3}}, "does not divide"),
        ({"setting": "linear-regression", "prior": [1.0]}, "categorical-sequence setting only"),
        ({"num_dims": 8}, "spec key 'setting' is missing"),
        (
            {"setting": "classification", "max_steps": 10},
            r"'max_steps' is unknown \(it belongs in the \[training\] table\)",
        ),
        (
            {"setting": "classification", "colour": 1},
            r"and the tables \[model\], \[training\], \[evaluation\]$",
        ),
        (
            {"setting": "classification", "model": {"seed": 2}},
            r"'model.seed' is unknown \(it belongs at the top level, before any table\)",
        ),
        (
            {"setting": "classification", "model": {"num_sequences": 2}},
            r"'model.num_sequences' is unknown \(it belongs in the \[evaluation\] table\)",
        ),
    ],
)
def test_invalid_specs_give_one_line(raw, message):
    with pytest.raises(SpecError, match=message) as info:
        spec_from_dict(raw)
    assert "\n" not in str(info.value)


def test_grid_expansion_and_runs():
    specs = load_specs("paper-categorical")
    (spec,) = specs
    grid = spec.expand()
    assert len(grid) == 27  # num_dims x context_length x mlp_expansion_factor
    assert {s.model.mlp_expansion_factor for s in grid} == {0.5, 4.0, 8.0}
    assert len(spec.runs()) == 27 * 11
    assert spec.runs()[0].name == "categorical-sequence_K8_T128_D4_mlp0.5_seed1"
    assert {s.num_tasks for s in grid} == {tuple(2**i for i in range(2, 13))}
    regression = load_specs("paper-regression")[0].runs()[0]
    assert regression.name == "linear-regression_K8_T16_D4_mlp0.5_L8_seed1"


def test_a_grid_over_any_model_field_gives_distinct_run_names():
    spec = spec_from_dict(
        {
            "setting": "classification",
            "num_tasks": [4],
            "model": {"hidden_size": [32, 64], "num_heads": [1, 2], "num_layers": [1, 2]},
        }
    )
    names = [run.name for run in spec.runs()]
    assert len(names) == len(set(names)) == 8
    assert "classification_K8_T64_D4_mlp4_L2_H32_nh2_seed1" in names


GPT_NEOX = {"kind": "external", "name": "gpt-neox", "description": "GPT-NeoX, 64 wide, rotary"}


def test_your_own_model_is_named_and_described_and_ours_keeps_its_names():
    spec = spec_from_dict({"setting": "categorical-sequence", "num_tasks": [16], "model": GPT_NEOX})
    assert spec.model.external and spec.model.description == "GPT-NeoX, 64 wide, rotary"
    (run,) = spec.runs()
    assert run.name == "categorical-sequence_K8_T64_D16_ext-gpt-neox_seed1"
    assert spec_from_dict(tomllib.loads(spec.to_toml())) == spec
    assert 'kind = "external"' in spec.to_toml()
    # ours: "transformer" is the default and is left out of the TOML, so the spec text (which
    # finished runs are matched by) and the file names are what they were before the key
    ours = spec_from_dict({"setting": "categorical-sequence", "model": {"kind": "transformer"}})
    assert ours == spec_from_dict({"setting": "categorical-sequence"})
    assert "kind" not in ours.to_toml()
    tiny = load_specs("tiny-categorical")[0].runs()[0]
    assert tiny.name == "categorical-sequence_K8_T64_D2_mlp4_H32_learned_seed1"


@pytest.mark.parametrize(
    "model, message",
    [
        (
            {"kind": "mine"},
            "^spec key 'model.kind': value 'mine' is out of range; allowed: transformer or "
            "external$",
        ),
        (
            {"kind": "external"},
            "^spec key 'model.name' is missing; allowed: with kind = \"external\", a short name",
        ),
        (
            {"kind": "external", "name": "gpt neox"},
            "^spec key 'model.name': value 'gpt neox' is out of range; allowed: up to 64 letters",
        ),
        (
            {"name": "gpt-neox"},
            "^spec key 'model.name' is for kind = \"external\" \\(your own model\\) only",
        ),
        (
            {"description": "mine"},
            "^spec key 'model.description' is for kind = \"external\"",
        ),
        (
            GPT_NEOX | {"hidden_size": [32, 64]},
            "^spec key 'model.hidden_size': value \\[32, 64\\] is a list; allowed: one value "
            'with kind = "external"',
        ),
    ],
)
def test_a_bad_model_kind_name_or_grid_is_one_line(model, message):
    with pytest.raises(SpecError, match=message) as info:
        spec_from_dict({"setting": "categorical-sequence", "model": model})
    assert "\n" not in str(info.value)


def test_your_own_model_skips_the_checks_of_our_transformers_sizes():
    model = GPT_NEOX | {"hidden_size": 30, "num_heads": 4}  # not ours: nothing to divide
    assert spec_from_dict({"setting": "classification", "model": model}).model.num_heads == 4


def test_presets_load_and_tiny_bundles_three_settings():
    assert [s.setting for s in load_specs("tiny")] == [
        "categorical-sequence",
        "linear-regression",
        "classification",
    ]
    for name in PRESETS:
        assert load_specs(name)
    regression = load_specs("paper-regression")[0]
    assert regression.model.num_layers == 8 and regression.training.batch_size == 128
    assert load_specs("paper-classification")[0].training.warmup_steps == 0


def test_toml_round_trip_and_files(tmp_path):
    spec = load_specs("tiny-categorical")[0]
    assert spec_from_dict(tomllib.loads(spec.to_toml())) == spec
    path = tmp_path / "mine.toml"
    path.write_text('setting = "linear-regression"\nnum_tasks = [2, 8]\n[model]\nnum_layers = 2\n')
    (loaded,) = load_specs(path)
    assert loaded.num_tasks == (2, 8) and loaded.model.num_layers == 2 and loaded.name == "mine"
    path.write_text("setting = ")
    with pytest.raises(SpecError, match="is not valid TOML"):
        load_specs(path)
    with pytest.raises(SpecError, match="neither a spec file nor a preset"):
        load_specs("tiny-cat")


def test_a_folder_given_as_spec_is_named_a_folder(tmp_path):
    with pytest.raises(SpecError, match="is a folder; give a TOML spec file or a preset name"):
        load_specs(tmp_path)
    (tmp_path / "x.toml").mkdir()
    with pytest.raises(SpecError, match="is a folder"):
        load_specs(tmp_path / "x.toml")


def test_memory_estimate_follows_its_terms():
    from rational_icl.data.spec import memory_estimate

    raw = {"setting": "categorical-sequence", "num_dims": 4, "context_length": 8}
    raw |= {"num_tasks": [2, 1000000]}
    raw |= {"model": {"num_layers": 2, "hidden_size": 16, "num_heads": 2}}
    raw |= {"training": {"batch_size": 32, "num_checkpoints": 10}}
    raw |= {"evaluation": {"num_sequences": 64, "num_loss_sequences": 100}}
    parts = memory_estimate(spec_from_dict(raw))
    width, block = 5, 2**23  # K + 1; the chunk bound (100 sequences x T x D_max exceed it)
    assert parts["num_tasks"] == 4 * ((2 + 1_000_000) * width + 3 * block)
    assert parts["context_length"] == 4 * 3 * 2 * 32 * 8 * (2 * 16 * (4 + 8) + 2 * 8)
    assert parts["num_sequences"] == 4 * 2 * 3 * 64 * 8 * width * (3 + 10)
    assert parts["hidden_size"] == 4 * 4 * 2 * (2 * 16**2 * 12 + 16 * width)


def test_a_setting_brings_its_own_keys(coin_setting):
    spec = spec_from_dict({"setting": "coin", "coin_concentration": 3, "num_tasks": [2]})
    assert spec.option("coin_concentration") == 3 and spec.options == (("coin_concentration", 3),)
    assert "coin_concentration = 3\n" in spec.to_toml()
    assert spec_from_dict(tomllib.loads(spec.to_toml())) == spec
    assert spec_from_dict({"setting": "coin"}).option("coin_concentration") == 1
    errors = [
        ({"coin_concentration": 0}, "'coin_concentration': value 0 is out of range; allowed: "),
        ({"coin_concentration": "two"}, "'coin_concentration': value 'two' has the wrong type"),
        ({"coin_concentration": [1, 2]}, "'coin_concentration': value [1, 2] is a list"),
        ({"prior": [1.0]}, "'prior' is for the categorical-sequence setting only, not 'coin'"),
        ({"colour": 1}, "'colour' is unknown; allowed keys: coin_concentration, context_length"),
    ]
    for extra, message in errors:
        with pytest.raises(SpecError, match=re.escape(message)):
            spec_from_dict({"setting": "coin", **extra})
    with pytest.raises(SpecError, match="spec key 'coin_concentration' is unknown"):
        spec_from_dict({"setting": "categorical-sequence", "coin_concentration": 3})
    # the registered settings are the allowed values of `setting`
    with pytest.raises(SpecError, match="allowed: one of categorical-sequence, .*, coin"):
        spec_from_dict({"setting": "urns"})


# Issue 24, items 3 and 12: legal-looking values that gave NaN files, hangs or tracebacks.
@pytest.mark.parametrize(
    "raw, message",
    [
        ({"prior": [math.inf, 1, 1, 1]}, "spec key 'prior': value inf is not finite"),
        ({"within_class_variance": math.inf}, "'within_class_variance': value inf is not finite"),
        ({"model": {"mlp_expansion_factor": math.inf}}, "'model.mlp_expansion_factor': value inf"),
        ({"noise_variance": math.nan}, "'noise_variance': value nan is not finite"),
        ({"seed": 2**64}, "'seed': value 18446744073709551616 is out of range; allowed: integers"),
        ({"num_tasks": [2, 2, 4]}, "'num_tasks': value(s) [2] repeated"),
        (
            {"training": {"max_steps": 3, "num_checkpoints": 10}},
            "'training.num_checkpoints': value 10 needs max_steps > 20",
        ),
    ],
)
def test_non_finite_out_of_range_and_repeated_values_are_refused(raw, message):
    setting = "linear-regression" if "noise_variance" in raw else "categorical-sequence"
    if "within_class_variance" in raw:
        setting = "classification"
    with pytest.raises(SpecError) as err:
        spec_from_dict({"setting": setting, **raw})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_largest_seed_and_one_checkpoint_of_a_short_run_are_allowed():
    spec_from_dict({"setting": "classification", "seed": 2**63 - 1})
    spec_from_dict(
        {"setting": "classification", "training": {"max_steps": 3, "num_checkpoints": 1}}
    )

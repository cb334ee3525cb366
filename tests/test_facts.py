"""The facts a predictions file states about its setting: read from its attributes, or, for
files written before they were attributes, derived from the setting's name."""

import pytest

from rational_icl.data import SETTINGS
from rational_icl.errors import RiclError
from rational_icl.facts import FACT_NAMES, SettingFacts, setting_facts

MEAN = {
    "prediction_kind": "mean",
    "distance_kind": "mse",
    "loss_kind": "squared-error",
    "alternative_generalizer": "none",
}


def test_facts_are_read_from_the_attributes_whatever_the_setting_is_called():
    facts = setting_facts({"setting": "categorical-sequence", **MEAN})
    assert facts == SettingFacts("mean", "mse", "squared-error", "none")
    assert setting_facts({"setting": "poker", **MEAN}).attributes() == MEAN
    assert FACT_NAMES == tuple(MEAN)


def test_files_before_the_facts_read_as_the_data_stage_writes_them():
    for name, cls in SETTINGS.items():
        assert setting_facts({"setting": name}) == cls.facts
        # a file with only some of the facts is read as one without any
        assert setting_facts({"setting": name, "distance_kind": "mse"}) == cls.facts


def test_neither_facts_nor_a_known_setting_is_one_clear_error():
    with pytest.raises(RiclError, match="setting 'poker' and no attribute prediction_kind"):
        setting_facts({"setting": "poker"})
    with pytest.raises(
        RiclError, match="prediction_kind 'odds' is unknown; allowed: probabilities"
    ):
        setting_facts({**MEAN, "prediction_kind": "odds"})

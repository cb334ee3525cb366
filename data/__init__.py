"""Task settings, task sets, batched seeded samplers, experiment specs and presets."""

from rational_icl.data.presets import PRESETS, load_specs, preset_specs
from rational_icl.data.seeds import generator, seed_for
from rational_icl.data.settings import (
    SETTINGS,
    STRATEGIES,
    Batch,
    CategoricalBatch,
    CategoricalSequence,
    Classification,
    ClassificationBatch,
    LinearRegression,
    RegressionBatch,
    Setting,
    SpecOption,
    TaskSet,
    TokenLayout,
    Tokens,
    make_setting,
    register,
    setting_class,
)
from rational_icl.data.spec import ExperimentSpec, Run, spec_from_dict

__all__ = [
    "PRESETS",
    "SETTINGS",
    "STRATEGIES",
    "Batch",
    "CategoricalBatch",
    "CategoricalSequence",
    "Classification",
    "ClassificationBatch",
    "ExperimentSpec",
    "LinearRegression",
    "RegressionBatch",
    "Run",
    "Setting",
    "SpecOption",
    "TaskSet",
    "TokenLayout",
    "Tokens",
    "generator",
    "load_specs",
    "make_setting",
    "preset_specs",
    "register",
    "seed_for",
    "setting_class",
    "spec_from_dict",
]

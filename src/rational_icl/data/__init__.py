"""Task settings, task sets, batched seeded samplers, experiment specs and presets."""

from rational_icl.data.presets import PRESETS, load_specs, preset_specs
from rational_icl.data.settings import (
    CategoricalBatch,
    CategoricalSequence,
    Classification,
    ClassificationBatch,
    LinearRegression,
    RegressionBatch,
    Setting,
    TaskSet,
    generator,
    make_setting,
    seed_for,
)
from rational_icl.data.spec import ExperimentSpec, Run, spec_from_dict

__all__ = [
    "PRESETS",
    "CategoricalBatch",
    "CategoricalSequence",
    "Classification",
    "ClassificationBatch",
    "ExperimentSpec",
    "LinearRegression",
    "RegressionBatch",
    "Run",
    "Setting",
    "TaskSet",
    "generator",
    "load_specs",
    "make_setting",
    "preset_specs",
    "seed_for",
    "spec_from_dict",
]

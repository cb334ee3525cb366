"""The task settings, one module each, and what every setting provides (``base``).

Importing the package imports every module in it, so each setting registers itself: a new
setting is one new module here (docs/extending.md). The three of docs/science.md come first,
in this order, which is the order error messages list them in.
"""

import importlib
import pkgutil

from rational_icl.data.settings.base import (
    SETTINGS,
    STRATEGIES,
    Batch,
    Setting,
    SpecOption,
    TaskSet,
    TokenLayout,
    Tokens,
    make_setting,
    register,
    setting_class,
)

# isort: off
from rational_icl.data.settings.categorical import CategoricalBatch, CategoricalSequence
from rational_icl.data.settings.regression import LinearRegression, RegressionBatch
from rational_icl.data.settings.classification import Classification, ClassificationBatch

# isort: on

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "SETTINGS",
    "STRATEGIES",
    "Batch",
    "CategoricalBatch",
    "CategoricalSequence",
    "Classification",
    "ClassificationBatch",
    "LinearRegression",
    "RegressionBatch",
    "Setting",
    "SpecOption",
    "TaskSet",
    "TokenLayout",
    "Tokens",
    "make_setting",
    "register",
    "setting_class",
]

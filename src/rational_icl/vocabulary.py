"""The words every stage and the command line share, each defined once: the dims a sweep
varies, and the choices a fit offers. Plain tuples and ``Literal`` types, no torch or JAX,
so that ``ricl --help`` and the CLI's argument checks load nothing heavy.
"""

from __future__ import annotations

from typing import Literal, get_args

# Dims of a sweep besides num_tasks: each model configuration is one value of each.
CONFIG_DIMS = ("mlp_expansion_factor", "context_length", "num_dims", "seed")

Observation = Literal["relative-distance", "outputs"]
Measure = Literal["barycentric", "relative-distance"]
Ablation = Literal[
    "none", "linear-likelihood", "fixed-complexity", "unit-gamma", "linear-complexity"
]
Pooling = Literal["complete", "none", "partial"]
Model = Literal["paper", "anchored-offsets", "anchored-offsets-drift"]
Method = Literal["nuts", "map", "svi"]
MassMatrix = Literal["adapted", "laplace"]

OBSERVATIONS: tuple[str, ...] = get_args(Observation)
MEASURES: tuple[str, ...] = get_args(Measure)
ABLATIONS: tuple[str, ...] = get_args(Ablation)
POOLINGS: tuple[str, ...] = get_args(Pooling)
MODELS: tuple[str, ...] = get_args(Model)
METHODS: tuple[str, ...] = get_args(Method)
MASS_MATRICES: tuple[str, ...] = get_args(MassMatrix)

# The model every door (FitSettings, `ricl fit`, `ricl run`) fits unless told otherwise
# (docs/science.md, "Which model"); `ricl run` fits the paper's form beside it.
DEFAULT_MODEL = "anchored-offsets-drift"
# the outputs observation model reads the predictions themselves: no drift of weights there
OUTPUTS_DEFAULT_MODEL = "anchored-offsets"
PAPER_MODEL = "paper"


def default_model(observation: str) -> str:
    """The model fitted when none is named: the drift is of observed weights."""
    return OUTPUTS_DEFAULT_MODEL if observation == "outputs" else DEFAULT_MODEL

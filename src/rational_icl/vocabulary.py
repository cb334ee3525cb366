"""The words every stage and the command line share, each defined once: the dims a sweep
varies, and the choices a fit offers. Plain tuples, ``Literal`` types and one table of the
model family, no torch or JAX, so that ``ricl --help`` and the CLI's argument checks load
nothing heavy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

# Dims of a sweep besides num_tasks: each model configuration is one value of each.
CONFIG_DIMS = ("mlp_expansion_factor", "context_length", "num_dims", "seed")
# The cells of one run's behaviour, and the sample dims of a fit's draws (ArviZ's names).
GRID = ("num_tasks", "checkpoint")
SAMPLE_DIMS = ("chain", "draw")

# The strategies every setting defines, in the order the files store them, and the two
# whose mixture the weight on memorizing measures.
STRATEGIES = ("memorizing", "generalizing", "constant")
WEIGHT_STRATEGIES = ("memorizing", "generalizing")
# The rational law's parameters, named as in the paper.
LAW_PARAMETERS = ("alpha", "beta", "gamma")

Observation = Literal["relative-distance", "outputs"]
Measure = Literal["barycentric", "relative-distance"]
Ablation = Literal[
    "none", "linear-likelihood", "fixed-complexity", "unit-gamma", "linear-complexity"
]
Pooling = Literal["complete", "none", "partial"]
Method = Literal["nuts", "map", "svi"]
MassMatrix = Literal["adapted", "laplace"]

OBSERVATIONS: tuple[str, ...] = get_args(Observation)
MEASURES: tuple[str, ...] = get_args(Measure)
ABLATIONS: tuple[str, ...] = get_args(Ablation)
POOLINGS: tuple[str, ...] = get_args(Pooling)
METHODS: tuple[str, ...] = get_args(Method)
MASS_MATRICES: tuple[str, ...] = get_args(MassMatrix)

# The model every door (FitSettings, `ricl fit`, `ricl run`) fits unless told otherwise
# (docs/science.md, "Which model"); `ricl run` fits the paper's form beside it.
DEFAULT_MODEL = "anchored-offsets-drift"
# the outputs observation model reads the predictions themselves: no drift of weights there
OUTPUTS_DEFAULT_MODEL = "anchored-offsets"
PAPER_MODEL = "paper"
# The held-out designs `ricl run` fits besides its main one, so that its report can decide
# the verdict on alpha (fits/verdict.py): the forecast along training and the unseen num_tasks.
VERDICT_DESIGNS = ("forecast:0.3", "num-tasks")
# The option that starts `ricl run` and `ricl train` past their memory check (cli/checks.py);
# the pipeline repeats it in the commands it announces.
IGNORE_MEMORY = "--ignore-memory-check"


@dataclass(frozen=True)
class ModelForm:
    """What a model of the family adds to the paper's law (docs/science.md, "Which model").

    Attributes
    ----------
    anchored : bool
        Samples ``evidence_scale``, the evidence at the geometric-mean checkpoint, in place
        of gamma (which it derives).
    offsets : bool
        Adds each run's shift of the log odds (``offset_scale``, ``run_log_prior_odds``).
    drift : bool
        Lets each run's observed weight drift from the law along training (``drift_scale``,
        ``drift_length``): the relative-distance observation only.
    smooth : bool
        With ``offsets``: the offsets of one configuration vary smoothly in log num_tasks, a
        random walk from the smallest num_tasks (``smooth_scale``,
        ``run_offset_innovation``), instead of independently per run: a num_tasks without
        fitted cells borrows its neighbours' offsets.
    """

    anchored: bool = False
    offsets: bool = False
    drift: bool = False
    smooth: bool = False

    def __post_init__(self):
        if self.smooth and not self.offsets:
            raise ValueError("smooth offsets need offsets")


# The model family: every ``--model`` value and what it adds to the law. A model's features
# are read here (``form_of``), never from its name.
MODEL_FAMILY: dict[str, ModelForm] = {
    "paper": ModelForm(),  # the authors' alpha, beta, gamma: keep it reproducible
    "anchored-offsets": ModelForm(anchored=True, offsets=True),
    "anchored-offsets-drift": ModelForm(anchored=True, offsets=True, drift=True),
    "anchored-smooth-offsets": ModelForm(anchored=True, offsets=True, smooth=True),
    "anchored-smooth-offsets-drift": ModelForm(
        anchored=True, offsets=True, drift=True, smooth=True
    ),
}
MODELS: tuple[str, ...] = tuple(MODEL_FAMILY)
# Models earlier versions offered (their measured results: docs/science.md, "Which model").
REMOVED_MODELS = ("transition", "anchored", "offsets", "transition-offsets")


def default_model(observation: str) -> str:
    """The model fitted when none is named: the drift is of observed weights."""
    return OUTPUTS_DEFAULT_MODEL if observation == "outputs" else DEFAULT_MODEL


def model_refusal(
    model: str, option: str = "model", observation: str = "relative-distance"
) -> str | None:
    """The one line that refuses ``model``, or None when it is one of ``MODELS``.

    Parameters
    ----------
    model : str
        The value given.
    option : str
        How the caller spells the setting (``"--model"`` on the command line).
    observation : str
        The fit's observation model, whose default replaces a removed model.
    """
    if model in MODEL_FAMILY:
        return None
    allowed = ", ".join(MODELS)
    if model in REMOVED_MODELS:
        return (
            f"{option} {model!r} was removed; the default {default_model(observation)} "
            f"replaces it (leave out {option}), or choose one of {allowed}"
        )
    return f"{option} must be one of {allowed}; got {model!r}"


def form_of(model: str) -> ModelForm:
    """What ``model`` adds to the law; ValueError (``model_refusal``'s line) for a name
    outside the family."""
    if model not in MODEL_FAMILY:
        raise ValueError(model_refusal(model))
    return MODEL_FAMILY[model]


def without_drift(model: str) -> str:
    """The family's model that ``model`` extends with the drift (itself when it has none):
    a drift fit starts from its MAP."""
    lawful = dataclasses.replace(form_of(model), drift=False)
    return next(name for name, form in MODEL_FAMILY.items() if form == lawful)

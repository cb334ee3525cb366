"""What every task setting provides, and the registry of settings by name.

A task setting (docs/science.md) is one subclass of :class:`Setting` in its own module of
this package. It holds everything that differs between settings: the sampler of its tasks
and sequences and its batch type, its evaluation splits, its spec keys and defaults, the
three strategies' closed forms and the source text K_Q measures, its per-prediction loss,
how its sequences enter and leave the transformer, the input variables of its predictions
file and the facts later stages read off that file. The other stages ask the setting object
and never compare setting names (docs/extending.md, "A new task setting").

A setting registers itself by name with :func:`register` when its module is imported, and
the package imports every module in it: a new module needs no other file changed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

import numpy as np
import torch

from rational_icl.data.seeds import generator
from rational_icl.facts import SettingFacts
from rational_icl.vocabulary import STRATEGIES

# The strategies every setting has; a setting may add more after them (``Setting.strategies``).


@dataclass
class TaskSet:
    """D tasks: ``tasks`` (D, ...) parameters, and ``labels`` (D,) where a task has one
    (e.g. categorical (D, K) probabilities; classification (D, d) item means with labels)."""

    tasks: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tasks.shape[0]


class Batch:
    """Base of a setting's batch dataclass: tensor fields moved together.

    Every batch has ``task_index`` (B,), the task of each sequence, and a ``target``
    property (B, P): what the P predictions of a sequence predict.
    """

    def to(self, device):
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class TokenLayout:
    """How a setting's sequences enter and leave the transformer (modeling/model.py).

    A token is ``features`` numbers read in by a linear map, or one of ``symbols`` symbols
    read in by an embedding, or both (the embedding is added to the linear read-in). The
    tokens selected by ``predicted_tokens`` out of the ``sequence_length`` each give one
    prediction of ``num_outcomes`` numbers: ``num_predictions`` of them. ``variant`` is the
    spec's ``model.regression_tokens`` for settings with more than one layout.
    """

    features: int
    symbols: int
    sequence_length: int
    num_predictions: int
    num_outcomes: int
    predicted_tokens: slice = slice(None)
    variant: str = "interleaved"


class Tokens(NamedTuple):
    """A batch as the transformer reads it: (E, B, L, features) floats, (E, B, L) symbols."""

    features: torch.Tensor | None
    symbols: torch.Tensor | None


@dataclass(frozen=True)
class SpecOption:
    """A top-level spec key of one setting, beyond the fields of ExperimentSpec.

    ``kind`` is int, float or str; ``check`` says whether a value is allowed and
    ``allowed`` says which are, in words. Options are scalars (no grid).
    """

    name: str
    default: object
    kind: type
    check: Callable[[object], bool]
    allowed: str


class Setting(ABC):
    """One task setting: its sampler, strategies, loss, transformer read-in and file.

    A subclass sets the class attributes below, implements the abstract methods and is
    decorated with :func:`register`. Instances hold one scalar spec's setting (one
    ``num_dims``, one ``context_length``) and its prior's parameters.

    Attributes
    ----------
    name : str
        The spec's ``setting`` value and the predictions file's ``setting`` attribute.
    facts : SettingFacts
        What later stages read off its files (written as file attributes).
    splits : tuple of str
        Its evaluation splits, ``id`` first (:meth:`evaluation_batches` draws them).
    num_loss_sequences : int
        Default Monte Carlo sequences for L_Q (spec key ``evaluation.num_loss_sequences``).
    options : tuple of SpecOption
        Top-level spec keys of its own, beyond the fields of ExperimentSpec.
    exclusive_keys : tuple of str
        ExperimentSpec fields no other setting may set (e.g. ``prior``).
    token_layouts : tuple of str
        The ``model.regression_tokens`` values it accepts (:meth:`token_layout` reads
        them); the default, ``("interleaved",)``, is a setting with one layout.
    input_dims : dict of str to tuple of str
        Its input variables in the predictions file and their dims; each is the batch
        field of the same name, stacked over the splits.
    task_dim : str
        The dimension of one task's parameters in ``training_tasks`` and ``sequence_task``.
    writes_sequence_task : bool
        Whether the file holds ``sequence_task``, the true task of each sequence.
    strategies : tuple of str
        Its strategies, in the order of the files' ``strategy`` dim: STRATEGIES, then any of
        its own (each a method of the same name, e.g. classification's ``contextual``).
    table_strategies : tuple of str
        The strategies that store the D-task table (K_Q counts it; L_Q's Monte Carlo chunks
        hold a (sequence, position, task) array for them).
    strategy_sources : dict of str to tuple of functions
        The functions each strategy runs (helpers included): the source text K_Q measures.
    num_dims, context_length, num_outcomes : int
        Per instance: K or d, T, and O (the numbers of one prediction).
    """

    name: ClassVar[str]
    facts: ClassVar[SettingFacts]
    splits: ClassVar[tuple[str, ...]] = ("id", "ood")
    num_loss_sequences: ClassVar[int] = 10_000
    options: ClassVar[tuple[SpecOption, ...]] = ()
    exclusive_keys: ClassVar[tuple[str, ...]] = ()
    token_layouts: ClassVar[tuple[str, ...]] = ("interleaved",)
    input_dims: ClassVar[dict[str, tuple[str, ...]]]
    task_dim: ClassVar[str] = "feature"
    writes_sequence_task: ClassVar[bool] = True
    strategies: ClassVar[tuple[str, ...]] = STRATEGIES
    table_strategies: ClassVar[tuple[str, ...]] = ("memorizing",)
    strategy_sources: ClassVar[dict[str, tuple[Callable, ...]]]

    num_dims: int
    context_length: int
    num_outcomes: int

    # ------------------------------------------------------------------------ spec

    @classmethod
    @abstractmethod
    def from_spec(cls, spec) -> Setting:
        """The setting of a scalar ExperimentSpec (one num_dims, one context_length)."""

    @classmethod
    def check_spec(cls, spec) -> None:
        """Raise SpecError (one line) where a scalar ExperimentSpec does not fit this setting."""
        return  # every spec fits, unless a setting says otherwise

    # ------------------------------------------------------------------------ sampling

    @abstractmethod
    def sample_tasks(self, num_tasks: int, gen: torch.Generator) -> TaskSet:
        """``num_tasks`` tasks drawn from the setting's prior (float64, CPU)."""

    @abstractmethod
    def sample_batch(
        self, tasks: TaskSet, batch_size: int, gen: torch.Generator, device="cpu", task_index=None
    ) -> Batch:
        """``batch_size`` sequences from ``tasks`` (of ``task_index`` (B,) where given)."""

    def evaluation_batches(
        self, tasks: TaskSet, num_sequences: int, seed: int, num_tasks: int
    ) -> dict[str, tuple[Batch, TaskSet]]:
        """The fixed evaluation sequences of every split, and the tasks they come from.

        ``id`` draws from the D training tasks; the other splits are :meth:`held_out_batches`.
        """
        id_batch = self.sample_batch(tasks, num_sequences, generator(seed, "id", num_tasks))
        return {
            "id": (id_batch, tasks),
            **self.held_out_batches(tasks, num_sequences, seed, num_tasks),
        }

    def held_out_batches(
        self, tasks: TaskSet, num_sequences: int, seed: int, num_tasks: int
    ) -> dict[str, tuple[Batch, TaskSet]]:
        """The splits after ``id``. Here ``ood``: one fresh task of the prior per sequence,
        the same for every D of a spec."""
        gen = generator(seed, "ood")
        fresh = self.sample_tasks(num_sequences, gen)
        index = torch.arange(num_sequences)
        return {"ood": (self.sample_batch(fresh, num_sequences, gen, task_index=index), fresh)}

    # ------------------------------------------------------------------------ strategies

    @abstractmethod
    def memorizing(self, batch: Batch, tasks: TaskSet) -> torch.Tensor:
        """Prior uniform over the D training tasks: the posterior predictive, (B, P, O)."""

    @abstractmethod
    def generalizing(self, batch: Batch, tasks: TaskSet) -> torch.Tensor:
        """Prior = the setting's true continuous prior: the posterior predictive, (B, P, O)."""

    @abstractmethod
    def constant(self, batch: Batch, tasks: TaskSet) -> torch.Tensor:
        """The prior predictive, ignoring the context, (B, P, O)."""

    @abstractmethod
    def prior_parameters(self) -> np.ndarray:
        """The numbers the generalizing and constant strategies store (for K_Q)."""

    def strategy_prediction(self, batch: Batch, tasks: TaskSet, strategy: str) -> torch.Tensor:
        """One strategy's prediction on a batch: (B, P, O), O = 1 (the mean of y) for a
        setting that predicts means. In the dtype of the task parameters (float64 for exact
        references)."""
        if strategy not in self.strategies:
            allowed = ", ".join(self.strategies)
            raise ValueError(f"unknown strategy {strategy!r}; allowed: {allowed}")
        return getattr(self, strategy)(batch, tasks)

    def strategy_predictions(self, batch: Batch, tasks: TaskSet) -> torch.Tensor:
        """Every strategy's prediction stacked in ``strategies`` order: (Q, B, P, O)."""
        return torch.stack([self.strategy_prediction(batch, tasks, q) for q in self.strategies])

    # ------------------------------------------------------------------------ loss

    @abstractmethod
    def prediction_loss(self, prediction: torch.Tensor, batch: Batch, tasks: TaskSet):
        """Loss of each prediction (B, P, O) against the batch it was made on: (B, P), nats.

        ``tasks`` holds the task of each sequence's ``task_index`` (or is None where the
        loss does not need it); the loss is the one ``facts.loss_kind`` names.
        """

    # ------------------------------------------------------------------------ transformer

    @classmethod
    @abstractmethod
    def token_layout(cls, num_dims: int, context_length: int, variant: str) -> TokenLayout:
        """The transformer's read-in and read-out sizes (``variant``: one of token_layouts)."""

    @classmethod
    @abstractmethod
    def tokens(cls, batch: Batch, layout: TokenLayout, dtype: torch.dtype) -> Tokens:
        """A batch stacked over E members (every field with a leading E) as tokens; float
        features in ``dtype``."""

    # ------------------------------------------------------------------------ file

    @abstractmethod
    def own_attributes(self) -> dict:
        """The file attributes of its prior's parameters (no None, no dicts)."""

    def file_attributes(self) -> dict:
        """Its global attributes of a predictions file: own parameters, then the facts."""
        return {**self.own_attributes(), **self.facts.attributes()}

    @classmethod
    @abstractmethod
    def batch_from_file(cls, variables: Mapping[str, torch.Tensor]) -> Batch:
        """One split's batch, rebuilt from its input variables and ``target`` in the file
        (integers as int64); ``task_index`` is the sequence number."""


def task_table(batch: Batch, tasks: TaskSet) -> torch.Tensor:
    """The task parameters (D, ...) on the batch's device, in their own dtype."""
    return tasks.tasks.to(batch.task_index.device)


# ---------------------------------------------------------------------------- registry

# Every registered setting by name, in the order of registration: the allowed values of
# the spec's ``setting`` key.
SETTINGS: dict[str, type[Setting]] = {}


def register(cls: type[Setting]) -> type[Setting]:
    """Class decorator: make ``cls`` the setting of its ``name``."""
    if cls.name in SETTINGS and SETTINGS[cls.name] is not cls:
        raise ValueError(f"setting {cls.name!r} is registered twice")
    if cls.strategies[: len(STRATEGIES)] != STRATEGIES:
        raise ValueError(f"setting {cls.name!r}: strategies must start with {STRATEGIES}")
    if set(cls.strategy_sources) != set(cls.strategies):
        raise ValueError(f"setting {cls.name!r}: strategy_sources must name {cls.strategies}")
    SETTINGS[cls.name] = cls
    return cls


def setting_class(name: str) -> type[Setting]:
    """The registered setting of a name (ValueError naming the allowed ones)."""
    if name not in SETTINGS:
        raise ValueError(f"setting {name!r} is unknown; allowed: {', '.join(SETTINGS)}")
    return SETTINGS[name]


def make_setting(spec) -> Setting:
    """The task setting of a scalar ExperimentSpec (one num_dims, one context_length)."""
    return setting_class(spec.setting).from_spec(spec)

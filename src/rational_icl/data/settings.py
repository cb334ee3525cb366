"""The three task settings of docs/science.md behind one small interface.

Every setting draws task sets (seeded, float64 on the CPU) and samples batches of sequences
from a task set as torch tensors on a given device, in one batched call: no Python loop over
sequences or positions. Randomness comes only from the ``torch.Generator`` passed in, so the
same seed gives the same data on every run and every device.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields

import torch

from rational_icl.data.spec import ExperimentSpec


def seed_for(seed: int, *names: object) -> int:
    """A 63-bit seed for one named random stream of an experiment (e.g. 'tasks', D)."""
    text = "/".join(str(n) for n in (seed, *names))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU generator for one named stream; see seed_for."""
    return torch.Generator().manual_seed(seed_for(seed, *names))


@dataclass
class TaskSet:
    """D tasks: categorical (D, K) probabilities; regression (D, d) weights;
    classification (D, d) item means with (D,) labels."""

    tasks: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tasks.shape[0]


class _Batch:
    """Tensor fields moved together; ``task_index`` names each sequence's task."""

    def to(self, device):
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class CategoricalBatch(_Batch):
    tokens: torch.Tensor  # (B, T) int64 symbols
    task_index: torch.Tensor  # (B,)

    @property
    def target(self) -> torch.Tensor:  # (B, P=T)
        return self.tokens


@dataclass
class RegressionBatch(_Batch):
    x: torch.Tensor  # (B, T, d)
    y: torch.Tensor  # (B, T)
    task_index: torch.Tensor  # (B,)

    @property
    def target(self) -> torch.Tensor:  # (B, P=T)
        return self.y


@dataclass
class ClassificationBatch(_Batch):
    context_items: torch.Tensor  # (B, C, d), C = T - 1
    context_labels: torch.Tensor  # (B, C) int64
    query_item: torch.Tensor  # (B, d)
    query_label: torch.Tensor  # (B,) int64
    context_index: torch.Tensor  # (B, C) task of each context pair
    task_index: torch.Tensor  # (B,) the query's task

    @property
    def target(self) -> torch.Tensor:  # (B, P=1)
        return self.query_label[:, None]


class CategoricalSequence:
    """Balls and urns: a task is a probability vector over K symbols, theta ~ Dirichlet."""

    name = "categorical-sequence"
    splits = ("id", "ood")

    def __init__(self, num_dims: int, context_length: int, prior: tuple[float, ...] | None = None):
        self.num_dims, self.context_length = num_dims, context_length
        concentration = prior if prior is not None else (1.0,)
        if len(concentration) == 1:
            concentration = concentration * num_dims
        self.concentration = torch.tensor(concentration, dtype=torch.float64)  # (K,)
        self.num_outcomes = num_dims

    def sample_tasks(self, num_tasks: int, gen: torch.Generator) -> TaskSet:
        # Dirichlet as normalised Gamma draws; torch's own Gamma sampler takes no
        # generator, so draw them here to keep every stream seeded.
        gamma = _gamma(self.concentration.expand(num_tasks, -1), gen)  # (D, K)
        probs = gamma / gamma.sum(-1, keepdim=True)
        return TaskSet(probs.clamp_min(torch.finfo(torch.float64).tiny))

    def sample_batch(
        self, tasks: TaskSet, batch_size: int, gen: torch.Generator, device="cpu", task_index=None
    ) -> CategoricalBatch:
        if task_index is None:
            task_index = torch.randint(len(tasks), (batch_size,), generator=gen)  # (B,)
        cdf = tasks.tasks[task_index].cumsum(-1)  # (B, K)
        uniform = torch.rand(batch_size, self.context_length, generator=gen, dtype=cdf.dtype)
        tokens = torch.searchsorted(cdf, uniform * cdf[:, -1:]).clamp_max(self.num_dims - 1)
        return CategoricalBatch(tokens, task_index).to(device)


class LinearRegression:
    """A task is a weight vector w ~ N(0, I_d); y_t = x_t . w + noise."""

    name = "linear-regression"
    splits = ("id", "ood")
    num_outcomes = 1

    def __init__(self, num_dims: int, context_length: int, noise_variance: float):
        self.num_dims, self.context_length = num_dims, context_length
        self.noise_variance = noise_variance

    def sample_tasks(self, num_tasks: int, gen: torch.Generator) -> TaskSet:
        return TaskSet(torch.randn(num_tasks, self.num_dims, generator=gen, dtype=torch.float64))

    def sample_batch(
        self, tasks: TaskSet, batch_size: int, gen: torch.Generator, device="cpu", task_index=None
    ) -> RegressionBatch:
        if task_index is None:
            task_index = torch.randint(len(tasks), (batch_size,), generator=gen)  # (B,)
        shape, dtype = (batch_size, self.context_length), tasks.tasks.dtype
        x = torch.randn(*shape, self.num_dims, generator=gen, dtype=dtype)  # (B, T, d)
        noise = torch.randn(*shape, generator=gen, dtype=dtype)  # (B, T)
        y = torch.einsum("btd,bd->bt", x, tasks.tasks[task_index])
        y = y + math.sqrt(self.noise_variance) * noise
        return RegressionBatch(x, y, task_index).to(device)


class Classification:
    """A task is an item-label pair: item mean mu ~ N(0, I_d/d), label uniform in {0, 1}.

    A sequence has C = T - 1 context pairs drawn with replacement from the task pool and a
    query whose task is one of the context's (or, in-weights, one kept out of the context).
    Every item occurrence is noised: x = (mu + sqrt(eps) eta) / sqrt(1 + eps), eta ~ N(0, I_d/d).
    """

    name = "classification"
    splits = ("id", "ood", "iwl")
    num_outcomes = 2

    def __init__(self, num_dims: int, context_length: int, within_class_variance: float):
        self.num_dims, self.context_length = num_dims, context_length
        self.within_class_variance = within_class_variance

    def sample_tasks(self, num_tasks: int, gen: torch.Generator) -> TaskSet:
        items = torch.randn(num_tasks, self.num_dims, generator=gen, dtype=torch.float64)
        labels = torch.randint(2, (num_tasks,), generator=gen)
        return TaskSet(items / math.sqrt(self.num_dims), labels)

    def sample_batch(
        self,
        tasks: TaskSet,
        batch_size: int,
        gen: torch.Generator,
        device="cpu",
        task_index=None,
        in_weights: bool = False,
    ) -> ClassificationBatch:
        num_context, num_tasks = self.context_length - 1, len(tasks)
        if in_weights and num_tasks < 2:
            raise ValueError("the in-weights mode needs at least 2 tasks")
        if in_weights:
            query_index = torch.randint(num_tasks, (batch_size,), generator=gen)  # (B,)
            # draw from the other D - 1 tasks, then skip over the query's index
            others = torch.randint(num_tasks - 1, (batch_size, num_context), generator=gen)
            context_index = others + (others >= query_index[:, None]).long()  # (B, C)
        else:
            context_index = torch.randint(num_tasks, (batch_size, num_context), generator=gen)
            position = torch.randint(num_context, (batch_size, 1), generator=gen)
            query_index = context_index.gather(1, position)[:, 0]  # (B,)
        all_index = torch.cat([context_index, query_index[:, None]], 1)  # (B, C + 1)
        items = self._noisy(tasks.tasks[all_index], gen)  # (B, C + 1, d)
        labels = tasks.labels[all_index]  # (B, C + 1)
        batch = ClassificationBatch(
            items[:, :-1], labels[:, :-1], items[:, -1], labels[:, -1], context_index, query_index
        )
        return batch.to(device)

    def _noisy(self, means: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        eps = self.within_class_variance
        eta = torch.randn(means.shape, generator=gen, dtype=means.dtype) / math.sqrt(self.num_dims)
        return (means + math.sqrt(eps) * eta) / math.sqrt(1 + eps)


Setting = CategoricalSequence | LinearRegression | Classification


def make_setting(spec: ExperimentSpec) -> Setting:
    """The task setting of a scalar spec (one num_dims, one context_length)."""
    if spec.setting == "categorical-sequence":
        return CategoricalSequence(spec.num_dims, spec.context_length, spec.prior)
    if spec.setting == "linear-regression":
        return LinearRegression(spec.num_dims, spec.context_length, spec.effective_noise_variance)
    return Classification(spec.num_dims, spec.context_length, spec.within_class_variance)


def _gamma(concentration: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gamma(concentration, 1) draws from an explicit generator (Marsaglia-Tsang, vectorised)."""
    # For a < 1 draw Gamma(a + 1) and scale by U^(1/a).
    a = concentration
    boost = a < 1
    d = torch.where(boost, a + 1, a) - 1 / 3
    c = 1 / torch.sqrt(9 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    # Rejection sampling accepts > 95% per round; this loop runs a handful of times, over
    # all entries at once.
    while todo.any():
        z = torch.randn(a.shape, generator=gen, dtype=a.dtype)
        u = torch.rand(a.shape, generator=gen, dtype=a.dtype)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        accept = todo & ok
        out[accept] = (d * v)[accept]
        todo &= ~ok
    if boost.any():
        u = torch.rand(a.shape, generator=gen, dtype=a.dtype)
        out = torch.where(boost, out * u ** (1 / a), out)
    return out

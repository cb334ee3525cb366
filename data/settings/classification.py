"""In-context classification (docs/science.md): a task is an item-label pair, item mean
mu ~ N(0, I_d/d), label uniform in {0, 1}.

A sequence has C = T - 1 context pairs drawn with replacement from the task pool and a query
whose task is one of the context's (or, in-weights, one kept out of the context). Every item
occurrence is noised: x = (mu + sqrt(eps) eta) / sqrt(1 + eps), eta ~ N(0, I_d/d).

The transformer reads one token per (item, label) pair, the item through a linear read-in
plus an embedding of the label, the query last with its label masked (L = T); it predicts
the query's label (P = 1, O = 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rational_icl.data.seeds import generator
from rational_icl.data.settings.base import (
    STRATEGIES,
    Batch,
    Setting,
    TaskSet,
    TokenLayout,
    Tokens,
    register,
    task_table,
)
from rational_icl.data.settings.closed_forms import _one_hot, _posterior_mean
from rational_icl.errors import SpecError
from rational_icl.facts import SettingFacts

# Sequences x context x tasks elements of one chunk of the contextual strategy's evaluation.
_CONTEXTUAL_CHUNK_ELEMENTS = 2**22


@dataclass
class ClassificationBatch(Batch):
    context_items: torch.Tensor  # (B, C, d), C = T - 1
    context_labels: torch.Tensor  # (B, C) int64
    query_item: torch.Tensor  # (B, d)
    query_label: torch.Tensor  # (B,) int64
    context_index: torch.Tensor  # (B, C) task of each context pair
    task_index: torch.Tensor  # (B,) the query's task

    @property
    def target(self) -> torch.Tensor:  # (B, P=1)
        return self.query_label[:, None]


# ---------------------------------------------------------------------------- closed forms


def classification_memorizing(
    query_item: torch.Tensor,
    task_items: torch.Tensor,
    task_labels: torch.Tensor,
    within_class_variance: float,
) -> torch.Tensor:
    """Which stored item is the query a noisy copy of? Its label, posterior-weighted.

    The query's task is a priori uniform over the D stored pairs (the context is not used: the
    memorizing strategy reads the answer from its weights). x = (mu + sqrt(eps) eta)/sqrt(1+eps)
    gives x | mu ~ N(mu / sqrt(1+eps), eps / ((1+eps) d) I).
    query_item: (B, d); task_items: (D, d); task_labels: (D,). Returns (B, 1, 2).
    """
    eps, num_dims = within_class_variance, query_item.shape[-1]
    means = task_items / math.sqrt(1 + eps)  # (D, d)
    variance = eps / ((1 + eps) * num_dims)
    log_likelihood = -_squared_distance(query_item, means) / (2 * variance)  # (B, D)
    labels = _one_hot(task_labels, 2, log_likelihood.dtype)  # (D, 2)
    return _posterior_mean(log_likelihood, labels)[:, None, :]


def classification_contextual(
    context_items: torch.Tensor,
    context_labels: torch.Tensor,
    query_item: torch.Tensor,
    task_items: torch.Tensor,
    task_labels: torch.Tensor,
    within_class_variance: float,
) -> torch.Tensor:
    """Memorizing conditioned on the context: the Bayes predictor of the training sequences.

    The prior is uniform over the D stored pairs, as for memorizing, but the query is a noisy
    copy of one context position c (uniform a priori) whose pair k is shared: the posterior
    of c is proportional to sum_k N(x_c; m_k) [l_k = y_c] N(x_q; m_k) / sum_k N(x_c; m_k)
    [l_k = y_c], with m_k = mu_k / sqrt(1+eps) and variance eps / ((1+eps) d) I, and the query's
    label is y_c. The Gaussians' constants cancel. A context pair no stored pair explains
    gets weight 0; where none is explained the prediction is uniform.
    context_items: (B, C, d); context_labels: (B, C); query_item: (B, d); task_items: (D, d);
    task_labels: (D,). Returns (B, 1, 2).
    """
    eps, num_dims = within_class_variance, query_item.shape[-1]
    means = task_items / math.sqrt(1 + eps)  # (D, d)
    variance = eps / ((1 + eps) * num_dims)
    log_query = -_squared_distance(query_item, means) / (2 * variance)  # (B, D)
    log_context = -_squared_distance(context_items, means) / (2 * variance)  # (B, C, D)
    same_label = context_labels[:, :, None] == task_labels  # (B, C, D)
    log_context = log_context.masked_fill(~same_label, -math.inf)
    evidence = torch.logsumexp(log_context, -1)  # (B, C)
    joint = torch.logsumexp(log_context + log_query[:, None, :], -1)  # (B, C)
    explained = evidence > -math.inf  # (B, C)
    log_weight = torch.where(explained, joint - evidence, -math.inf)  # (B, C)
    log_weight = torch.where(explained.any(-1, keepdim=True), log_weight, 0.0)
    posterior = torch.softmax(log_weight, dim=-1)  # (B, C)
    labels = _one_hot(context_labels, 2, posterior.dtype)  # (B, C, 2)
    prediction = torch.einsum("bc,bco->bo", posterior, labels)  # (B, 2)
    prediction = torch.where(explained.any(-1, keepdim=True), prediction, 0.5)
    return prediction[:, None, :]


def classification_generalizing(
    context_items: torch.Tensor,
    context_labels: torch.Tensor,
    query_item: torch.Tensor,
    within_class_variance: float,
) -> torch.Tensor:
    """Copy the label of the context item the query most likely is a noisy copy of.

    Under the continuous prior mu ~ N(0, I/d), two noisy copies of one item are jointly
    Gaussian with correlation rho = 1 / (1 + eps), so x_q | x_j ~ N(rho x_j, (1 - rho^2)/d I).
    The query's item is a priori uniform over the context positions.
    context_items: (B, C, d); context_labels: (B, C); query_item: (B, d). Returns (B, 1, 2).
    """
    rho, num_dims = 1 / (1 + within_class_variance), query_item.shape[-1]
    variance = (1 - rho**2) / num_dims
    distance = ((query_item[:, None, :] - rho * context_items) ** 2).sum(-1)  # (B, C)
    posterior = torch.softmax(-distance / (2 * variance), dim=-1)  # (B, C)
    labels = _one_hot(context_labels, 2, posterior.dtype)  # (B, C, 2)
    return torch.einsum("bc,bco->bo", posterior, labels)[:, None, :]


def classification_constant(query_item: torch.Tensor) -> torch.Tensor:
    """Prior predictive: labels are uniform. Returns (B, 1, 2)."""
    return torch.full(
        (query_item.shape[0], 1, 2), 0.5, dtype=query_item.dtype, device=query_item.device
    )


def _squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 for (..., d) and (D, d) -> (..., D), through one matmul."""
    return (a**2).sum(-1, keepdim=True) - 2 * a @ b.T + (b**2).sum(-1)


# ---------------------------------------------------------------------------- setting


@register
class Classification(Setting):
    """A task is an item-label pair: item mean mu ~ N(0, I_d/d), label uniform in {0, 1}.

    A sequence has C = T - 1 context pairs drawn with replacement from the task pool and a
    query whose task is one of the context's (or, in-weights, one kept out of the context).
    Every item occurrence is noised: x = (mu + sqrt(eps) eta) / sqrt(1 + eps), eta ~ N(0, I_d/d).
    """

    name = "classification"
    facts = SettingFacts(
        prediction_kind="probabilities",
        distance_kind="kl",
        loss_kind="cross-entropy",
        alternative_generalizer="tempered",
    )
    splits = ("id", "ood", "iwl")
    # one query per sequence: the loss's Monte Carlo needs more sequences
    num_loss_sequences = 50_000
    input_dims = {
        "context_items": ("split", "sequence", "context", "feature"),
        "context_labels": ("split", "sequence", "context"),
        "query_item": ("split", "sequence", "feature"),
    }
    writes_sequence_task = False
    # contextual: memorizing conditioned on the context (what the transformers learn at
    # intermediate D, docs/science.md); it stores the same D-pair table as memorizing.
    strategies = (*STRATEGIES, "contextual")
    table_strategies = ("memorizing", "contextual")
    strategy_sources = {
        "memorizing": (classification_memorizing, _squared_distance, _one_hot),
        "contextual": (classification_contextual, _squared_distance, _one_hot),
        "generalizing": (classification_generalizing, _one_hot),
        "constant": (classification_constant,),
    }
    num_outcomes = 2

    def __init__(self, num_dims: int, context_length: int, within_class_variance: float):
        self.num_dims, self.context_length = num_dims, context_length
        self.within_class_variance = within_class_variance

    @classmethod
    def from_spec(cls, spec) -> Classification:
        return cls(spec.num_dims, spec.context_length, spec.within_class_variance)

    @classmethod
    def check_spec(cls, spec) -> None:
        if spec.context_length < 3:
            raise SpecError(
                f"spec key 'context_length': value {spec.context_length} is out of range for "
                "classification; allowed: integers >= 3 (context pairs plus the query)"
            )

    # ------------------------------------------------------------------------ sampling

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

    def held_out_batches(self, tasks: TaskSet, num_sequences: int, seed: int, num_tasks: int):
        """``ood``: a fresh pool of D pairs (at least 2); ``iwl`` (D >= 2): the training
        tasks with the query's pair kept out of the context."""
        pool = self.sample_tasks(max(num_tasks, 2), generator(seed, "ood-pool", num_tasks))
        batches = {"ood": (self.sample_batch(pool, num_sequences, generator(seed, "ood")), pool)}
        if num_tasks >= 2:
            iwl_gen = generator(seed, "iwl", num_tasks)
            iwl = self.sample_batch(tasks, num_sequences, iwl_gen, in_weights=True)
            batches["iwl"] = (iwl, tasks)
        return batches

    # ------------------------------------------------------------------------ strategies

    def memorizing(self, batch: ClassificationBatch, tasks: TaskSet) -> torch.Tensor:
        table = task_table(batch, tasks)
        query = batch.query_item.to(table.dtype)
        labels = tasks.labels.to(table.device)
        return classification_memorizing(query, table, labels, self.within_class_variance)

    def contextual(self, batch: ClassificationBatch, tasks: TaskSet) -> torch.Tensor:
        table = task_table(batch, tasks)
        labels = tasks.labels.to(table.device)
        # In chunks of sequences: the closed form holds a few (B, C, D) arrays at once.
        num_context = max(batch.context_labels.shape[1], 1)
        rows = max(1, _CONTEXTUAL_CHUNK_ELEMENTS // (num_context * len(tasks)))
        chunks = zip(
            batch.context_items.to(table.dtype).split(rows),
            batch.context_labels.split(rows),
            batch.query_item.to(table.dtype).split(rows),
            strict=True,
        )
        eps = self.within_class_variance
        return torch.cat(
            [classification_contextual(c, y, q, table, labels, eps) for c, y, q in chunks]
        )  # (B, 1, 2)

    def generalizing(self, batch: ClassificationBatch, tasks: TaskSet) -> torch.Tensor:
        dtype = tasks.tasks.dtype
        return classification_generalizing(
            batch.context_items.to(dtype),
            batch.context_labels,
            batch.query_item.to(dtype),
            self.within_class_variance,
        )

    def constant(self, batch: ClassificationBatch, tasks: TaskSet) -> torch.Tensor:
        return classification_constant(batch.query_item.to(tasks.tasks.dtype))

    def prior_parameters(self) -> np.ndarray:
        return np.array([self.within_class_variance])

    def prediction_loss(self, prediction, batch: ClassificationBatch, tasks):
        """Cross-entropy of the query's label: (B, P=1)."""
        label_prob = prediction[:, 0, :].gather(1, batch.query_label[:, None])  # (B, 1)
        return -label_prob.clamp_min(torch.finfo(prediction.dtype).tiny).log()

    # ------------------------------------------------------------------------ transformer

    @classmethod
    def token_layout(cls, num_dims: int, context_length: int, variant: str) -> TokenLayout:
        # symbols: labels 0, 1 and "masked" (the query's); the prediction is read at the query
        return TokenLayout(num_dims, 3, context_length, 1, 2, slice(-1, None))

    @classmethod
    def tokens(cls, batch: ClassificationBatch, layout: TokenLayout, dtype) -> Tokens:
        items = torch.cat([batch.context_items, batch.query_item[..., None, :]], -2)
        masked = torch.full_like(batch.context_labels[..., :1], layout.symbols - 1)
        labels = torch.cat([batch.context_labels, masked], -1)  # (E, B, T)
        return Tokens(items.to(dtype), labels)  # (E, B, T, d), (E, B, T)

    # ------------------------------------------------------------------------ file

    def own_attributes(self) -> dict:
        return {"within_class_variance": self.within_class_variance}

    @classmethod
    def batch_from_file(cls, variables) -> ClassificationBatch:
        context_labels = variables["context_labels"]  # (S, C)
        num_sequences = context_labels.shape[0]
        return ClassificationBatch(
            variables["context_items"],
            context_labels,
            variables["query_item"],
            variables["target"].reshape(num_sequences),  # the query's label
            torch.zeros_like(context_labels),  # the context's tasks are not needed to evaluate
            torch.arange(num_sequences),
        )

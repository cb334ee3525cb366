"""The classification setting: noisy item-label pairs, the query from the context or kept
out of it, and its strategies against brute-force float64 references with explicit loops."""

import math

import numpy as np
import pytest
import torch

from rational_icl.data import Classification, generator
from rational_icl.data.settings.classification import (
    classification_generalizing,
    classification_memorizing,
)
from tests.data.settings.cases import classification

SEEDS = [0, 1, 2]


def test_classification_query_comes_from_context_and_iwl_keeps_it_out():
    setting = Classification(num_dims=8, context_length=9, within_class_variance=0.5)
    tasks = setting.sample_tasks(20, generator(0, "t"))
    batch = setting.sample_batch(tasks, 256, generator(0, "s"))
    in_context = (batch.context_index == batch.task_index[:, None]).any(1)
    assert in_context.all()
    assert torch.equal(batch.query_label, tasks.labels[batch.task_index])
    iwl = setting.sample_batch(tasks, 256, generator(0, "s"), in_weights=True)
    assert not (iwl.context_index == iwl.task_index[:, None]).any()
    # Noisy items keep unit variance per dimension times 1/d: (1/d + eps/d) / (1 + eps).
    items = setting.sample_batch(
        setting.sample_tasks(5000, generator(1, "t")), 5000, generator(1, "s")
    )
    assert items.query_item.var().item() == pytest.approx(1 / 8, rel=0.05)
    assert batch.target.shape == (256, 1)


# ---------------------------------------------------------------------------- strategies


def _gauss_log_density(x, mean, variance):
    return -((x - mean) ** 2).sum() / (2 * variance)


def _reference_classification_memorizing(query, items, labels, eps):
    dims = query.shape[-1]
    variance = eps / ((1 + eps) * dims)
    out = np.zeros((len(query), 1, 2))
    for b in range(len(query)):
        log_post = np.array(
            [_gauss_log_density(query[b], mu / math.sqrt(1 + eps), variance) for mu in items]
        )
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        for k in range(len(items)):
            out[b, 0, labels[k]] += post[k]
    return out


def _reference_classification_generalizing(context, context_labels, query, eps):
    rho = 1 / (1 + eps)
    variance = (1 - rho**2) / query.shape[-1]
    out = np.zeros((len(query), 1, 2))
    for b in range(len(query)):
        log_post = np.array(
            [_gauss_log_density(query[b], rho * item, variance) for item in context[b]]
        )
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        for j in range(context.shape[1]):
            out[b, 0, context_labels[b, j]] += post[j]
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_matches_reference(seed):
    setting, tasks, batch = classification(seed)
    eps = setting.within_class_variance
    query, items, labels = batch.query_item.numpy(), tasks.tasks.numpy(), tasks.labels.numpy()
    memorizing = classification_memorizing(batch.query_item, tasks.tasks, tasks.labels, eps)
    reference_m = _reference_classification_memorizing(query, items, labels, eps)
    assert np.abs(memorizing.numpy() - reference_m).max() <= 1e-9
    generalizing = classification_generalizing(
        batch.context_items, batch.context_labels, batch.query_item, eps
    )
    reference_g = _reference_classification_generalizing(
        batch.context_items.numpy(), batch.context_labels.numpy(), query, eps
    )
    assert np.abs(generalizing.numpy() - reference_g).max() <= 1e-9
    memorizing32 = classification_memorizing(
        batch.query_item.float(), tasks.tasks.float(), tasks.labels, eps
    )
    assert np.abs(memorizing32.numpy() - reference_m).max() <= 1e-4

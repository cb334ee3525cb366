"""The classification setting: noisy item-label pairs, the query from the context or kept
out of it, and its strategies against brute-force float64 references with explicit loops."""

import itertools
import math

import numpy as np
import pytest
import torch

from rational_icl.data import STRATEGIES, Classification, TaskSet, generator
from rational_icl.data.settings import classification as classification_module
from rational_icl.data.settings.classification import (
    classification_contextual,
    classification_generalizing,
    classification_memorizing,
)
from rational_icl.modeling.complexity import strategy_complexity
from rational_icl.modeling.losses import strategy_loss
from tests.data.settings.cases import classification, source_bits_and_complexities

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


# ---------------------------------------------------------------------------- contextual


def _reference_classification_contextual(context, context_labels, query, items, labels, eps):
    """Explicit sums over context positions c and stored pairs k, with whole densities."""
    dims = query.shape[-1]
    variance = eps / ((1 + eps) * dims)

    def density(x, mu):
        mean = mu / math.sqrt(1 + eps)
        return math.exp(_gauss_log_density(x, mean, variance)) / (2 * math.pi * variance) ** (
            dims / 2
        )

    out = np.zeros((len(query), 1, 2))
    for b in range(len(query)):
        weight = np.zeros(context.shape[1])
        for c in range(context.shape[1]):
            joint = evidence = 0.0
            for k in range(len(items)):
                if labels[k] == context_labels[b, c]:
                    evidence += density(context[b, c], items[k])
                    joint += density(context[b, c], items[k]) * density(query[b], items[k])
            weight[c] = joint / evidence
        weight /= weight.sum()
        for c in range(context.shape[1]):
            out[b, 0, context_labels[b, c]] += weight[c]
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_contextual_matches_reference(seed):
    setting, tasks, batch = classification(seed)
    eps = setting.within_class_variance
    contextual = setting.strategy_prediction(batch, tasks, "contextual")
    reference = _reference_classification_contextual(
        batch.context_items.numpy(),
        batch.context_labels.numpy(),
        batch.query_item.numpy(),
        tasks.tasks.numpy(),
        tasks.labels.numpy(),
        eps,
    )
    assert contextual.dtype == torch.float64
    assert np.abs(contextual.numpy() - reference).max() <= 1e-9
    args = (batch.context_items, batch.context_labels, batch.query_item, tasks.tasks)
    contextual32 = classification_contextual(
        *(a.float() if a.is_floating_point() else a for a in args), tasks.labels, eps
    )
    assert np.abs(contextual32.numpy() - reference).max() <= 1e-4


def test_classification_contextual_is_the_bayes_predictor_of_the_generative_process():
    # Enumerate every assignment of stored pairs to the C context positions and every query
    # position: the exact posterior predictive of the sampler's process, no derivation used.
    setting, tasks, batch = classification(4, num_tasks=3, batch=3, length=4)
    eps, dims = setting.within_class_variance, setting.num_dims
    variance = eps / ((1 + eps) * dims)
    means = tasks.tasks.numpy() / math.sqrt(1 + eps)
    labels, num_context = tasks.labels.numpy(), 3
    for b in range(3):
        items, context_labels = batch.context_items[b].numpy(), batch.context_labels[b].numpy()
        query = batch.query_item[b].numpy()
        joint = np.zeros(2)
        for assignment in itertools.product(range(3), repeat=num_context):
            if any(labels[k] != y for k, y in zip(assignment, context_labels, strict=True)):
                continue
            context = sum(
                _gauss_log_density(items[c], means[k], variance) for c, k in enumerate(assignment)
            )
            for position in range(num_context):
                k = assignment[position]
                log_p = context + _gauss_log_density(query, means[k], variance)
                joint[labels[k]] += math.exp(log_p)
        expected = joint / joint.sum()
        contextual = setting.strategy_prediction(batch, tasks, "contextual")[b, 0].numpy()
        assert np.abs(contextual - expected).max() <= 1e-9


def test_classification_contextual_in_chunks_of_sequences_is_the_same(monkeypatch):
    setting, tasks, batch = classification(0, batch=7)
    whole = setting.strategy_prediction(batch, tasks, "contextual")
    # 3 sequences x 7 context pairs x 6 tasks per chunk: chunks of 3, 3, 1
    monkeypatch.setattr(classification_module, "_CONTEXTUAL_CHUNK_ELEMENTS", 3 * 7 * 6)
    chunked = setting.strategy_prediction(batch, tasks, "contextual")
    assert torch.allclose(whole, chunked, atol=1e-12, rtol=0) and chunked.shape == (7, 1, 2)


def test_classification_contextual_reads_the_exact_match_as_noise_vanishes():
    setting = Classification(num_dims=8, context_length=8, within_class_variance=1e-4)
    tasks = setting.sample_tasks(16, generator(0, "t"))
    batch = setting.sample_batch(tasks, 256, generator(0, "s"))
    contextual = setting.strategy_prediction(batch, tasks, "contextual")[:, 0, :]  # (B, 2)
    assert torch.isfinite(contextual).all()
    label_probability = contextual.gather(1, batch.query_label[:, None])
    assert (label_probability > 1 - 1e-6).all()


def test_classification_contextual_with_one_pair_per_label_weighs_context_counts():
    # One stored pair per label: the denominator has one term, so H(y) is proportional to
    # (count of y in the context) x N(x_q; m_y): with a one-label context, that label.
    setting = Classification(num_dims=4, context_length=6, within_class_variance=0.5)
    items = setting.sample_tasks(2, generator(1, "t")).tasks
    tasks = TaskSet(items, torch.tensor([0, 1]))
    batch = setting.sample_batch(tasks, 64, generator(1, "s"))
    contextual = setting.strategy_prediction(batch, tasks, "contextual")[:, 0, :]  # (B, 2)
    eps = setting.within_class_variance
    variance = eps / ((1 + eps) * 4)
    means = items / math.sqrt(1 + eps)
    log_query = -((batch.query_item[:, None, :] - means) ** 2).sum(-1) / (2 * variance)  # (B, 2)
    counts = torch.nn.functional.one_hot(batch.context_labels, 2).sum(1).double()  # (B, 2)
    expected = counts * (log_query - log_query.amax(-1, keepdim=True)).exp()
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(contextual, expected, atol=1e-12, rtol=0)
    one_label = (counts == 0).any(-1)
    assert one_label.any()
    agrees = contextual[one_label].gather(1, batch.context_labels[one_label, :1])
    assert torch.allclose(agrees, torch.ones_like(agrees))


def test_classification_contextual_conditions_on_the_context_where_memorizing_does_not():
    # Two stored pairs with the same item and different labels: the query alone cannot tell
    # them apart (M says 1/2), the labels in the context can.
    setting = Classification(num_dims=4, context_length=5, within_class_variance=0.5)
    item = setting.sample_tasks(1, generator(2, "t")).tasks
    tasks = TaskSet(item.repeat(2, 1), torch.tensor([0, 1]))
    batch = setting.sample_batch(tasks, 8, generator(2, "s"))
    for label in (0, 1):
        batch.context_labels[:] = label
        contextual = setting.strategy_prediction(batch, tasks, "contextual")[:, 0, :]
        memorizing = setting.strategy_prediction(batch, tasks, "memorizing")[:, 0, :]
        assert torch.allclose(memorizing, torch.full_like(memorizing, 0.5))
        assert torch.allclose(contextual[:, label], torch.ones(8, dtype=torch.float64))


def test_classification_contextual_is_uniform_where_no_stored_pair_explains_the_context():
    setting = Classification(num_dims=4, context_length=5, within_class_variance=0.5)
    tasks = setting.sample_tasks(3, generator(3, "t"))
    tasks = TaskSet(tasks.tasks, torch.zeros(3, dtype=torch.long))
    batch = setting.sample_batch(tasks, 4, generator(3, "s"))
    batch.context_labels[:2] = 1  # no stored pair has label 1
    batch.context_labels[2:, 0] = 1  # one unexplained position, the others explained
    contextual = setting.strategy_prediction(batch, tasks, "contextual")[:, 0, :]
    assert torch.allclose(contextual[:2], torch.full((2, 2), 0.5, dtype=torch.float64))
    assert torch.allclose(contextual[2:, 0], torch.ones(2, dtype=torch.float64))


def test_classification_strategies_add_contextual_after_the_shared_three():
    assert Classification.strategies == (*STRATEGIES, "contextual")
    setting, tasks, batch = classification(0)
    assert setting.strategy_predictions(batch, tasks).shape == (4, 4, 1, 2)


def test_classification_contextual_loss_beats_memorizing_and_generalizing_at_intermediate_d():
    setting = Classification(num_dims=8, context_length=8, within_class_variance=0.5)
    tasks = setting.sample_tasks(16, generator(0, "t"))
    losses = {
        q: strategy_loss(setting, tasks, q, 4000, generator(0, "loss", q))
        for q in ("memorizing", "generalizing", "contextual")
    }
    contextual = losses["contextual"]
    for q in ("memorizing", "generalizing"):
        gap = losses[q].mean - contextual.mean
        assert gap > 4 * math.hypot(losses[q].standard_error, contextual.standard_error), q
    assert 0 < contextual.standard_error < 0.05


def test_classification_contextual_complexity_exceeds_generalizing_and_grows_with_d():
    setting = Classification(num_dims=8, context_length=8, within_class_variance=0.5)
    complexity = {}
    for num_tasks in (4, 32):
        tasks = setting.sample_tasks(num_tasks, generator(0, "t", num_tasks))
        complexity[num_tasks] = {
            q: strategy_complexity(setting, tasks, q) for q in setting.strategies
        }
    for num_tasks, k in complexity.items():
        assert k["contextual"] > k["generalizing"], num_tasks
        # the same D-pair table as memorizing, a longer program
        assert k["contextual"] > k["memorizing"], num_tasks
    # 28 more rows of 8 float64 item numbers: random floats compress to at least half
    assert complexity[32]["contextual"] > complexity[4]["contextual"] + 0.5 * 28 * 8 * 64


def test_classification_complexities_are_pinned():
    # (source bits, [K_Q at D = 2, 16, 128]) per strategy: see cases.py before changing them
    setting = Classification(num_dims=4, context_length=8, within_class_variance=0.5)
    assert source_bits_and_complexities(setting) == {
        "memorizing": (2944, [3600.0, 7536.0, 35936.0]),
        "generalizing": (2656, [2760.0, 2760.0, 2760.0]),
        "constant": (1016, [1120.0, 1120.0, 1120.0]),
        "contextual": (4472, [5128.0, 9064.0, 37464.0]),
    }

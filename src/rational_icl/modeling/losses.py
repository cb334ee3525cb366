"""Per-prediction losses (nats, docs/science.md) and Monte Carlo strategy losses L_Q."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rational_icl.modeling.strategies import strategy_prediction

# Memory bound for one Monte Carlo chunk: sequences x positions x tasks elements.
_CHUNK_ELEMENTS = 2**23


def prediction_loss(setting, prediction: torch.Tensor, batch, tasks) -> torch.Tensor:
    """Loss of each prediction (B, P, O) against the batch it was made on: (B, P).

    categorical: KL(theta || prediction) with theta the sequence's true task;
    regression: squared error / (2 sigma^2); classification: cross-entropy of the query label.
    """
    if setting.name == "categorical-sequence":
        theta = tasks.tasks[batch.task_index.cpu()].to(prediction)[:, None, :]  # (B, 1, K)
        log_ratio = theta.log() - prediction.clamp_min(torch.finfo(prediction.dtype).tiny).log()
        return (theta * log_ratio).sum(-1)
    if setting.name == "linear-regression":
        return (batch.y.to(prediction) - prediction[..., 0]) ** 2 / (2 * setting.noise_variance)
    label_prob = prediction[:, 0, :].gather(1, batch.query_label[:, None])  # (B, 1)
    return -label_prob.clamp_min(torch.finfo(prediction.dtype).tiny).log()


@dataclass(frozen=True)
class LossEstimate:
    """Monte Carlo estimate of an expected per-prediction loss (nats)."""

    mean: float
    standard_error: float
    median_of_means: float


def strategy_loss(
    setting,
    tasks,
    strategy: str,
    num_sequences: int,
    gen: torch.Generator,
    device="cpu",
    num_groups: int = 10,
) -> LossEstimate:
    """L_Q: expected per-prediction loss of a strategy on sequences from the training tasks.

    Sequences are drawn in chunks (bounded memory); the standard error comes from the spread
    of per-sequence mean losses, which are independent across sequences.
    """
    per_sequence = []
    # Only memorizing holds a (sequence, position, task) array; the others scale with num_dims.
    width = max(len(tasks) if strategy == "memorizing" else 1, setting.num_dims)
    chunk = max(1, _CHUNK_ELEMENTS // (setting.context_length * width))
    remaining = num_sequences
    while remaining > 0:
        size = min(chunk, remaining)
        batch = setting.sample_batch(tasks, size, gen, device=device)
        prediction = strategy_prediction(setting, batch, tasks, strategy)
        per_sequence.append(prediction_loss(setting, prediction, batch, tasks).mean(-1).cpu())
        remaining -= size
    losses = torch.cat(per_sequence).double()  # (N,)
    groups = torch.stack([g.mean() for g in losses.tensor_split(min(num_groups, len(losses)))])
    return LossEstimate(
        mean=losses.mean().item(),
        standard_error=(losses.std() / math.sqrt(len(losses))).item(),
        median_of_means=groups.median().item(),
    )

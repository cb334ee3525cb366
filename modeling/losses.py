"""Monte Carlo strategy losses L_Q: a strategy's expected per-prediction loss (nats,
docs/science.md) on sequences from the training tasks. The per-prediction loss is the
setting's (``Setting.prediction_loss``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Memory bound for one Monte Carlo chunk: sequences x positions x tasks elements.
_CHUNK_ELEMENTS = 2**23


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
    # Only the table strategies hold a (sequence, position, task) array; the others scale
    # with num_dims.
    width = max(len(tasks) if strategy in setting.table_strategies else 1, setting.num_dims)
    chunk = max(1, _CHUNK_ELEMENTS // (setting.context_length * width))
    remaining = num_sequences
    while remaining > 0:
        size = min(chunk, remaining)
        batch = setting.sample_batch(tasks, size, gen, device=device)
        prediction = setting.strategy_prediction(batch, tasks, strategy)
        per_sequence.append(setting.prediction_loss(prediction, batch, tasks).mean(-1).cpu())
        remaining -= size
    losses = torch.cat(per_sequence).double()  # (N,)
    groups = torch.stack([g.mean() for g in losses.tensor_split(min(num_groups, len(losses)))])
    return LossEstimate(
        mean=losses.mean().item(),
        standard_error=(losses.std() / math.sqrt(len(losses))).item(),
        median_of_means=groups.median().item(),
    )

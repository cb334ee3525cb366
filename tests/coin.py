"""A toy task setting, written as a new setting module would be (docs/extending.md): a task
is a coin's probability of heads, theta ~ Beta(a, a); a sequence is T flips of its coin.

It lives in tests so that only the tests register it (the ``coin_setting`` fixture); as
``data/settings/coin.py`` it would be a setting of every command.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rational_icl.data import Batch, Setting, SpecOption, TaskSet, TokenLayout, Tokens, register
from rational_icl.facts import SettingFacts


@dataclass
class CoinBatch(Batch):
    flips: torch.Tensor  # (B, T) int64: 1 for heads
    task_index: torch.Tensor  # (B,)

    @property
    def target(self) -> torch.Tensor:  # (B, P=T)
        return self.flips


def coin_memorizing(flips: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """Posterior-weighted mixture of the D coins, given the flips before t.

    flips: (B, T) int; heads: (D,) probabilities of heads. Returns (B, T, 2).
    """
    seen = flips.to(heads.dtype)
    before = seen.cumsum(1) - seen  # (B, T) heads before t
    count = torch.arange(flips.shape[1], dtype=heads.dtype)  # (T,) flips before t
    log_likelihood = (
        before[..., None] * heads.log() + (count[:, None] - before[..., None]) * (1 - heads).log()
    )  # (B, T, D)
    p = torch.softmax(log_likelihood, -1) @ heads  # (B, T)
    return torch.stack([1 - p, p], -1)


def coin_generalizing(flips: torch.Tensor, concentration: float, dtype) -> torch.Tensor:
    """Beta-binomial predictive (heads + a) / (t + 2a). Returns (B, T, 2)."""
    seen = flips.to(dtype)
    before = seen.cumsum(1) - seen  # (B, T)
    count = torch.arange(flips.shape[1], dtype=dtype)  # (T,)
    p = (before + concentration) / (count + 2 * concentration)
    return torch.stack([1 - p, p], -1)


def coin_constant(flips: torch.Tensor, dtype) -> torch.Tensor:
    """Prior predictive: heads or tails, one half each. Returns (B, T, 2)."""
    return torch.full((*flips.shape, 2), 0.5, dtype=dtype)


@register
class Coin(Setting):
    """A coin per task, theta ~ Beta(a, a) with a whole number a (spec key coin_concentration)."""

    name = "coin"
    facts = SettingFacts(
        prediction_kind="probabilities",
        distance_kind="kl",
        loss_kind="cross-entropy",
        alternative_generalizer="tempered",
    )
    options = (SpecOption("coin_concentration", 1, int, lambda v: v >= 1, "integers >= 1"),)
    input_dims = {"flips": ("split", "sequence", "position")}
    task_dim = "coin"
    strategy_sources = {
        "memorizing": (coin_memorizing,),
        "generalizing": (coin_generalizing,),
        "constant": (coin_constant,),
    }
    num_outcomes = 2

    def __init__(self, num_dims: int, context_length: int, concentration: int = 1):
        self.num_dims, self.context_length = num_dims, context_length
        self.concentration = concentration

    @classmethod
    def from_spec(cls, spec) -> Coin:
        return cls(spec.num_dims, spec.context_length, spec.option("coin_concentration"))

    def sample_tasks(self, num_tasks: int, gen: torch.Generator) -> TaskSet:
        # Beta(a, a) as G1 / (G1 + G2), each Gamma(a) a sum of a exponential draws
        uniform = torch.rand(num_tasks, 2, self.concentration, generator=gen, dtype=torch.float64)
        gamma = -uniform.log().sum(-1)  # (D, 2)
        return TaskSet(gamma[:, :1] / gamma.sum(-1, keepdim=True))  # (D, 1)

    def sample_batch(
        self, tasks: TaskSet, batch_size: int, gen: torch.Generator, device="cpu", task_index=None
    ) -> CoinBatch:
        if task_index is None:
            task_index = torch.randint(len(tasks), (batch_size,), generator=gen)
        uniform = torch.rand(batch_size, self.context_length, generator=gen, dtype=torch.float64)
        flips = (uniform < tasks.tasks[task_index]).long()  # (B, T)
        return CoinBatch(flips, task_index).to(device)

    def memorizing(self, batch: CoinBatch, tasks: TaskSet) -> torch.Tensor:
        return coin_memorizing(batch.flips, tasks.tasks[:, 0])

    def generalizing(self, batch: CoinBatch, tasks: TaskSet) -> torch.Tensor:
        return coin_generalizing(batch.flips, self.concentration, tasks.tasks.dtype)

    def constant(self, batch: CoinBatch, tasks: TaskSet) -> torch.Tensor:
        return coin_constant(batch.flips, tasks.tasks.dtype)

    def prior_parameters(self) -> np.ndarray:
        return np.array([float(self.concentration)])

    def prediction_loss(self, prediction, batch: CoinBatch, tasks) -> torch.Tensor:
        """Cross-entropy of each flip: (B, P)."""
        chosen = prediction.gather(-1, batch.flips[..., None])[..., 0]  # (B, T)
        return -chosen.clamp_min(torch.finfo(prediction.dtype).tiny).log()

    @classmethod
    def token_layout(cls, num_dims: int, context_length: int, variant: str) -> TokenLayout:
        # symbols: tails, heads and the start token
        return TokenLayout(0, 3, context_length, context_length, 2)

    @classmethod
    def tokens(cls, batch: CoinBatch, layout: TokenLayout, dtype) -> Tokens:
        start = torch.full_like(batch.flips[..., :1], 2)
        return Tokens(None, torch.cat([start, batch.flips[..., :-1]], -1))  # (E, B, T)

    def own_attributes(self) -> dict:
        return {"coin_concentration": self.concentration}

    @classmethod
    def batch_from_file(cls, variables) -> CoinBatch:
        flips = variables["flips"]
        return CoinBatch(flips, torch.arange(flips.shape[0]))

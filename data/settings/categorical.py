"""Balls and urns (docs/science.md): a task is a probability vector over K symbols,
theta ~ Dirichlet(prior); a sequence is T symbols drawn from its task.

The transformer reads a start symbol then the symbols (an embedding) and predicts the next
symbol at every position: L = P = T, O = K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rational_icl.data.settings.base import (
    Batch,
    Setting,
    TaskSet,
    TokenLayout,
    Tokens,
    register,
    task_table,
)
from rational_icl.data.settings.closed_forms import (
    _exclusive_cumsum,
    _one_hot,
    _posterior_mean,
)
from rational_icl.errors import SpecError
from rational_icl.facts import SettingFacts

_CHUNK_BYTES = 2**20  # (rows, D) log likelihoods per chunk: half of a core's L2 cache


@dataclass
class CategoricalBatch(Batch):
    tokens: torch.Tensor  # (B, T) int64 symbols
    task_index: torch.Tensor  # (B,)

    @property
    def target(self) -> torch.Tensor:  # (B, P=T)
        return self.tokens


# ---------------------------------------------------------------------------- closed forms


def categorical_memorizing(tokens: torch.Tensor, task_probs: torch.Tensor) -> torch.Tensor:
    """Posterior-weighted mixture of the D task vectors, given the symbols before t.

    tokens: (B, T) int; task_probs: (D, K). Returns (B, T, K).
    """
    num_tasks, num_outcomes = task_probs.shape
    log_probs = task_probs.clamp_min(torch.finfo(task_probs.dtype).tiny).log()  # (D, K)
    counts = _exclusive_cumsum(_one_hot(tokens, num_outcomes, task_probs.dtype))  # (B, T, K)
    counts = counts.reshape(-1, num_outcomes)  # (N, K), N = B * T
    # In chunks of rows on CPU: a chunk's (R, D) log likelihoods stay in cache from their
    # matmul through the exponential to the mixture, where the whole (N, D) would go to
    # memory and back three times (that traffic, not the arithmetic, is the cost).
    # _posterior_mean floors the weights at exp(-80); torch.softmax does not, and most of
    # its exponentials then land in float32's slow subnormal range (10x the time here).
    rows = counts.shape[0]
    if counts.device.type == "cpu":
        rows = max(1, _CHUNK_BYTES // (num_tasks * counts.element_size()))
    chunks = [
        _posterior_mean(chunk @ log_probs.T, task_probs)  # (R, D) -> (R, K)
        for chunk in counts.split(rows)
    ]
    return torch.cat(chunks).reshape(*tokens.shape, num_outcomes)  # (B, T, K)


def categorical_generalizing(tokens: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """Dirichlet posterior mean (counts + alpha) / (t + sum alpha). Returns (B, T, K)."""
    counts = _exclusive_cumsum(_one_hot(tokens, concentration.shape[-1], concentration.dtype))
    posterior = counts + concentration  # (B, T, K)
    return posterior / posterior.sum(-1, keepdim=True)


def categorical_constant(tokens: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """Prior predictive: the Dirichlet mean at every position. Returns (B, T, K)."""
    mean = concentration / concentration.sum()
    return mean.expand(*tokens.shape, -1)


@register
class CategoricalSequence(Setting):
    """Balls and urns: a task is a probability vector over K symbols, theta ~ Dirichlet."""

    name = "categorical-sequence"
    facts = SettingFacts(
        prediction_kind="probabilities",
        distance_kind="kl",
        loss_kind="task-kl",
        alternative_generalizer="tempered",
    )
    exclusive_keys = ("prior",)
    input_dims = {"tokens": ("split", "sequence", "position")}
    task_dim = "outcome"
    strategy_sources = {
        "memorizing": (categorical_memorizing, _exclusive_cumsum, _one_hot, _posterior_mean),
        "generalizing": (categorical_generalizing, _exclusive_cumsum, _one_hot),
        "constant": (categorical_constant,),
    }

    def __init__(self, num_dims: int, context_length: int, prior: tuple[float, ...] | None = None):
        self.num_dims, self.context_length = num_dims, context_length
        concentration = prior if prior is not None else (1.0,)
        if len(concentration) == 1:
            concentration = concentration * num_dims
        self.concentration = torch.tensor(concentration, dtype=torch.float64)  # (K,)
        self.num_outcomes = num_dims

    @classmethod
    def from_spec(cls, spec) -> CategoricalSequence:
        return cls(spec.num_dims, spec.context_length, spec.prior)

    @classmethod
    def check_spec(cls, spec) -> None:
        if spec.prior is not None and len(spec.prior) not in (1, spec.num_dims):
            raise SpecError(
                f"spec key 'prior': {len(spec.prior)} values for num_dims {spec.num_dims}; "
                "allowed: one value or num_dims values"
            )

    # ------------------------------------------------------------------------ sampling

    def sample_tasks(self, num_tasks: int, gen: torch.Generator) -> TaskSet:
        # Dirichlet as normalised Gamma draws; torch's own Gamma sampler takes no
        # generator, so draw them here to keep every stream seeded.
        gamma, log_gamma = _gamma(self.concentration.expand(num_tasks, -1), gen)  # (D, K)
        probs = gamma / gamma.sum(-1, keepdim=True)
        # Small concentrations (e.g. 0.001) underflow every draw of a row to 0 (0/0 = NaN):
        # normalise those rows in log space. Other rows keep the plain ratio, bit for bit.
        bad = ~torch.isfinite(probs).all(-1)
        if bad.any():
            probs[bad] = torch.softmax(log_gamma[bad], -1)
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

    # ------------------------------------------------------------------------ strategies

    def memorizing(self, batch: CategoricalBatch, tasks: TaskSet) -> torch.Tensor:
        return categorical_memorizing(batch.tokens, task_table(batch, tasks))

    def generalizing(self, batch: CategoricalBatch, tasks: TaskSet) -> torch.Tensor:
        concentration = self.concentration.to(task_table(batch, tasks))
        return categorical_generalizing(batch.tokens, concentration)

    def constant(self, batch: CategoricalBatch, tasks: TaskSet) -> torch.Tensor:
        concentration = self.concentration.to(task_table(batch, tasks))
        return categorical_constant(batch.tokens, concentration)

    def prior_parameters(self) -> np.ndarray:
        return self.concentration.numpy()

    def prediction_loss(self, prediction, batch: CategoricalBatch, tasks: TaskSet):
        """KL(theta || prediction), theta the sequence's true task: (B, P)."""
        theta = tasks.tasks[batch.task_index.cpu()].to(prediction)[:, None, :]  # (B, 1, K)
        log_ratio = theta.log() - prediction.clamp_min(torch.finfo(prediction.dtype).tiny).log()
        return (theta * log_ratio).sum(-1)

    # ------------------------------------------------------------------------ transformer

    @classmethod
    def token_layout(cls, num_dims: int, context_length: int, variant: str) -> TokenLayout:
        # symbols: the K symbols and the start token
        return TokenLayout(0, num_dims + 1, context_length, context_length, num_dims)

    @classmethod
    def tokens(cls, batch: CategoricalBatch, layout: TokenLayout, dtype) -> Tokens:
        tokens = batch.tokens  # (E, B, T)
        start = torch.full_like(tokens[..., :1], layout.symbols - 1)  # the last symbol
        return Tokens(None, torch.cat([start, tokens[..., :-1]], -1))

    # ------------------------------------------------------------------------ file

    def own_attributes(self) -> dict:
        return {"prior": self.concentration.numpy()}

    @classmethod
    def batch_from_file(cls, variables) -> CategoricalBatch:
        tokens = variables["tokens"]  # (S, T)
        return CategoricalBatch(tokens, torch.arange(tokens.shape[0]))


# ---------------------------------------------------------------------------- sampling


def _gamma(concentration: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gamma(concentration, 1) draws from an explicit generator (Marsaglia-Tsang, vectorised),
    and their logarithms (finite where a small concentration underflows the draw to 0)."""
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
    log_out = torch.log(out)
    if boost.any():
        u = torch.rand(a.shape, generator=gen, dtype=a.dtype)
        log_out = torch.where(boost, log_out + torch.log(u) / a, log_out)
        out = torch.where(boost, out * u ** (1 / a), out)
    return out, log_out

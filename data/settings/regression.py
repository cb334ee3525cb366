"""Linear regression (docs/science.md): a task is a weight vector w ~ N(0, I_d); a sequence
is T pairs (x_t, y_t), x_t ~ N(0, I_d), y_t = x_t . w + noise of variance sigma^2.

The transformer reads x_1, y_1, ..., x_T interleaved (L = 2T - 1): x through a linear
read-in, y as one more channel of the same read-in; the predicted mean of y_t is read at
the x_t token (P = T, O = 1). With ``model.regression_tokens = "paired"`` the y_i token
also carries x_i and a channel flags y tokens, so one attention layer can match the query
x_t against (x_i, y_i) pairs directly instead of first copying x_i onto the y_i token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rational_icl.data.settings.base import (
    Batch,
    Setting,
    TaskSet,
    TokenLayout,
    Tokens,
    register,
    task_table,
)
from rational_icl.data.settings.closed_forms import _exclusive_cumsum, _posterior_mean
from rational_icl.facts import SettingFacts
from rational_icl.formulas import default_noise_variance


@dataclass
class RegressionBatch(Batch):
    x: torch.Tensor  # (B, T, d)
    y: torch.Tensor  # (B, T)
    task_index: torch.Tensor  # (B,)

    @property
    def target(self) -> torch.Tensor:  # (B, P=T)
        return self.y


# ---------------------------------------------------------------------------- closed forms


def regression_memorizing(
    x: torch.Tensor, y: torch.Tensor, task_weights: torch.Tensor, noise_variance: float
) -> torch.Tensor:
    """dMMSE: posterior-weighted prediction over the D weight vectors.

    x: (B, T, d); y: (B, T); task_weights: (D, d). Returns (B, T).
    """
    squared_error = (y[..., None] - x @ task_weights.T).square_()  # (B, T, D)
    log_likelihood = _exclusive_cumsum(squared_error).mul_(-1 / (2 * noise_variance))
    mean_weights = _posterior_mean(log_likelihood, task_weights)  # (B, T, d)
    return (x * mean_weights).sum(-1)  # (B, T)


def regression_generalizing(
    x: torch.Tensor, y: torch.Tensor, noise_variance: float, prior_variance: float = 1.0
) -> torch.Tensor:
    """Bayesian ridge (posterior mean of w under N(0, prior_variance I)), lambda = sigma^2 / prior.

    Returns (B, T): x_t . w_t with w_t fitted on the observations before t.
    """
    num_dims = x.shape[-1]
    gram = _exclusive_cumsum(x[..., :, None] * x[..., None, :])  # (B, T, d, d)
    moment = _exclusive_cumsum(x * y[..., None])  # (B, T, d)
    ridge = noise_variance / prior_variance * torch.eye(num_dims, dtype=x.dtype, device=x.device)
    cholesky = torch.linalg.cholesky(gram + ridge)  # (B, T, d, d)
    weights = torch.cholesky_solve(moment[..., None], cholesky)[..., 0]  # (B, T, d)
    return (x * weights).sum(-1)


def regression_constant(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Prior predictive mean of y: zero. Returns (B, T)."""
    return torch.zeros_like(y)


# ---------------------------------------------------------------------------- setting


@register
class LinearRegression(Setting):
    """A task is a weight vector w ~ N(0, I_d); y_t = x_t . w + noise."""

    name = "linear-regression"
    facts = SettingFacts(
        prediction_kind="mean",
        distance_kind="mse",
        loss_kind="squared-error",
        alternative_generalizer="gradient-step",
    )
    token_layouts = ("interleaved", "paired")
    input_dims = {
        "x": ("split", "sequence", "position", "feature"),
        "y": ("split", "sequence", "position"),
    }
    strategy_sources = {
        "memorizing": (regression_memorizing, _exclusive_cumsum),
        "generalizing": (regression_generalizing, _exclusive_cumsum),
        "constant": (regression_constant,),
    }
    num_outcomes = 1

    def __init__(self, num_dims: int, context_length: int, noise_variance: float):
        self.num_dims, self.context_length = num_dims, context_length
        self.noise_variance = noise_variance

    @classmethod
    def from_spec(cls, spec) -> LinearRegression:
        noise_variance = spec.noise_variance
        if noise_variance is None:
            noise_variance = default_noise_variance(spec.num_dims)
        return cls(spec.num_dims, spec.context_length, noise_variance)

    # ------------------------------------------------------------------------ sampling

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

    # ------------------------------------------------------------------------ strategies

    def memorizing(self, batch: RegressionBatch, tasks: TaskSet) -> torch.Tensor:
        table = task_table(batch, tasks)
        x, y = _inputs(batch, tasks)
        return regression_memorizing(x, y, table, self.noise_variance)[..., None]

    def generalizing(self, batch: RegressionBatch, tasks: TaskSet) -> torch.Tensor:
        x, y = _inputs(batch, tasks)
        return regression_generalizing(x, y, self.noise_variance)[..., None]

    def constant(self, batch: RegressionBatch, tasks: TaskSet) -> torch.Tensor:
        x, y = _inputs(batch, tasks)
        return regression_constant(x, y)[..., None]

    def prior_parameters(self) -> np.ndarray:
        return np.array([self.noise_variance, 1.0])

    def prediction_loss(self, prediction, batch: RegressionBatch, tasks):
        """Squared error / (2 sigma^2): (B, P)."""
        return (batch.y.to(prediction) - prediction[..., 0]) ** 2 / (2 * self.noise_variance)

    # ------------------------------------------------------------------------ transformer

    @classmethod
    def token_layout(cls, num_dims: int, context_length: int, variant: str) -> TokenLayout:
        # interleaved: x features, then y; paired: x, y, then a y-token flag
        features = num_dims + (2 if variant == "paired" else 1)
        # the predicted mean of y_t is read at the x_t token: every other token from the first
        return TokenLayout(
            features, 0, 2 * context_length - 1, context_length, 1, slice(0, None, 2), variant
        )

    @classmethod
    def tokens(cls, batch: RegressionBatch, layout: TokenLayout, dtype) -> Tokens:
        x, y = batch.x.to(dtype), batch.y.to(dtype)  # (E, B, T, d), (E, B, T)
        if layout.variant == "paired":
            x_tokens = F.pad(x, (0, 2))  # (E, B, T, d + 2): x, y = 0, flag 0
            flag = torch.ones_like(y[..., None])
            y_tokens = torch.cat([x, y[..., None], flag], -1)  # (E, B, T, d + 2)
        else:
            x_tokens = F.pad(x, (0, 1))  # (E, B, T, d + 1): last channel 0
            y_tokens = F.pad(y[..., None], (x.shape[-1], 0))  # (E, B, T, d + 1): only y
        tokens = torch.stack([x_tokens, y_tokens], 3).flatten(2, 3)[:, :, :-1]  # (E,B,2T-1,.)
        return Tokens(tokens, None)

    # ------------------------------------------------------------------------ file

    def own_attributes(self) -> dict:
        return {"noise_variance": self.noise_variance}

    @classmethod
    def batch_from_file(cls, variables) -> RegressionBatch:
        x = variables["x"]  # (S, T, d)
        return RegressionBatch(x, variables["y"], torch.arange(x.shape[0]))


def _inputs(batch: RegressionBatch, tasks: TaskSet) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y in the dtype of the task parameters."""
    dtype = tasks.tasks.dtype
    return batch.x.to(dtype), batch.y.to(dtype)

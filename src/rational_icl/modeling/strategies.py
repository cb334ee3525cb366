"""The three Bayesian strategies of docs/science.md, for every setting.

Every function returns, for every sequence and position, the prediction made from the context
before that position: probabilities (B, P, O) for categorical and classification, the
predicted mean of y (B, P) for regression. They are vectorised over batch and position with
cumulative sufficient statistics and computed in log space, in the dtype of their inputs.

- memorizing: prior uniform over the D training tasks; exact posterior predictive.
- generalizing: prior = the true continuous prior of the setting.
- constant: the prior predictive, ignoring the context.
"""

from __future__ import annotations

import math

import torch

STRATEGIES = ("memorizing", "generalizing", "constant")
_LOG_WEIGHT_FLOOR = -80.0  # exp(-80) ~ 1.8e-35: a normal float32, unlike its subnormals
_CHUNK_BYTES = 512 * 2**10  # (rows, D) log likelihoods per chunk: half of a core's L2 cache


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """Sum over positions (dim 1) strictly before each position: the context before t.

    A matmul with a strictly lower-triangular matrix of ones: several times faster than
    ``cumsum`` along a middle dimension on CPU, and as exact (no subtraction).
    """
    batch, length = x.shape[:2]
    flat = x.reshape(batch, length, -1)  # (B, T, F)
    before = torch.ones(length, length, dtype=x.dtype, device=x.device).tril_(-1)  # (T, T)
    return (before @ flat).reshape(x.shape)


def _posterior_mean(log_likelihood: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Posterior mean of per-task values under a uniform prior over the D tasks.

    log_likelihood: (..., D), overwritten; values: (D, V). Returns (..., V). The normaliser
    rides along as a column of ones, so the (..., D) weights are read once and never divided.
    """
    # In place (the input is consumed): a fresh (..., D) array costs more in page faults than
    # the arithmetic. Shift by the max and floor at exp(-80): weights below it change the
    # mean by < D * 2e-35 relative, and flooring keeps them out of the slow subnormal range.
    maximum = log_likelihood.amax(-1, keepdim=True)
    weights = log_likelihood.sub_(maximum).clamp_(min=_LOG_WEIGHT_FLOOR).exp_()  # (..., D)
    table = torch.cat([values, torch.ones_like(values[:, :1])], dim=1)  # (D, V + 1)
    # (V + 1, D) @ (D, N), not (N, D) @ (D, V + 1): BLAS runs a product with a handful of
    # output columns several times slower than the same product transposed.
    weighted = (table.T @ weights.reshape(-1, weights.shape[-1]).T).T  # (N, V + 1)
    weighted = weighted.reshape(*weights.shape[:-1], -1)  # (..., V + 1)
    return weighted[..., :-1] / weighted[..., -1:]


# ---------------------------------------------------------------------------- categorical


def categorical_memorizing(tokens: torch.Tensor, task_probs: torch.Tensor) -> torch.Tensor:
    """Posterior-weighted mixture of the D task vectors, given the symbols before t.

    tokens: (B, T) int; task_probs: (D, K). Returns (B, T, K).
    """
    num_tasks, num_outcomes = task_probs.shape
    log_probs = task_probs.clamp_min(torch.finfo(task_probs.dtype).tiny).log()  # (D, K)
    counts = _exclusive_cumsum(_one_hot(tokens, num_outcomes, task_probs.dtype))  # (B, T, K)
    counts = counts.reshape(-1, num_outcomes)  # (N, K), N = B * T
    # In chunks of rows on CPU: a chunk's (R, D) log likelihoods stay in cache from their
    # matmul through the softmax to the mixture, where the whole (N, D) would go to memory
    # and back three times (that traffic, not the arithmetic, is the cost).
    rows = counts.shape[0]
    if counts.device.type == "cpu":
        rows = max(1, _CHUNK_BYTES // (num_tasks * counts.element_size()))
    buffer = counts.new_empty(min(rows, counts.shape[0]), num_tasks)  # (R, D)
    mean = counts.new_empty(num_outcomes, counts.shape[0])  # (K, N), filled chunk by chunk
    for start in range(0, counts.shape[0], rows):
        chunk = counts[start : start + rows]  # (R, K)
        log_likelihood = torch.mm(chunk, log_probs.T, out=buffer[: chunk.shape[0]])  # (R, D)
        weights = torch.softmax(log_likelihood, dim=-1)  # (R, D)
        mean[:, start : start + rows] = task_probs.T @ weights.T  # (K, R), see _posterior_mean
    return mean.T.reshape(*tokens.shape, num_outcomes)  # (B, T, K)


def categorical_generalizing(tokens: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """Dirichlet posterior mean (counts + alpha) / (t + sum alpha). Returns (B, T, K)."""
    counts = _exclusive_cumsum(_one_hot(tokens, concentration.shape[-1], concentration.dtype))
    posterior = counts + concentration  # (B, T, K)
    return posterior / posterior.sum(-1, keepdim=True)


def categorical_constant(tokens: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """Prior predictive: the Dirichlet mean at every position. Returns (B, T, K)."""
    mean = concentration / concentration.sum()
    return mean.expand(*tokens.shape, -1)


def _one_hot(tokens: torch.Tensor, num_outcomes: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(tokens, num_outcomes).to(dtype)


# ---------------------------------------------------------------------------- regression


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


# ---------------------------------------------------------------------------- classification


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
    """||a_i - b_j||^2 for (B, d) and (D, d) -> (B, D), through one matmul."""
    return (a**2).sum(-1, keepdim=True) - 2 * a @ b.T + (b**2).sum(-1)


# ---------------------------------------------------------------------------- dispatch


def strategy_prediction(setting, batch, tasks, strategy: str) -> torch.Tensor:
    """One strategy's prediction on a batch: (B, P, O), O = 1 (the mean of y) for regression.

    Computed in the dtype of the task parameters (float64 for exact references).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    dtype = tasks.tasks.dtype
    table = tasks.tasks.to(_device(batch))
    if setting.name == "categorical-sequence":
        concentration = setting.concentration.to(table)
        if strategy == "memorizing":
            return categorical_memorizing(batch.tokens, table)
        if strategy == "generalizing":
            return categorical_generalizing(batch.tokens, concentration)
        return categorical_constant(batch.tokens, concentration)
    if setting.name == "linear-regression":
        x, y = batch.x.to(dtype), batch.y.to(dtype)
        if strategy == "memorizing":
            mean = regression_memorizing(x, y, table, setting.noise_variance)
        elif strategy == "generalizing":
            mean = regression_generalizing(x, y, setting.noise_variance)
        else:
            mean = regression_constant(x, y)
        return mean[..., None]
    eps = setting.within_class_variance
    query = batch.query_item.to(dtype)
    if strategy == "memorizing":
        return classification_memorizing(query, table, tasks.labels.to(table.device), eps)
    if strategy == "generalizing":
        return classification_generalizing(
            batch.context_items.to(dtype), batch.context_labels, query, eps
        )
    return classification_constant(query)


def all_strategy_predictions(setting, batch, tasks) -> torch.Tensor:
    """Every strategy's prediction stacked in STRATEGIES order: (Q, B, P, O)."""
    return torch.stack([strategy_prediction(setting, batch, tasks, q) for q in STRATEGIES])


def _device(batch) -> torch.device:
    return batch.task_index.device

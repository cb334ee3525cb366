"""When to log the training loss, and the learning rate at a step (checkpoints: formulas.py)."""

from __future__ import annotations

import math


def log_interval(max_steps: int, num_logs: int = 500) -> int:
    """Steps between two logged training losses: about ``num_logs`` logs per run."""
    return max(1, max_steps // num_logs)


def learning_rate(step: int, peak: float, warmup_steps: int, schedule: str, max_steps: int):
    """The learning rate of optimizer step ``step`` (1-based).

    Linear warm-up to ``peak`` over ``warmup_steps``, then ``constant``, ``cosine`` (decay to
    zero at ``max_steps``) or ``inverse-sqrt`` (peak * sqrt(warmup / step)).
    """
    if step <= warmup_steps:
        return peak * step / warmup_steps
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "inverse-sqrt":
        return peak * math.sqrt(max(warmup_steps, 1) / step)
    raise ValueError(
        f"lr_schedule {schedule!r} is unknown; allowed: constant, cosine, inverse-sqrt"
    )

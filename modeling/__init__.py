"""The compact transformer, Monte Carlo strategy losses and the complexity K_Q."""

from rational_icl.modeling.complexity import strategy_complexity
from rational_icl.modeling.losses import LossEstimate, strategy_loss

__all__ = [
    "LossEstimate",
    "strategy_complexity",
    "strategy_loss",
]

"""The compact transformer, the Bayesian strategies (M, G, C), losses and complexity."""

from rational_icl.modeling.complexity import strategy_complexity
from rational_icl.modeling.losses import LossEstimate, prediction_loss, strategy_loss
from rational_icl.modeling.strategies import (
    STRATEGIES,
    all_strategy_predictions,
    strategy_prediction,
)

__all__ = [
    "STRATEGIES",
    "LossEstimate",
    "all_strategy_predictions",
    "prediction_loss",
    "strategy_complexity",
    "strategy_loss",
    "strategy_prediction",
]

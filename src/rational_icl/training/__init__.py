"""The training loop, checkpoint schedule, evaluation at checkpoints and predictions files."""

from rational_icl.training.predictions import (
    evaluation_batches,
    run_attributes,
    strategy_dataset,
    training_tasks,
)

__all__ = ["evaluation_batches", "run_attributes", "strategy_dataset", "training_tasks"]

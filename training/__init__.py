"""The training loop, evaluation at checkpoints, the predictions files, sweeps, the
convergence report and the run plan."""

from rational_icl.training.predictions import (
    evaluation_batches,
    run_attributes,
    strategy_dataset,
    training_tasks,
)

__all__ = ["evaluation_batches", "run_attributes", "strategy_dataset", "training_tasks"]

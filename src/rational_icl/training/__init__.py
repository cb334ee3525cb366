"""The training loop, checkpoint schedule, evaluation at checkpoints and predictions files.

The exports load lazily, so torch-free modules (``schedule``) can be imported without torch:
the fits use the training schedule to simulate checkpoints.
"""

import importlib

_EXPORTS = {
    "evaluation_batches": "predictions",
    "run_attributes": "predictions",
    "strategy_dataset": "predictions",
    "training_tasks": "predictions",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)

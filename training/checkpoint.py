"""Training state on disk: model, optimizer and data streams of an ensemble, for resuming.

State files live in a hidden folder beside the predictions files, ``OUT/.state/NAME.pt``,
and are written atomically (temporary file, then rename).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rational_icl.data import ExperimentSpec, Run
from rational_icl.errors import RiclError
from rational_icl.io import atomic_path

STATE_FOLDER = ".state"


def ensemble_name(spec: ExperimentSpec, num_tasks) -> str:
    """File stem of an ensemble's state: its runs' name with every D value."""
    num_tasks = list(num_tasks)
    stem = Run(spec, num_tasks[0]).name
    all_d = "-".join(str(d) for d in num_tasks)
    m = spec.model
    return (
        stem.replace(f"_D{num_tasks[0]}_", f"_D{all_d}_", 1)
        + f"_L{m.num_layers}_H{m.hidden_size}_h{m.num_heads}_{m.position_encoding}"
    )


def state_path(out_dir: str | Path, spec: ExperimentSpec, num_tasks) -> Path:
    return Path(out_dir) / STATE_FOLDER / f"{ensemble_name(spec, num_tasks)}.pt"


def save_state(state: dict, path: str | Path) -> None:
    """Write a state dict atomically (a kill leaves the previous state)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path, device="cpu") -> dict:
    """Read a state dict with ``weights_only=True``; a damaged file is a one-line RiclError."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    # a damaged pickle can fail in the unpickler with any exception type (KeyError, ...)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RiclError(
            f"checkpoint state {str(path)!r} is corrupt or unreadable ({first_line}); "
            "delete it or rerun with --force to start over"
        ) from None
    if not isinstance(state, dict) or not {"step", "spec", "model"} <= set(state):
        raise RiclError(
            f"checkpoint state {str(path)!r} is not a ricl training state; "
            "delete it or rerun with --force to start over"
        )
    return state

"""Evaluate ensemble members on the fixed evaluation sequences stored in their files.

The sequences are read back from each run's predictions dataset, so the transformer is
scored on exactly the sequences the strategies were scored on, with the same loss
(the setting's ``prediction_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from rational_icl.data import TaskSet, setting_class
from rational_icl.modeling.model import stack_batches


@dataclass
class SplitInputs:
    """One split's evaluation sequences for every member (members lacking it get a filler)."""

    split: str
    batch: object  # stacked over members: leading dim E
    members: list[int]  # the members whose dataset has this split
    member_batches: list  # per member: its own batch (None where it lacks the split)
    member_tasks: list  # per member: TaskSet of each sequence's true task (or None)


def evaluation_inputs(datasets: list[xr.Dataset]) -> list[SplitInputs]:
    """Per split (in the order of the first dataset that has it), the stacked batches."""
    splits = list(dict.fromkeys(s for ds in datasets for s in ds["split"].values.tolist()))
    out = []
    for split in splits:
        members = [e for e, ds in enumerate(datasets) if split in ds["split"].values]
        member_batches = [
            _batch(ds.sel(split=split)) if e in members else None for e, ds in enumerate(datasets)
        ]
        member_tasks = [
            TaskSet(torch.from_numpy(ds["sequence_task"].sel(split=split).values))
            if e in members and "sequence_task" in ds
            else None
            for e, ds in enumerate(datasets)
        ]
        filler = member_batches[members[0]]
        stacked = stack_batches([b if b is not None else filler for b in member_batches])
        out.append(SplitInputs(split, stacked, members, member_batches, member_tasks))
    return out


@dataclass
class MemberEvaluation:
    """One ensemble member at one checkpoint, per split it has: its predictions
    (S, P, O) float32 and its mean per-prediction loss (nats)."""

    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)


def evaluate(trainer, inputs: list[SplitInputs]) -> list[MemberEvaluation]:
    """Every member's predictions and losses on every split it has."""
    return evaluate_predictor(trainer.predict, trainer.setting, trainer.num_members, inputs)


def evaluate_predictor(
    predict, setting, num_members: int, inputs: list[SplitInputs]
) -> list[MemberEvaluation]:
    """Every member's predictions and losses on every split it has, from ``predict``.

    Parameters
    ----------
    predict : callable
        A stacked batch (leading dim E) to probabilities or predicted means (E, S, P, O),
        float32: the trainer's ``predict``, or the recorder's wrapper of any model.
    setting : Setting
        Whose ``prediction_loss`` scores the predictions.
    num_members : int
        E.
    inputs : list of SplitInputs
        From :func:`evaluation_inputs`.
    """
    results = [MemberEvaluation() for _ in range(num_members)]
    for split_inputs in inputs:
        prediction = predict(split_inputs.batch).cpu()  # (E, S, P, O)
        for e in split_inputs.members:
            member_prediction = prediction[e]
            loss = setting.prediction_loss(
                member_prediction.double(),
                split_inputs.member_batches[e],
                split_inputs.member_tasks[e],
            )
            results[e].predictions[split_inputs.split] = member_prediction.numpy()
            results[e].losses[split_inputs.split] = loss.mean().item()
    return results


def _batch(ds: xr.Dataset):
    """The batch of one split, rebuilt from a predictions dataset; task_index = sequence."""
    setting = setting_class(ds.attrs["setting"])
    names = [*setting.input_dims, "target"]
    return setting.batch_from_file({name: _tensor(ds[name]) for name in names})


def _tensor(variable: xr.DataArray) -> torch.Tensor:
    values = variable.values
    if np.issubdtype(values.dtype, np.integer):
        return torch.from_numpy(values.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(values))

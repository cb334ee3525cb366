"""The predictions dataset of one run (docs/files.md §1), before any transformer variables.

It holds the fixed evaluation sequences of every split, what each Bayesian strategy predicts on
them, the strategies' losses and complexities and the training tasks. Training later appends
the transformer's predictions at each checkpoint to the same dataset.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import torch
import xarray as xr

from rational_icl import __version__
from rational_icl.data import Run, TaskSet, generator, make_setting
from rational_icl.modeling.complexity import strategy_complexity
from rational_icl.modeling.losses import strategy_loss


def training_tasks(run: Run) -> TaskSet:
    """The D training tasks of a run: the same for every stage that asks (seeded by run)."""
    setting = make_setting(run.spec)
    return setting.sample_tasks(run.num_tasks, generator(run.spec.seed, "tasks", run.num_tasks))


def evaluation_batches(run: Run, tasks: TaskSet) -> dict:
    """The fixed evaluation sequences of every split, on the CPU, keyed by split name, each
    with the tasks it was drawn from (``Setting.evaluation_batches``)."""
    spec, setting = run.spec, make_setting(run.spec)
    return setting.evaluation_batches(
        tasks, spec.evaluation.num_sequences, spec.seed, run.num_tasks
    )


def strategy_dataset(run: Run, device="cpu", progress=None) -> xr.Dataset:
    """Everything of a run's predictions file but the transformer variables.

    ``progress``, if given, is called with a short text before each slow step.
    """
    spec, setting = run.spec, make_setting(run.spec)
    tasks = training_tasks(run)
    batches = evaluation_batches(run, tasks)
    splits = list(batches)
    predictions = np.stack(
        [setting.strategy_predictions(b, tasks).numpy() for b, _ in batches.values()], axis=1
    )  # (Q, split, S, P, O)
    data = {
        "strategy_prediction": (
            ("strategy", "split", "sequence", "position", "outcome"),
            predictions,
            _attrs(
                "strategy prediction",
                "y" if setting.facts.prediction_kind == "mean" else "probability",
                "each Bayesian strategy's prediction at each position from the context before it",
            ),
        ),
        "target": (
            ("split", "sequence", "position"),
            np.stack([b.target.numpy() for b, _ in batches.values()]),
            _attrs("target", "", "the observation actually drawn (symbol, y, or query label)"),
        ),
        **_inputs(setting, batches),
        **_losses(run, setting, tasks, device, progress),
        "strategy_evaluation_loss": (
            ("strategy", "split"),
            _evaluation_losses(setting, batches, predictions),
            _attrs(
                "strategy loss on the evaluation sequences",
                "nats",
                "mean per-prediction loss of each strategy on each split's evaluation "
                "sequences: the strategies' side of transformer_loss",
            ),
        ),
        **_tasks(setting, tasks),
    }
    coords = {
        "split": splits,
        "sequence": np.arange(spec.evaluation.num_sequences),
        "position": np.arange(predictions.shape[3]),
        "outcome": ["y"] if setting.num_outcomes == 1 else np.arange(setting.num_outcomes),
        "strategy": list(setting.strategies),
        "task": np.arange(run.num_tasks),
    }
    dims = {d for v in setting.input_dims.values() for d in v} | {setting.task_dim}
    if "feature" in dims:
        coords["feature"] = np.arange(spec.num_dims)
    return xr.Dataset(data, coords=coords, attrs=run_attributes(run))


def run_attributes(run: Run) -> dict:
    """Global attributes of a run's file (docs/files.md): no None, no dicts."""
    spec, model, training = run.spec, run.spec.model, run.spec.training
    attrs = {
        "setting": spec.setting,
        "num_dims": spec.num_dims,
        "num_tasks": run.num_tasks,
        "context_length": spec.context_length,
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "num_heads": model.num_heads,
        "mlp_expansion_factor": float(model.mlp_expansion_factor),
        "position_encoding": model.position_encoding,
        # whose model the file records: ours, or the user's own (then named and described)
        "model_kind": model.kind,
        "batch_size": training.batch_size,
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "warmup_steps": training.warmup_steps,
        "lr_schedule": training.lr_schedule,
        "max_steps": training.max_steps,
        "num_checkpoints": training.num_checkpoints,
        "grad_clip": training.grad_clip,
        "precision": training.precision,
        "seed": spec.seed,
        "run_name": run.name,
        "package_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": spec.to_toml(),
    }
    if model.regression_tokens is not None:  # None is "interleaved"; no attribute is None
        attrs["regression_tokens"] = model.regression_tokens
    if model.external:
        attrs |= {"model_name": model.name, "model_description": model.description or ""}
    return attrs | make_setting(spec).file_attributes()


def _attrs(long_name: str, units: str, description: str) -> dict:
    return {"long_name": long_name, "units": units, "description": description}


def _stack(batches: dict, field: str) -> np.ndarray:
    return np.stack([getattr(b, field).numpy() for b, _ in batches.values()])


def _inputs(setting, batches: dict) -> dict:
    """The evaluation inputs, enough to recompute every strategy prediction from the file."""
    out = {name: (dims, _stack(batches, name)) for name, dims in setting.input_dims.items()}
    if setting.writes_sequence_task:
        # The true task of each evaluation sequence, for losses against the truth (e.g. KL).
        sequence_task = np.stack([t.tasks[b.task_index].numpy() for b, t in batches.values()])
        out["sequence_task"] = (
            ("split", "sequence", setting.task_dim),
            sequence_task,
            _attrs(
                "task of each sequence", "", "the true task parameters that generated the sequence"
            ),
        )
    return out


def _losses(run: Run, setting, tasks: TaskSet, device, progress) -> dict:
    num_sequences = run.spec.effective_num_loss_sequences
    estimates = []
    for strategy in setting.strategies:
        if progress:
            progress(f"{run.name}: loss of {strategy}")
        gen = generator(run.spec.seed, "loss", run.num_tasks, strategy)
        estimates.append(strategy_loss(setting, tasks, strategy, num_sequences, gen, device))
    complexity = [strategy_complexity(setting, tasks, q) for q in setting.strategies]
    how = f"Monte Carlo over {num_sequences} sequences from the training tasks"
    return {
        "strategy_loss": (
            "strategy",
            [e.mean for e in estimates],
            _attrs("L_Q", "nats", f"expected per-prediction loss; {how}"),
        ),
        "strategy_loss_se": (
            "strategy",
            [e.standard_error for e in estimates],
            _attrs("standard error of L_Q", "nats", how),
        ),
        "strategy_loss_mom": (
            "strategy",
            [e.median_of_means for e in estimates],
            _attrs("median-of-means L_Q", "nats", f"median of 10 group means; {how}"),
        ),
        "strategy_complexity": (
            "strategy",
            complexity,
            _attrs(
                "K_Q",
                "bits",
                "upper bound on Kolmogorov complexity: best lzma/bz2/zlib size of the stripped "
                "source plus that of the parameters",
            ),
        ),
    }


def _evaluation_losses(setting, batches: dict, predictions: np.ndarray) -> np.ndarray:
    """(strategy, split) mean loss of ``predictions`` (Q, split, S, P, O) on each split."""
    losses = np.empty(predictions.shape[:2])
    for j, (batch, split_tasks) in enumerate(batches.values()):
        for q in range(predictions.shape[0]):
            prediction = torch.from_numpy(predictions[q, j]).double()  # (S, P, O)
            losses[q, j] = setting.prediction_loss(prediction, batch, split_tasks).mean().item()
    return losses


def _tasks(setting, tasks: TaskSet) -> dict:
    out = {
        "training_tasks": (
            ("task", setting.task_dim),
            tasks.tasks.numpy(),
            _attrs("training tasks", "", "the D task parameters the run trains on"),
        )
    }
    if tasks.labels is not None:
        out["training_task_labels"] = ("task", tasks.labels.numpy(), _attrs("task labels", "", ""))
    return out

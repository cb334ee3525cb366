"""Train the runs of a spec, record checkpoint predictions in their files, resume after a kill.

Each scalar spec of ``spec.expand()`` trains its num_tasks runs as one ensemble. At every
checkpoint each member's predictions file (``OUT/<run name>.nc``) is rewritten atomically
with the new ``transformer_prediction`` and ``transformer_loss`` and the ``train_loss``
logged so far; then the ensemble's state is saved to ``OUT/.state/``. Files are written
before the state, so after a kill the state never runs ahead of the files: a rerun drops
any checkpoint newer than the state and continues from it, bitwise identically on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from rational_icl.data import ExperimentSpec, Run, setting_class
from rational_icl.errors import RiclError
from rational_icl.formulas import checkpoint_steps
from rational_icl.io import load_netcdf, write_netcdf
from rational_icl.training.checkpoint import load_state, save_state, state_path
from rational_icl.training.ensemble import EnsembleTrainer
from rational_icl.training.evaluation import MemberEvaluation, evaluate, evaluation_inputs
from rational_icl.training.predictions import strategy_dataset
from rational_icl.training.schedule import log_interval

log = logging.getLogger(__name__)  # the CLI prints it (cli/main.py)

FINGERPRINT = "model_fingerprint"  # variable (checkpoint,) of recorded files
RECORDED_MODEL = "recorded_model"  # attribute: the class of the recorded model
TRANSFORMER_VARIABLES = ("transformer_prediction", "transformer_loss", "train_loss", FINGERPRINT)


def run_path(run: Run, out_dir: str | Path) -> Path:
    return Path(out_dir) / f"{run.name}.nc"


def is_finished(run: Run, out_dir: str | Path) -> bool:
    """Whether the run's file holds its last checkpoint, for this very spec."""
    path = run_path(run, out_dir)
    if not path.exists():
        return False
    with _open(path) as ds:
        return (
            "transformer_loss" in ds
            and ds.attrs.get("spec") == run.spec.to_toml()
            and int(ds["checkpoint"][-1]) == run.spec.training.max_steps
        )


def train(spec: ExperimentSpec, out_dir, device="cpu", force=False, progress=True) -> list[Path]:
    """Train every run of a spec (one ensemble per scalar spec); return the files written.

    Finished runs are skipped unless ``force``; an interrupted ensemble resumes from its
    last checkpoint.
    """
    written = []
    for scalar in spec.expand():
        written += train_ensemble(scalar, out_dir, device, force, progress)
    return written


def train_ensemble(
    spec: ExperimentSpec, out_dir, device="cpu", force=False, progress=True
) -> list[Path]:
    """Train the unfinished runs of one scalar spec as one ensemble; return their files."""
    if spec.model.external:
        raise RiclError(
            f'spec model.kind = "external" ({spec.model.name}) is your own model: train it '
            "yourself and record it (docs/byo-model.md, ricl record); ricl train trains ours "
            '(kind = "transformer")'
        )
    out_dir = Path(out_dir)
    runs = [Run(spec, d) for d in dict.fromkeys(spec.num_tasks)]  # a repeated D trains once
    todo = runs if force else [r for r in runs if not is_finished(r, out_dir)]
    if not todo:
        return []
    num_tasks = [r.num_tasks for r in todo]
    trainer = EnsembleTrainer(spec, num_tasks, device)
    state_file = state_path(out_dir, spec, num_tasks)
    if state_file.exists() and not force:
        _resume(trainer, state_file)
        records = [RunRecord.from_file(r, run_path(r, out_dir), trainer.step) for r in todo]
    else:
        records = [RunRecord.fresh(r, run_path(r, out_dir), force, device) for r in todo]
    _train_loop(trainer, records, state_file, progress)
    return [record.path for record in records]


# ---------------------------------------------------------------------------- the loop


def _train_loop(trainer: EnsembleTrainer, records: list, state_file: Path, progress) -> None:
    training = trainer.spec.training
    checkpoints = set(checkpoint_steps(training.max_steps, training.num_checkpoints).tolist())
    interval = log_interval(training.max_steps)
    inputs = evaluation_inputs([record.base for record in records])
    for record in records:  # what the recorder names it (recorder.model_identity)
        record.recorded_model = type(trainer.model).__name__
    loss_sum = torch.zeros(trainer.num_members, dtype=torch.float64, device=trainer.device)
    num_summed = 0
    bar = tqdm(
        total=training.max_steps,
        initial=trainer.step,
        desc=f"train D={','.join(map(str, trainer.num_tasks))}",
        unit="step",
        dynamic_ncols=True,
        disable=None if progress else True,
    )
    with bar:
        while trainer.step < training.max_steps:
            loss_sum += trainer.train_step().double()
            num_summed += 1
            step = trainer.step
            if step % interval == 0 or step in checkpoints:
                mean = (loss_sum / num_summed).cpu()
                _check_finite(mean, trainer, records)
                for record, value in zip(records, mean.tolist(), strict=True):
                    record.log(step, value)
                loss_sum.zero_()
                num_summed = 0
                bar.set_postfix(loss=f"{mean.mean().item():.4f}", refresh=False)
            if step in checkpoints:
                results = evaluate(trainer, inputs)
                for record, result in zip(records, results, strict=True):
                    record.add_checkpoint(step, result)
                    write_netcdf(record.dataset(final=step == training.max_steps), record.path)
                save_state({**trainer.state_dict(), "spec": trainer.spec.to_toml()}, state_file)
            bar.update(1)
    for record in records:
        if record.diverged:
            log.warning(f"warning: {diverged_message(record.dataset(), record.path)}")


def is_diverged(ds: xr.Dataset) -> bool:
    """Whether the run's loss at its last checkpoint (id split) is above the constant
    strategy's, the prior predictive that ignores the context: it learned nothing."""
    final = float(ds["transformer_loss"].isel(checkpoint=-1).sel(split="id"))
    return not final <= float(ds["strategy_loss"].sel(strategy="constant"))  # NaN: diverged


def diverged_message(ds: xr.Dataset, path) -> str:
    final = float(ds["transformer_loss"].isel(checkpoint=-1).sel(split="id"))
    constant = float(ds["strategy_loss"].sel(strategy="constant"))
    return (
        f"run {str(path)!r} diverged: its final transformer_loss {final:.3g} nats (id) is above "
        f"the constant strategy's {constant:.3g}; try a lower training.learning_rate"
    )


def _check_finite(mean_loss: torch.Tensor, trainer: EnsembleTrainer, records: list) -> None:
    bad = (~torch.isfinite(mean_loss)).nonzero().flatten().tolist()
    if not bad:
        return
    e = bad[0]
    last = records[e].checkpoints[-1] if records[e].checkpoints else None
    kept = f"the last good checkpoint (step {last}) is kept" if last else "no checkpoint yet"
    raise RiclError(
        f"training diverged at step {trainer.step}: the loss of num_tasks="
        f"{trainer.num_tasks[e]} is {mean_loss[e].item()}; {kept}; "
        "try a lower training.learning_rate or more training.warmup_steps"
    )


def _resume(trainer: EnsembleTrainer, state_file: Path) -> None:
    state = load_state(state_file, trainer.device)
    if state["spec"] != trainer.spec.to_toml():
        raise RiclError(
            f"checkpoint state {str(state_file)!r} was written for a different spec; "
            "rerun with --force to start over"
        )
    try:
        trainer.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RiclError(
            f"checkpoint state {str(state_file)!r} does not fit this model ({first_line}); "
            "rerun with --force to start over"
        ) from None


# ---------------------------------------------------------------------------- files


@dataclass
class RunRecord:
    """One member's predictions file in memory: the strategy part plus the history so far."""

    path: Path
    base: xr.Dataset  # strategy part (no transformer variables)
    checkpoints: list = field(default_factory=list)
    predictions: list = field(default_factory=list)  # per checkpoint (split, S, P, O) float32
    losses: list = field(default_factory=list)  # per checkpoint (split,)
    logged_steps: list = field(default_factory=list)
    train_losses: list = field(default_factory=list)
    # per checkpoint: a hash of the model's parameters (training/recorder.py), or None where
    # not taken (ricl train's ensemble resumes from its own state instead)
    fingerprints: list = field(default_factory=list)
    recorded_model: str | None = None  # the class of the model the checkpoints are of

    @classmethod
    def fresh(cls, run: Run, path: Path, force: bool, device) -> RunRecord:
        """Start a run, reusing the strategy part of an existing file of the same spec (as
        ``ricl data`` writes it): it is deterministic, so recomputing it would only cost."""
        if path.exists():
            try:
                with _open(path) as ds:
                    if "transformer_loss" in ds and not force:
                        raise RiclError(
                            f"{str(path)!r} already holds transformer predictions but there is "
                            "no checkpoint state to resume from; rerun with --force to retrain"
                        )
                    if ds.attrs.get("spec") == run.spec.to_toml():
                        return cls(path, _strategy_part(ds.load()))
            except RiclError:
                if not force:
                    raise
        return cls(path, strategy_dataset(run, device=device))

    @classmethod
    def from_file(cls, run: Run, path: Path, step: int) -> RunRecord:
        """Resume: the file's history up to the state's step (later checkpoints are dropped)."""
        if not path.exists():
            raise RiclError(
                f"cannot resume: predictions file {str(path)!r} is missing; "
                "rerun with --force to start over"
            )
        with _open(path) as ds:
            ds = ds.load()
        checkpoints = ds["checkpoint"].values if "checkpoint" in ds.coords else np.array([])
        if "transformer_loss" not in ds or step not in checkpoints:
            raise RiclError(
                f"cannot resume: {str(path)!r} has no checkpoint at step {step} of the "
                "checkpoint state; rerun with --force to start over"
            )
        ds = ds.sel(checkpoint=slice(None, step), step=slice(None, step))
        return cls.from_dataset(path, ds)

    @classmethod
    def from_dataset(cls, path: Path, ds: xr.Dataset) -> RunRecord:
        """A loaded predictions dataset with every checkpoint it holds (none after ``ricl
        data``), to append to and write back to ``path``."""
        record = cls(path, _strategy_part(ds))
        if "transformer_loss" not in ds:
            return record
        record.checkpoints = ds["checkpoint"].values.tolist()
        record.predictions = list(ds["transformer_prediction"].values)
        record.losses = list(ds["transformer_loss"].values)
        record.logged_steps = ds["step"].values.tolist()
        record.train_losses = ds["train_loss"].values.tolist()
        record.fingerprints = (
            [int(f) or None for f in ds[FINGERPRINT].values]
            if FINGERPRINT in ds
            else [None] * len(record.checkpoints)
        )
        record.recorded_model = ds.attrs.get(RECORDED_MODEL)
        return record

    def truncated(self, step: int) -> RunRecord:
        """The record up to ``step``: later checkpoints and logged losses dropped."""
        kept = sum(1 for c in self.checkpoints if c <= step)
        logged = sum(1 for s in self.logged_steps if s <= step)
        return RunRecord(
            self.path,
            self.base,
            self.checkpoints[:kept],
            self.predictions[:kept],
            self.losses[:kept],
            self.logged_steps[:logged],
            self.train_losses[:logged],
            self.fingerprints[:kept],
            self.recorded_model,
        )

    def log(self, step: int, train_loss: float) -> None:
        self.logged_steps.append(step)
        self.train_losses.append(train_loss)

    def add_checkpoint(
        self, step: int, result: MemberEvaluation, fingerprint: int | None = None
    ) -> None:
        splits = self.base["split"].values.tolist()
        self.checkpoints.append(step)
        self.fingerprints.append(fingerprint)
        self.predictions.append(np.stack([result.predictions[s] for s in splits]))
        self.losses.append(np.array([result.losses[s] for s in splits]))

    @property
    def diverged(self) -> bool:
        return bool(self.checkpoints) and is_diverged(self.dataset())

    def dataset(self, final: bool = False) -> xr.Dataset:
        """The full predictions file: strategy part plus every checkpoint so far; the
        ``final`` one (the last checkpoint) also gets the ``diverged`` attribute."""
        means = setting_class(self.base.attrs["setting"]).facts.prediction_kind == "mean"
        loss_units = "nats"
        train_units = "squared y units" if means else "nats"
        train_what = "mean squared error of y" if means else "cross-entropy"
        ds = self.base.assign(
            transformer_prediction=(
                ("checkpoint", "split", "sequence", "position", "outcome"),
                np.stack(self.predictions).astype(np.float32),
                {
                    "long_name": "transformer prediction",
                    "units": "y" if means else "probability",
                    "description": "the transformer's prediction at each position from the "
                    "context before it, on the same sequences as strategy_prediction",
                },
            ),
            transformer_loss=(
                ("checkpoint", "split"),
                np.stack(self.losses),
                {
                    "long_name": "transformer loss",
                    "units": loss_units,
                    "description": "mean per-prediction loss on the evaluation sequences, the "
                    "same loss as strategy_loss",
                },
            ),
            train_loss=(
                ("step",),
                np.array(self.train_losses, dtype=np.float64),
                {
                    "long_name": "training loss",
                    "units": train_units,
                    "description": f"{train_what} on fresh training sequences, averaged over "
                    "the steps since the previous logged step",
                },
            ),
        )
        ds = ds.assign_coords(
            checkpoint=np.array(self.checkpoints, dtype=np.int64),
            step=np.array(self.logged_steps, dtype=np.int64),
        )
        if any(f is not None for f in self.fingerprints):
            ds[FINGERPRINT] = (
                ("checkpoint",),
                np.array([f or 0 for f in self.fingerprints], dtype=np.int64),
                {
                    "long_name": "model fingerprint",
                    "units": "",
                    "description": "a hash of the recorded model's parameters at the "
                    "checkpoint (0: not taken); a resumed recording checks the model against "
                    "it",
                },
            )
        if self.recorded_model is not None:
            ds.attrs[RECORDED_MODEL] = self.recorded_model
        if final:
            # 1: the final loss is above the constant strategy's (is_diverged); 0: it is not
            ds.attrs["diverged"] = int(is_diverged(ds))
        return ds


def _strategy_part(ds: xr.Dataset) -> xr.Dataset:
    """A predictions dataset without its transformer variables (as ``ricl data`` writes it)."""
    ds = ds.drop_vars(TRANSFORMER_VARIABLES, errors="ignore")
    # "diverged" is a statement about the transformer, not the strategies
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in ("diverged", RECORDED_MODEL)}
    return ds.drop_dims([d for d in ("checkpoint", "step") if d in ds.dims])


def _open(path: Path) -> xr.Dataset:
    try:
        return load_netcdf(path)
    except (OSError, ValueError) as err:
        raise RiclError(
            f"predictions file {str(path)!r} is unreadable ({type(err).__name__}); move it "
            "away or rerun with --force"
        ) from None

"""Record any model's checkpoints into a run's predictions file (docs/byo-model.md).

The rational analysis reads a model's predictions at checkpoints, never its weights. A
:class:`Recorder` opens one run's predictions file (as ``ricl data`` or ``ricl train`` wrote
it), evaluates any callable ``model(tokens) -> outputs`` on the file's evaluation sequences
of every split and appends that checkpoint with the variables our own training writes
(``transformer_prediction``, ``transformer_loss``, ``train_loss``, and ``diverged`` at the
last step). It reuses the training loop's evaluation and file code (``evaluate_predictor``,
``RunRecord``), so our own transformer recorded here gives what ``ricl train`` records.

The model's contract. It is called once per split with a :class:`~rational_icl.data.Tokens`
of the split's sequences as the setting's token layout makes them (``Setting.tokens``, one
member): ``features`` (S, L, F) float32 or None, ``symbols`` (S, L) int64 or None. It
returns the setting's read-out, raw: logits over the O outcomes where the file's
``prediction_kind`` is ``probabilities`` (the recorder applies the softmax), the predicted
mean of y where it is ``mean``; shaped (S, P, O), or (S, L, O) for every token (the
recorder keeps the layout's ``predicted_tokens``); O = 1 may be left out.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable
from pathlib import Path

import torch
import xarray as xr
from torch import nn

from rational_icl.data import TokenLayout, Tokens, make_setting, spec_from_dict
from rational_icl.errors import RiclError
from rational_icl.formulas import checkpoint_steps
from rational_icl.io import load_netcdf, write_netcdf
from rational_icl.training.evaluation import evaluate_predictor, evaluation_inputs
from rational_icl.training.loop import RunRecord
from rational_icl.training.schedule import log_interval

Model = Callable[[Tokens], torch.Tensor]

# What every refusal to continue a file offers instead.
START_OVER = "or drop its checkpoints with Recorder(path).start_over() (ricl record --start-over)"


class Recorder:
    """Append checkpoints of any model to one run's predictions file.

    Parameters
    ----------
    path : str or Path
        The run's predictions file: its strategy part at least (``ricl data``); checkpoints
        already in it are kept and the recorder continues after the last.
    device : str or torch.device, optional
        Where the tokens go; default: the device of an ``nn.Module``'s first parameter, else
        the CPU.

    Attributes
    ----------
    spec : ExperimentSpec
        The file's scalar spec (its ``spec`` attribute).
    setting : Setting
    layout : TokenLayout
        The read-in and read-out the model must follow.
    checkpoint_steps : list of int
        The spec's checkpoint schedule (what ``ricl train`` records; any increasing step is
        accepted).
    """

    def __init__(self, path: str | Path, device=None):
        self.path = Path(path)
        ds = _load(self.path)
        self.spec = _file_spec(ds, self.path)
        self.setting = make_setting(self.spec)
        model = self.spec.model
        self.layout = self.setting.token_layout(
            self.spec.num_dims, self.spec.context_length, model.regression_tokens or "interleaved"
        )
        self.record = RunRecord.from_dataset(self.path, ds)
        self.inputs = evaluation_inputs([self.record.base])
        training = self.spec.training
        self.checkpoint_steps = checkpoint_steps(
            training.max_steps, training.num_checkpoints
        ).tolist()
        self.log_interval = log_interval(training.max_steps)
        self.device = device

    @property
    def last_checkpoint(self) -> int | None:
        """The step of the file's last checkpoint, or None before the first."""
        return self.record.checkpoints[-1] if self.record.checkpoints else None

    def wants_log(self, step: int) -> bool:
        """Whether ``ricl train`` logs the training loss at ``step`` (every log interval and
        at every checkpoint)."""
        return step % self.log_interval == 0 or step in self.checkpoint_steps

    def log(self, step: int, train_loss: float) -> None:
        """Keep a training loss for the file's ``train_loss`` (written at the next checkpoint).

        A step at or before the last one logged (a resumed training run repeats steps the file
        already holds) is ignored.
        """
        logged = self.record.logged_steps
        if logged and step <= logged[-1]:
            return
        self.record.log(int(step), float(train_loss))

    def record_checkpoint(self, model: Model, step: int, train_loss: float | None = None) -> bool:
        """Evaluate ``model`` on every split and append checkpoint ``step`` to the file.

        Parameters
        ----------
        model : callable or nn.Module
            ``model(tokens) -> outputs`` (module docstring); an ``nn.Module`` is put in
            eval mode for the call and back in its previous mode after.
        step : int
            The training step; after the file's last checkpoint.
        train_loss : float, optional
            The training loss at ``step``, logged as :meth:`log` does.

        Returns
        -------
        bool
            False where the file already holds ``step`` (nothing is written: recording is
            idempotent per step), True where the checkpoint was appended.
        """
        step = int(step)
        if step in self.record.checkpoints:
            return False
        last = self.last_checkpoint
        if last is not None and step < last:
            raise RiclError(
                f"cannot record step {step} into {str(self.path)!r}: it already ends at step "
                f"{last} and checkpoints must increase"
            )
        if step < 1:
            raise RiclError(f"cannot record step {step}: training steps start at 1")
        identity = model_identity(model)
        self._check_same_model(identity)
        if train_loss is not None:
            self.log(step, train_loss)
        try:
            (result,) = evaluate_predictor(self._predictor(model), self.setting, 1, self.inputs)
        except RiclError as err:  # the model's read-out: name the checkpoint it came from
            raise RiclError(f"step {step} for {str(self.path)!r}: {err}") from None
        self.record.add_checkpoint(step, result, fingerprint(model))
        self.record.recorded_model = identity
        write_netcdf(self.record.dataset(final=step == self.spec.training.max_steps), self.path)
        return True

    def continue_from(self, model: Model, step: int) -> None:
        """Check that ``model`` continues the file from ``step``, before training resumes.

        A model that starts at step 0 continues a file without checkpoints. One that
        resumes at a later step must be the model the file recorded at that very step: its
        parameters' :func:`fingerprint` must equal the one stored there. Checkpoints and
        logged losses after ``step`` are then dropped (the resumed training records them
        again), as ``ricl train`` does when it resumes from an earlier state.

        Raises
        ------
        RiclError
            One line, where the model does not continue the file: a fresh model and a file
            with checkpoints, a step the file holds no checkpoint at, or other parameters.
        """
        step, last = int(step), self.last_checkpoint
        if step == 0 and last is None:
            return
        where = f"{str(self.path)!r}"
        resume = "resume the model from its own saved state at a recorded step"
        if step == 0:
            raise RiclError(
                f"{where} already holds checkpoints up to step {last}, but the model starts "
                f"from step 0: {resume} (trainer.train(resume_from_checkpoint=True)), "
                f"{START_OVER}"
            )
        if step not in self.record.checkpoints:
            raise RiclError(
                f"cannot continue {where} from step {step}: it holds no checkpoint there "
                f"(its last: {last}); {resume}, {START_OVER}"
            )
        stored = self.record.fingerprints[self.record.checkpoints.index(step)]
        if stored is None or stored != fingerprint(model):
            why = "none was stored there" if stored is None else "they differ"
            raise RiclError(
                f"cannot continue {where} from step {step}: the model's parameters are not "
                f"those recorded at step {step} ({why}); {resume}, {START_OVER}"
            )
        if step < last:
            self.record = self.record.truncated(step)
            write_netcdf(self.dataset(), self.path)

    def start_over(self) -> None:
        """Drop every checkpoint and logged loss of the file (for a model retrained from
        the start); the file is rewritten with its strategy part only."""
        self.record = RunRecord(self.path, self.record.base)
        write_netcdf(self.record.base, self.path)

    def dataset(self) -> xr.Dataset:
        """The file as it now stands (the last written checkpoint included)."""
        return self.record.dataset(final=self.last_checkpoint == self.spec.training.max_steps)

    # ------------------------------------------------------------------------ internals

    def _check_same_model(self, identity: str) -> None:
        """One run file holds one model: refuse checkpoints of another model's class."""
        recorded = self.record.recorded_model
        if recorded is None or not self.record.checkpoints or recorded == identity:
            return
        raise RiclError(
            f"cannot record {identity} into {str(self.path)!r}: its checkpoints (up to step "
            f"{self.last_checkpoint}) are of {recorded}, and one run file holds one model; "
            f"record into another folder, {START_OVER}"
        )

    def _predictor(self, model: Model):
        """``predict`` for :func:`evaluate_predictor`: a stacked batch (E = 1) to
        probabilities or means (1, S, P, O), float32, as ``EnsembleTrainer.predict`` gives."""
        device = self.device or _module_device(model)
        means = self.setting.facts.prediction_kind == "mean"

        def predict(batch) -> torch.Tensor:
            tokens = self.setting.tokens(batch, self.layout, torch.float32)
            tokens = Tokens(*(None if t is None else t[0].to(device) for t in tokens))
            with _evaluating(model), torch.no_grad():
                output = model(tokens)
            output = read_out(output, self.layout, len(batch.task_index[0])).float()
            if not means:
                output = output.softmax(-1)  # as EnsembleTransformer.predict
            return output[None]  # (1, S, P, O)

        return predict


class RecordHook:
    """The recorder for a hand-written training loop: call it after every optimizer step.

    It logs the training loss where ``ricl train`` logs it (averaged over the steps since
    the previous log) and records the model at the spec's checkpoint steps; it returns True
    where it recorded, the moment to save the loop's state (model and optimizer) to resume
    from. A file that already holds checkpoints is continued only after :meth:`begin` has
    checked the model against it; a call without it is refused in one line.

    Parameters
    ----------
    path : str or Path
        The run's predictions file.
    device : optional
        As for :class:`Recorder`.

    Examples
    --------
    >>> hook = RecordHook("runs/categorical-sequence_K8_T64_D16_mlp4_learned_seed1.nc")
    >>> start = load_my_state(model, optimizer)  # doctest: +SKIP
    >>> hook.begin(model, start)  # 0 for a fresh model  # doctest: +SKIP
    >>> for step, example in enumerate(loader, start=start + 1):  # doctest: +SKIP
    ...     loss = train_step(model, example)
    ...     if hook(step, model, loss.item()):
    ...         save_my_state(model, optimizer, step)
    """

    def __init__(self, path: str | Path, device=None):
        self.recorder = Recorder(path, device)
        self.steps = set(self.recorder.checkpoint_steps)
        self._loss_sum, self._num_losses = 0.0, 0
        self._begun = self.recorder.last_checkpoint is None  # nothing to continue

    def begin(self, model: Model, step: int) -> None:
        """Training starts (step 0) or resumes (the step of the saved state it loaded) with
        ``model``: :meth:`Recorder.continue_from` checks it continues the file."""
        self.recorder.continue_from(model, step)
        self._begun = True

    def __call__(self, step: int, model: Model, train_loss: float | None = None) -> bool:
        """Log and record after optimizer step ``step``; True where a checkpoint was written."""
        if not self._begun:
            raise RiclError(
                f"{str(self.recorder.path)!r} already holds checkpoints up to step "
                f"{self.recorder.last_checkpoint}: call hook.begin(model, step) with the model "
                f"restored from its saved state at a recorded step, {START_OVER}"
            )
        if train_loss is not None:
            self._loss_sum += float(train_loss)
            self._num_losses += 1
        last = self.recorder.last_checkpoint
        if last is not None and step <= last:
            self._loss_sum, self._num_losses = 0.0, 0
            return False
        if self.recorder.wants_log(step) and self._num_losses:
            self.recorder.log(step, self._loss_sum / self._num_losses)
            self._loss_sum, self._num_losses = 0.0, 0
        if step not in self.steps:
            return False
        return self.recorder.record_checkpoint(model, step)


def read_out(output, layout: TokenLayout, num_sequences: int) -> torch.Tensor:
    """A model's outputs as the read-out (S, P, O): every token's (S, L, O) cut to the
    predicted tokens, a missing O = 1 added; a one-line RiclError for any other shape, and
    for NaN or infinite outputs (they would be recorded as predictions of nothing)."""
    if not isinstance(output, torch.Tensor):
        raise RiclError(
            f"the model returned {type(output).__name__}, not a tensor; it must return the "
            "read-out (sequences, predictions, outcomes)"
        )
    length, positions, outcomes = (
        layout.sequence_length,
        layout.num_predictions,
        layout.num_outcomes,
    )
    if output.dim() == 2 and outcomes == 1:
        output = output[..., None]  # (S, P or L) -> (S, P or L, 1)
    if output.dim() == 3 and output.shape[1] == length and length != positions:
        output = output[:, layout.predicted_tokens]  # (S, L, O) -> (S, P, O)
    if tuple(output.shape) != (num_sequences, positions, outcomes):
        raise RiclError(
            f"the model's output has shape {tuple(output.shape)}; the setting's read-out is "
            f"({num_sequences}, {positions}, {outcomes}) (sequences, predictions, outcomes) or "
            f"({num_sequences}, {length}, {outcomes}) for every token"
        )
    bad = int((~torch.isfinite(output)).sum())
    if bad:
        raise RiclError(
            f"the model's output holds {bad} NaN or infinite value(s) of {output.numel()}; "
            "allowed: finite outputs (logits, or means of y)"
        )
    return output.detach().cpu()


def ensemble_member(model: nn.Module, member: int = 0) -> Model:
    """Our own transformer (``EnsembleTransformer``) as a recorder's model: member
    ``member``'s raw read-out, computed for every member (the ensemble runs as one)."""

    def outputs(tokens: Tokens) -> torch.Tensor:
        num_members = model.config.num_members
        stacked = Tokens(
            *(None if t is None else t.expand(num_members, *t.shape) for t in tokens)
        )  # (E, S, L, ...)
        return model.outputs(stacked)[member]  # (S, P, O)

    outputs.module = model  # so the recorder can find its device and eval mode
    return outputs


def model_identity(model) -> str:
    """What a run file says its checkpoints are of: the model's class name (an
    :class:`~rational_icl.training.hf.HFReadOut` adds its backbone's, e.g.
    ``HFReadOut(GPTNeoXForCausalLM)``, through its ``identity`` attribute)."""
    module = _module_of(model)
    target = module if module is not None else model
    return getattr(target, "identity", None) or type(target).__name__


def fingerprint(model) -> int | None:
    """A 63-bit hash of an ``nn.Module``'s parameters (names, dtypes, shapes, bytes), or
    None for a model that is no module.

    Equal fingerprints mean, to within a hash collision, the same parameters: a resumed
    training that loaded the state saved at a checkpoint gives the fingerprint recorded
    there, a freshly initialised model does not.
    """
    module = _module_of(model)
    if module is None:
        return None
    digest = hashlib.blake2b(digest_size=8)
    for name, parameter in module.named_parameters():
        tensor = parameter.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest(), "big") >> 1 or 1  # int64, never 0 ("not taken")


def _module_of(model) -> nn.Module | None:
    """The nn.Module of a model, or of a function that wraps one (``.module``)."""
    module = model if isinstance(model, nn.Module) else getattr(model, "module", None)
    return module if isinstance(module, nn.Module) else None


class _evaluating:
    """Context: an nn.Module (or a function wrapping one) in eval mode, then back."""

    def __init__(self, model):
        self.module = _module_of(model)
        self.was_training = bool(self.module is not None and self.module.training)

    def __enter__(self):
        if self.module is not None:
            self.module.eval()

    def __exit__(self, *exc):
        if self.module is not None:
            self.module.train(self.was_training)


def _module_device(model) -> torch.device:
    module = _module_of(model)
    if module is not None:
        for parameter in module.parameters():
            return parameter.device
    return torch.device("cpu")


def _load(path: Path) -> xr.Dataset:
    if not path.is_file():
        raise RiclError(
            f"predictions file {str(path)!r} does not exist; write it first (ricl data)"
        )
    try:
        ds = load_netcdf(path)
    except (OSError, ValueError) as err:
        raise RiclError(
            f"predictions file {str(path)!r} is unreadable ({type(err).__name__})"
        ) from None
    if "strategy_prediction" not in ds or "spec" not in ds.attrs:
        raise RiclError(f"{str(path)!r} is not a predictions file (no strategy_prediction)")
    return ds


def _file_spec(ds: xr.Dataset, path: Path):
    """The file's scalar spec, from its ``spec`` attribute."""
    try:
        (spec,) = spec_from_dict(tomllib.loads(ds.attrs["spec"])).expand()
    except (tomllib.TOMLDecodeError, ValueError) as err:
        raise RiclError(f"{str(path)!r}: its spec attribute is unreadable ({err})") from None
    return spec


__all__ = ["RecordHook", "Recorder", "ensemble_member", "fingerprint", "model_identity", "read_out"]

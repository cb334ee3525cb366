"""Hugging Face integration: train any HF transformer on a run's tasks and record it.

Optional: needs ``pip install -e '.[hf]'`` (``transformers`` and ``accelerate``); nothing
else in the package imports this module or ``transformers``.

- :class:`HFReadOut` wraps an HF backbone (``GPTNeoXModel``, ``GPTNeoXForCausalLM``, any
  model that takes ``input_ids`` or ``inputs_embeds``) into the setting's read-in and
  read-out, and computes ``ricl train``'s loss for the HF ``Trainer``;
- :func:`training_arguments` maps a spec's ``[training]`` table to ``TrainingArguments``;
- :class:`RecordCallback` records the model into the run's predictions file at the spec's
  checkpoint steps (a :class:`~rational_icl.training.recorder.RecordHook` inside).

docs/byo-model.md walks through an example; ``examples/hf_trainer.py`` runs one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback, TrainingArguments

from rational_icl.data import Run, Tokens
from rational_icl.training.recorder import RecordHook
from rational_icl.training.tasks_dataset import read_out_loss, read_out_of

# the spec's lr_schedule as the Trainer's lr_scheduler_type (both warm up linearly first)
LR_SCHEDULERS = {
    "constant": "constant_with_warmup",
    "cosine": "cosine",
    "inverse-sqrt": "inverse_sqrt",
}


class HFReadOut(nn.Module):
    """An HF backbone with a run's read-in and read-out.

    Symbols alone (categorical) go in as ``input_ids``: the backbone's vocabulary must hold
    the layout's symbols. Features (regression, classification) go in as ``inputs_embeds``
    through a linear read-in, plus an embedding of the symbols where the layout has both.
    Out: the backbone's ``logits`` cut to the O outcomes where it has an LM head, else a
    linear read-out of its ``last_hidden_state``; then the layout's predicted tokens.

    Parameters
    ----------
    backbone : transformers.PreTrainedModel
        Built from a config (e.g. ``GPTNeoXForCausalLM(GPTNeoXConfig(...))``) or loaded from
        a local folder.
    run : Run
        The run it trains on (its setting's token layout and read-out).

    Notes
    -----
    Called with a ``Tokens`` (as the recorder does) it returns the read-out (B, P, O).
    Called with keyword tensors ``features``, ``symbols`` and ``targets`` (as the Trainer
    does with a :class:`~rational_icl.training.tasks_dataset.TaskStream`'s items) it returns
    ``{"loss", "outputs"}``, and in training mode keeps the loss for :meth:`take_train_loss`.
    """

    def __init__(self, backbone: nn.Module, run: Run):
        super().__init__()
        self.backbone = backbone
        read_out = read_out_of(run)
        self.kind, self.layout = read_out.kind, read_out.layout
        hidden = backbone.config.hidden_size
        lay = self.layout
        self.features_in = nn.Linear(lay.features, hidden) if lay.features else None
        self.symbols_in = (
            nn.Embedding(lay.symbols, hidden) if lay.features and lay.symbols else None
        )
        self.has_lm_head = backbone.get_output_embeddings() is not None
        self.read_out = None if self.has_lm_head else nn.Linear(hidden, lay.num_outcomes)
        vocab = backbone.config.vocab_size
        if not lay.features and vocab < lay.symbols:
            raise ValueError(
                f"the backbone's vocab_size {vocab} is below the {lay.symbols} symbols"
            )
        if self.has_lm_head and vocab < lay.num_outcomes:
            raise ValueError(f"the LM head's {vocab} logits are fewer than {lay.num_outcomes}")
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._num_losses = 0
        # what the run file says its checkpoints are of (recorder.model_identity)
        self.identity = f"HFReadOut({type(backbone).__name__})"

    def forward(self, tokens: Tokens | None = None, *, features=None, symbols=None, targets=None):
        if tokens is not None:
            features, symbols = tokens
        outputs = self.outputs(features, symbols)  # (B, P, O)
        if targets is None:
            return outputs
        loss = read_out_loss(outputs, targets, self.kind)
        if self.training:
            # summed where the loss lives: no device sync per step
            self._loss_sum = self._loss_sum.to(loss.device) + loss.detach().double()
            self._num_losses += 1
        return {"loss": loss, "outputs": outputs}

    def outputs(self, features: torch.Tensor | None, symbols: torch.Tensor | None):
        """The read-out (B, P, O) of tokens: features (B, L, F), symbols (B, L)."""
        if features is None:
            result = self.backbone(input_ids=symbols)
        else:
            embeds = self.features_in(features)  # (B, L, H)
            if self.symbols_in is not None:
                embeds = embeds + self.symbols_in(symbols)
            result = self.backbone(inputs_embeds=embeds)
        if self.has_lm_head:
            out = result.logits[..., : self.layout.num_outcomes]  # (B, L, O)
        else:
            out = self.read_out(result.last_hidden_state)  # (B, L, O)
        return out[:, self.layout.predicted_tokens]  # (B, P, O)

    def take_train_loss(self) -> float | None:
        """The mean training loss since the last call (None if no step ran)."""
        if not self._num_losses:
            return None
        mean = float(self._loss_sum) / self._num_losses
        self._loss_sum.zero_()
        self._num_losses = 0
        return mean


def training_arguments(run: Run, output_dir: str | Path, **overrides) -> TrainingArguments:
    """``TrainingArguments`` with the spec's batch size, learning rate and schedule, warm-up,
    weight decay, gradient clip and max_steps; no reporting. ``overrides`` win (e.g.
    ``use_cpu=True``).

    Nothing is saved on a schedule of the Trainer's own: :class:`RecordCallback` saves the
    Trainer's state (model, optimizer, scheduler) into ``output_dir`` at every recorded
    step, which is what a restarted training resumes from
    (``trainer.train(resume_from_checkpoint=True)``); ``save_total_limit=2`` keeps the two
    latest (the one before the last is needed after a kill between the file's write and
    the save).
    """
    training = run.spec.training
    arguments = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        warmup_steps=training.warmup_steps,
        lr_scheduler_type=LR_SCHEDULERS[training.lr_schedule],
        max_grad_norm=training.grad_clip,
        max_steps=training.max_steps,
        bf16=training.precision == "bf16",
        seed=run.spec.seed,
        save_strategy="no",  # RecordCallback saves at the recorded steps
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,  # the TaskStream's keys are the model's arguments
        dataloader_num_workers=0,  # one seeded stream
        label_names=["targets"],
    )
    return TrainingArguments(**(arguments | overrides))


class RecordCallback(TrainerCallback):
    """Record the Trainer's model into a run's predictions file at the spec's checkpoints.

    Parameters
    ----------
    path : str or Path
        The run's predictions file (``ricl data`` writes it).
    device : optional
        As for :class:`~rational_icl.training.recorder.Recorder`.

    save : bool
        Save the Trainer's state at every recorded step, right after the file is written
        (default), so that a restarted training resumes where the file ends.

    The model must be called as ``model(tokens) -> outputs`` (an :class:`HFReadOut` is);
    an :class:`HFReadOut` also gives the training loss for the file's ``train_loss``.

    A file that already holds checkpoints is continued only by a Trainer that resumed from
    its saved state at one of them (``trainer.train(resume_from_checkpoint=True)``): when
    training begins, the model's parameters are checked against those recorded at the
    Trainer's step (:meth:`~rational_icl.training.recorder.Recorder.continue_from`), and
    anything else (a fresh model, another state) is refused in one line that names
    ``start_over()``. Checkpoints after the resumed step are recorded again.
    """

    def __init__(self, path: str | Path, device=None, save: bool = True):
        self.hook = RecordHook(path, device)
        self.save = save

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:  # the writer checks (and may rewind) the file
            self.hook.begin(model, state.global_step)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        take = getattr(model, "take_train_loss", None)
        step = state.global_step
        wants = self.hook.recorder.wants_log(step) or step in self.hook.steps
        loss = take() if take is not None and wants else None
        if state.is_world_process_zero:  # one writer per file when the Trainer is distributed
            self.hook(step, model, loss)
        if self.save and step in self.hook.steps:
            control.should_save = True  # the Trainer saves after this callback, file first
        return control

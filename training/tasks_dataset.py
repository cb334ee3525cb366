"""One run's training sequences as a PyTorch dataset, for models trained outside ``ricl``.

:class:`TaskStream` is an ``IterableDataset`` over the very stream ``ricl train`` draws for
a run: the run's D training tasks (``training_tasks``) and its seeded sequence stream
(``generator(seed, "train", D)``), a batch of ``training.batch_size`` sequences per step. It
yields the setting's tokens (``Setting.tokens``: the read-in our transformer uses) and
targets, and can start at any step, so a resumed loop sees the batches it would have seen.

:func:`read_out_of` says what a model must output for the setting (its read-out) and
:func:`read_out_loss` is the training loss on it, the one ``ricl train`` minimises:

=======================  ==========================  ==========================================
setting                  tokens (L per sequence)     read-out (P predictions of O numbers)
=======================  ==========================  ==========================================
categorical-sequence     symbols (L = T): a start    logits over the K symbols at every token
                         symbol K, then the first    (P = T, O = K); target: the next symbol
                         T - 1 draws
linear-regression        features (L = 2T - 1):      the mean of y_t at each x_t token (P = T,
                         x_1, y_1, ..., x_T          O = 1, the even tokens); squared error
                         (``paired``: y tokens
                         carry their x too)
classification           features (L = T) + symbols  logits over the 2 labels at the query, the
                         (labels 0, 1, "masked" 2    last token (P = 1, O = 2); cross-entropy
                         at the query)
=======================  ==========================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import IterableDataset, get_worker_info

from rational_icl.data import Run, TokenLayout, generator, make_setting
from rational_icl.errors import RiclError
from rational_icl.modeling.model import stack_batches
from rational_icl.training.predictions import training_tasks


@dataclass(frozen=True)
class ReadOut:
    """What a model must output for a setting.

    Attributes
    ----------
    kind : str
        ``logits`` (over the outcomes; trained on cross-entropy) or ``mean`` (the predicted
        mean of y; trained on squared error).
    layout : TokenLayout
        Tokens in (``sequence_length`` L, ``features``, ``symbols``) and predictions out
        (``predicted_tokens`` of the L tokens, ``num_predictions`` P of ``num_outcomes`` O).
    """

    kind: str
    layout: TokenLayout

    def describe(self) -> str:
        """One line, e.g. for a log."""
        lay = self.layout
        read_in = " + ".join(
            part
            for part in (
                f"{lay.features} features per token" if lay.features else "",
                f"one of {lay.symbols} symbols per token" if lay.symbols else "",
            )
            if part
        )
        return (
            f"{lay.sequence_length} tokens of {read_in} in; {lay.num_predictions} predictions "
            f"of {lay.num_outcomes} {self.kind} out"
        )


def read_out_of(run: Run) -> ReadOut:
    """The read-out a model must give for a run's setting (module docstring)."""
    spec = run.spec
    setting = make_setting(spec)
    layout = setting.token_layout(
        spec.num_dims, spec.context_length, spec.model.regression_tokens or "interleaved"
    )
    kind = "mean" if setting.facts.prediction_kind == "mean" else "logits"
    return ReadOut(kind, layout)


def read_out_loss(outputs: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean training loss of outputs (B, P, O) against targets (B, P), as ``ricl train``
    computes it: cross-entropy (nats) for logits, the mean squared error of y for means."""
    outputs = outputs.float()
    if kind == "mean":
        return (outputs[..., 0] - targets.float()).square().mean()
    return torch.nn.functional.cross_entropy(
        outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
    )


class TaskStream(IterableDataset):
    """The training sequences of one run, as ``ricl train`` draws them.

    Parameters
    ----------
    run : Run
        A run of a scalar spec (``spec.expand()``), e.g. ``Run(spec, num_tasks)``.
    start_step : int
        Steps already trained: the stream skips their batches (a resumed loop continues
        with the batch it would have drawn next).
    batched : bool
        True: yield one dict per step, each value with a leading batch dimension B =
        ``training.batch_size``. False (default): yield the B sequences of each step one by
        one, so a ``DataLoader(stream, batch_size=B)`` (or the HF ``Trainer`` with
        ``per_device_train_batch_size=B``) rebuilds the same batches.
    num_steps : int, optional
        Steps to yield; default: up to ``training.max_steps``.

    Yields
    ------
    dict of str to tensor
        ``features`` (B, L, F) float32 where the layout has features, ``symbols`` (B, L)
        int64 where it has symbols, ``targets`` (B, P): int64 symbols or labels, float32 y
        (without the B where ``batched`` is False).
    """

    def __init__(self, run: Run, start_step: int = 0, batched: bool = False, num_steps=None):
        super().__init__()
        max_steps = run.spec.training.max_steps
        if not 0 <= start_step <= max_steps:
            raise RiclError(f"start_step {start_step}: allowed 0 to max_steps ({max_steps})")
        self.run, self.start_step, self.batched = run, int(start_step), batched
        self.num_steps = max_steps - self.start_step if num_steps is None else int(num_steps)
        self.read_out = read_out_of(run)

    def __len__(self) -> int:
        """Items per pass: steps, or sequences where not ``batched``."""
        size = 1 if self.batched else self.run.spec.training.batch_size
        return self.num_steps * size

    def __iter__(self):
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            # each worker would replay the same stream: the batches would repeat
            raise RiclError("TaskStream is one seeded stream: use a DataLoader with num_workers=0")
        for example in self.batches():
            if self.batched:
                yield example
            else:
                size = next(iter(example.values())).shape[0]
                for i in range(size):
                    yield {name: value[i] for name, value in example.items()}

    def batches(self):
        """One dict per step, from ``start_step`` on (see the class docstring)."""
        spec, run = self.run.spec, self.run
        setting = make_setting(spec)
        tasks = training_tasks(run)
        gen = generator(spec.seed, "train", run.num_tasks)
        size = spec.training.batch_size
        for _ in range(self.start_step):
            setting.sample_batch(tasks, size, gen)  # the draws of the steps already trained
        for _ in range(self.num_steps):
            yield batch_example(
                setting, self.read_out.layout, setting.sample_batch(tasks, size, gen)
            )


def batch_example(setting, layout: TokenLayout, batch) -> dict[str, torch.Tensor]:
    """A setting's batch as the tokens a model reads and the targets it predicts."""
    tokens = setting.tokens(stack_batches([batch]), layout, torch.float32)  # one member
    out = {}
    if tokens.features is not None:
        out["features"] = tokens.features[0]  # (B, L, F)
    if tokens.symbols is not None:
        out["symbols"] = tokens.symbols[0]  # (B, L)
    targets = batch.target  # (B, P)
    out["targets"] = targets.float() if targets.is_floating_point() else targets
    return out

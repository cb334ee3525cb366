"""One optimisation step of an ensemble: data, forward, backward, per-member clip, AdamW.

The E members of an ensemble are the runs of one scalar spec (one per num_tasks value).
Member e draws its initial parameters from seed_for(seed, "init", D_e), trains on the task
set every other stage sees (training_tasks(run)) and draws its sequences from its own stream
generator(seed, "train", D_e). So a member follows the trajectory it would follow alone.
"""

from __future__ import annotations

import contextlib

import torch

from rational_icl.data import ExperimentSpec, Run, generator, make_setting, seed_for
from rational_icl.modeling.model import EnsembleTransformer, TransformerConfig, stack_batches
from rational_icl.training.predictions import training_tasks
from rational_icl.training.schedule import learning_rate


class EnsembleTrainer:
    """The model, optimizer and data streams of the runs of one scalar spec.

    Parameters
    ----------
    spec : ExperimentSpec
        A scalar spec (one value per grid field).
    num_tasks : sequence of int, optional
        The members' task-set sizes D; default ``spec.num_tasks``.
    device : str or torch.device
    """

    def __init__(self, spec: ExperimentSpec, num_tasks=None, device="cpu"):
        num_tasks = list(spec.num_tasks if num_tasks is None else num_tasks)
        if not num_tasks or len(set(num_tasks)) != len(num_tasks):
            raise ValueError(f"num_tasks must be distinct values, got {num_tasks}")
        self.spec, self.num_tasks, self.device = spec, num_tasks, torch.device(device)
        self.runs = [Run(spec, d) for d in num_tasks]
        self.setting = make_setting(spec)
        self.tasks = [training_tasks(run) for run in self.runs]
        self.data_generators = [generator(spec.seed, "train", d) for d in num_tasks]
        config = TransformerConfig.from_spec(spec, num_members=len(num_tasks))
        seeds = [seed_for(spec.seed, "init", d) for d in num_tasks]
        self.model = EnsembleTransformer(config, seeds).to(self.device)
        training = spec.training
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=training.learning_rate,
            weight_decay=training.weight_decay,
            foreach=True,  # one op per update stage over all tensors; the CPU default loops
        )
        self.step = 0

    @property
    def num_members(self) -> int:
        return len(self.num_tasks)

    def autocast(self):
        """bf16 autocast for the forward pass when the spec asks for it."""
        if self.spec.training.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def sample(self):
        """Fresh training sequences for every member: (stacked batch, targets (E, B, P))."""
        size = self.spec.training.batch_size
        batches = [
            self.setting.sample_batch(tasks, size, gen)
            for tasks, gen in zip(self.tasks, self.data_generators, strict=True)
        ]
        batch = stack_batches(batches).to(self.device)
        targets = torch.stack([b.target for b in batches]).to(self.device)
        if targets.is_floating_point():
            targets = targets.float()
        return batch, targets

    def train_step(self) -> torch.Tensor:
        """One optimizer step of every member; returns the members' losses (E,), detached."""
        training = self.spec.training
        self.step += 1
        rate = learning_rate(
            self.step,
            training.learning_rate,
            training.warmup_steps,
            training.lr_schedule,
            training.max_steps,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        batch, targets = self.sample()
        with self.autocast():
            output, _ = self.model(batch)
        loss = self.model.loss(output, targets)  # (E,), float32 outside autocast
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # members share no parameters: each gets its own gradient
        clip_grad_norm_per_member(self.model.parameters(), training.grad_clip)
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def predict(self, batch) -> torch.Tensor:
        """Probabilities or predicted means (E, B, P, O), float32, for a stacked batch."""
        with self.autocast():
            return self.model.predict(batch.to(self.device)).float()

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bitwise identically (on CPU)."""
        return {
            "step": self.step,
            "num_tasks": list(self.num_tasks),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_generators": [g.get_state() for g in self.data_generators],
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["num_tasks"]) != self.num_tasks:
            raise ValueError(f"state is for num_tasks {state['num_tasks']}, not {self.num_tasks}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for gen, rng_state in zip(self.data_generators, state["data_generators"], strict=True):
            gen.set_state(rng_state.cpu())  # data streams live on the CPU
        self.step = int(state["step"])


def clip_grad_norm_per_member(parameters, max_norm: float) -> torch.Tensor:
    """Scale each member's gradient to norm <= max_norm; members are the leading dimension.

    Returns the members' gradient norms before clipping, (E,) float64 (summed in float64 so
    that a member's norm does not depend on how many members share the tensor).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = [torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=torch.float64) for g in grads]
    norm = torch.stack(norms).square().sum(0).sqrt()  # (E,)
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # as torch.nn.utils.clip_grad_norm_
    for g in grads:
        g.mul_(scale.to(g.dtype).view(-1, *([1] * (g.dim() - 1))))
    return norm

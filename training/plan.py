"""What a job will cost before it runs: runs, ensembles, member-steps, memory, disk and time.

``ricl run PRESET --plan`` prints ``format_plan(plan_job(specs))`` and writes nothing into
the output folder. The numbers come from short measurements on this machine, not from
constants:

- disk for predictions: one predictions file per distinct file shape (setting, K, T,
  sequences, checkpoints) is built by the package's own code (its real strategy part, its
  checkpoints and training-loss log) and written compressed to a temporary folder, with
  the transformer predictions counted at the compression measured on trained ones
  (``PREDICTION_COMPRESSION``: their mantissas are noise, which no synthetic stand-in
  reproduces); other num_tasks values add their training tasks;
- disk for the fit: the size of each group of ``fit.nc`` from its cells and draws, at the
  compression measured on the tiny-categorical main job's fit (``FIT_COMPRESSION``);
- time: a few training steps of the cheapest and of the costliest ensemble (by a FLOP
  count), timed after two untimed steps (CPU: the process's CPU time, so the estimate is
  for an idle machine and the load stretches it), interpolated linearly in FLOPs for the others;
  checkpoint evaluation is counted as forward passes over the evaluation sequences;
- peak memory: of the costliest ensemble's probe (CUDA: peak allocated; CPU: growth of
  the peak resident set), an upper bound for the others.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from rational_icl.data import ExperimentSpec, Run, setting_class
from rational_icl.formulas import checkpoint_steps
from rational_icl.io import write_netcdf
from rational_icl.modeling.model import TransformerConfig
from rational_icl.training.ensemble import EnsembleTrainer
from rational_icl.training.evaluation import MemberEvaluation
from rational_icl.training.loop import RunRecord
from rational_icl.training.predictions import strategy_dataset
from rational_icl.training.schedule import log_interval

# Compressed / raw bytes of transformer_prediction in the tiny-categorical main job's run
# files (10 runs x 40 checkpoints, zlib level 1 with shuffle): 78.7 MB of 104.9 MB.
PREDICTION_COMPRESSION = 0.75
# Compressed / raw bytes of each fit.nc part, measured on the tiny-categorical main job
# (NUTS 4 x 1000, 800 cells): per-cell float32 draws, posterior predictive, log likelihood.
FIT_COMPRESSION = {"derived": 0.68, "predictive": 0.78, "log_likelihood": 0.83}
_FIT_OVERHEAD_BYTES = 80_000  # groups, coordinates, attributes: HDF5 metadata of a fit
_FIT_SCALARS_PER_DRAW = 12  # alpha, beta, gamma, sigma x 2 and NUTS's sample_stats
_PROBE_LOSS_SEQUENCES = 16  # the probe's strategy losses: their value does not size a file
_EVALUATION_COST = 1 / 3  # a forward pass costs about a third of a training step


@dataclass(frozen=True)
class EnsemblePlan:
    """One ensemble (one scalar spec): its members, steps and estimated cost."""

    name: str
    members: int
    max_steps: int
    flops_per_step: float
    seconds: float = math.nan


@dataclass(frozen=True)
class JobPlan:
    runs: int
    ensembles: list[EnsemblePlan]
    member_steps: int
    peak_memory_bytes: int
    memory_of: str
    predictions_bytes: int
    state_bytes: int
    fit_bytes: int
    fit_cells: int
    seconds: float
    probes: list[tuple[str, float]]  # (ensemble, seconds per step) measured
    device: str
    load: float  # 1-minute load average at the probes


def plan_job(
    specs: list[ExperimentSpec],
    device: str = "cpu",
    *,
    chains: int = 4,
    draws: int = 1000,
    pointwise_draws: int = 1000,
    probe_steps: int = 5,
) -> JobPlan:
    """Measure and estimate the cost of running ``specs`` (one fit per spec)."""
    scalars = [s for spec in specs for s in spec.expand()]
    ensembles = [_ensemble(s) for s in scalars]
    runs = [Run(s, d) for s in scalars for d in dict.fromkeys(s.num_tasks)]
    with tempfile.TemporaryDirectory(prefix="ricl-plan-") as folder:
        file_bytes = _predictions_bytes(runs, Path(folder))
    fit_bytes, cells = 0, 0
    for spec in specs:
        size, n = _fit_bytes(spec, chains, draws, pointwise_draws)
        fit_bytes, cells = fit_bytes + size, cells + n
    cheapest = min(range(len(scalars)), key=lambda i: ensembles[i].flops_per_step)
    costliest = max(range(len(scalars)), key=lambda i: ensembles[i].flops_per_step)
    probed = {}
    peak, memory_of = 0, ensembles[costliest].name
    for i in dict.fromkeys([costliest, cheapest]):  # costliest first: its memory peak
        seconds, memory = _probe(scalars[i], device, probe_steps)
        probed[i] = seconds
        if i == costliest:
            peak = memory
    seconds_per_step = _interpolate(ensembles, probed)
    timed = [
        dataclasses.replace(e, seconds=step * _steps_with_evaluation(s))
        for e, s, step in zip(ensembles, scalars, seconds_per_step, strict=True)
    ]
    return JobPlan(
        runs=len(runs),
        ensembles=timed,
        member_steps=sum(e.members * e.max_steps for e in ensembles),
        peak_memory_bytes=peak,
        memory_of=memory_of,
        predictions_bytes=sum(file_bytes.values()),
        state_bytes=sum(_state_bytes(s) for s in scalars),
        fit_bytes=fit_bytes,
        fit_cells=cells,
        seconds=sum(e.seconds for e in timed),
        probes=[(ensembles[i].name, s) for i, s in probed.items()],
        device=str(device),
        load=os.getloadavg()[0],
    )


def format_plan(plan: JobPlan) -> str:
    """The plan as the lines ``ricl run --plan`` prints."""
    members = sorted({e.members for e in plan.ensembles})
    member_text = "/".join(str(m) for m in members)
    probes = "; ".join(f"{name}: {s:.3g} s/step" for name, s in plan.probes)
    lines = [
        f"runs                   {plan.runs}",
        f"ensembles              {len(plan.ensembles)} ({member_text} members each)",
        f"member-steps           {plan.member_steps:,}",
        f"peak memory/ensemble   {_bytes(plan.peak_memory_bytes)} "
        f"(measured on the costliest, {plan.memory_of}; the others need less)",
        f"disk: predictions      {_bytes(plan.predictions_bytes)} ({plan.runs} files)"
        f" + {_bytes(plan.state_bytes)} training states",
        f"disk: fit              {_bytes(plan.fit_bytes)} ({plan.fit_cells:,} cells; "
        "an upper bound: --drop-early fits fewer)",
        f"time on {plan.device:<14} {_duration(plan.seconds)} (training and checkpoint "
        f"evaluation; probe {probes})",
    ]
    if not plan.device.startswith("cuda"):
        stretch = max(1.0, plan.load / (os.cpu_count() or 1))
        lines.append(
            f"                       that is CPU time of one thread, the wall time on an idle "
            f"machine; at the load now ({plan.load:.1f} on {os.cpu_count()} cores) about "
            f"{_duration(plan.seconds * stretch)}"
        )
    if plan.device.startswith("cuda"):
        rate = plan.member_steps / (plan.seconds / 3600) if plan.seconds else math.nan
        lines.append(
            f"per GPU-hour           {rate:,.0f} member-steps; "
            f"{plan.seconds / 3600:.2f} GPU-hours in all"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- disk


def _predictions_bytes(runs: list[Run], folder: Path) -> dict[Run, int]:
    """Bytes of each run's predictions file: one file written per distinct file shape,
    plus the training tasks of the other num_tasks values."""
    probes = {}  # shape -> (num_tasks of the probe, bytes, bytes per extra task)
    sizes = {}
    for run in sorted(runs, key=lambda r: r.num_tasks):
        key = _file_shape(run.spec)
        if key not in probes:
            probes[key] = _probe_file(run, folder)
        probe_tasks, size, per_task = probes[key]
        sizes[run] = size + (run.num_tasks - probe_tasks) * per_task
    return sizes


def _file_shape(spec: ExperimentSpec) -> tuple:
    """What sizes a predictions file, besides num_tasks."""
    t, e = spec.training, spec.evaluation
    return (spec.setting, spec.num_dims, spec.context_length, e.num_sequences, t.max_steps,
            t.num_checkpoints)  # fmt: skip


def _probe_file(run: Run, folder: Path) -> tuple[int, int, float]:
    """Write one representative predictions file; (num_tasks, bytes, raw bytes per task)."""
    spec = run.spec
    cheap = dataclasses.replace(
        spec,
        evaluation=dataclasses.replace(spec.evaluation, num_loss_sequences=_PROBE_LOSS_SEQUENCES),
    )
    path = folder / f"{run.name}.nc"
    record = RunRecord(path, strategy_dataset(Run(cheap, run.num_tasks)))
    # the full spec text, as a real file has it
    record.base.attrs["spec"] = spec.to_toml()
    training = spec.training
    rng = np.random.default_rng(0)
    splits = record.base["split"].values.tolist()
    shape = record.base["strategy_prediction"].shape[2:]  # (S, P, O)
    zeros = np.zeros((len(splits), *shape), np.float32)  # stored as next to nothing
    for step in checkpoint_steps(training.max_steps, training.num_checkpoints).tolist():
        prediction = dict(zip(splits, zeros, strict=True))
        record.add_checkpoint(step, MemberEvaluation(prediction, dict.fromkeys(splits, 1.0)))
    interval = log_interval(training.max_steps)
    logged = set(range(interval, training.max_steps + 1, interval)) | set(record.checkpoints)
    for step in sorted(logged):
        record.log(step, float(rng.random()))
    dataset = record.dataset()
    write_netcdf(dataset, path)
    predictions = dataset["transformer_prediction"].nbytes * PREDICTION_COMPRESSION
    per_task = sum(v.nbytes for v in record.base.data_vars.values() if "task" in v.dims)
    return run.num_tasks, round(path.stat().st_size + predictions), per_task / run.num_tasks


def _fit_bytes(spec: ExperimentSpec, chains: int, draws: int, pointwise: int) -> tuple[int, int]:
    """Estimated bytes of a spec's fit.nc and its number of cells (all checkpoints)."""
    scalars = spec.expand()
    training = spec.training
    checkpoints = len(checkpoint_steps(training.max_steps, training.num_checkpoints))
    splits = len(setting_class(spec.setting).splits)
    grid = sum(len(set(s.num_tasks)) for s in scalars) * checkpoints  # (config, D, N)
    cells = grid * splits
    kept = chains * len(range(0, draws, math.ceil(chains * draws / pointwise)))
    # weight, log odds: float32 (expected_weight is not stored: write_fit)
    derived = chains * draws * grid * 2 * 4
    predictive = kept * cells * 4
    log_likelihood = kept * round(0.8 * 0.8 * cells) * 8  # the fitted 80% x 80%
    per_draw = chains * draws * _FIT_SCALARS_PER_DRAW * 8  # float64
    size = (
        per_draw * FIT_COMPRESSION["log_likelihood"]
        + derived * FIT_COMPRESSION["derived"]
        + predictive * FIT_COMPRESSION["predictive"]
        + log_likelihood * FIT_COMPRESSION["log_likelihood"]
        + _FIT_OVERHEAD_BYTES
    )
    return round(size), cells


def _state_bytes(spec: ExperimentSpec) -> int:
    """A training state: parameters and the two AdamW moments, float32, every member."""
    members = len(set(spec.num_tasks))
    return 3 * 4 * _parameters_per_member(spec) * members


# ---------------------------------------------------------------------------- time, memory


def _ensemble(spec: ExperimentSpec) -> EnsemblePlan:
    members = len(set(spec.num_tasks))
    config = TransformerConfig.from_spec(spec)
    tokens = spec.training.batch_size * config.sequence_length
    # 6 FLOPs per parameter per token (forward and backward), plus attention's scores and
    # mixing, 12 L T H per token
    per_member = tokens * (
        6 * _parameters_per_member(spec)
        + 12 * config.num_layers * config.sequence_length * config.hidden_size
    )
    return EnsemblePlan(
        name=Run(spec, spec.num_tasks[0]).name.replace(f"_D{spec.num_tasks[0]}_", "_"),
        members=members,
        max_steps=spec.training.max_steps,
        flops_per_step=float(members * per_member),
    )


def _parameters_per_member(spec: ExperimentSpec) -> int:
    from rational_icl.modeling.model import EnsembleTransformer

    model = EnsembleTransformer(TransformerConfig.from_spec(spec), [0])
    return sum(p.numel() for p in model.parameters())


def _steps_with_evaluation(spec: ExperimentSpec) -> float:
    """Training steps plus checkpoint evaluations, in training-step equivalents."""
    training = spec.training
    checkpoints = len(checkpoint_steps(training.max_steps, training.num_checkpoints))
    splits = len(setting_class(spec.setting).splits)
    batches = splits * spec.evaluation.num_sequences / training.batch_size
    return training.max_steps + checkpoints * batches * _EVALUATION_COST


def _probe(spec: ExperimentSpec, device: str, steps: int) -> tuple[float, int]:
    """Seconds per training step (median of ``steps``, after two untimed; CPU time on
    CPU) and peak bytes."""
    device = torch.device(device)
    before = psutil.Process().memory_info().rss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = EnsembleTrainer(spec, list(dict.fromkeys(spec.num_tasks)), device)
    for _ in range(2):  # allocation, kernel selection
        trainer.train_step().cpu()
    # On CPU the process's own CPU time: the wall time on an idle machine (cores shared
    # with other jobs stretch the wall time by about load / cores, which the plan prints)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = []
    for _ in range(steps):
        start = clock()
        trainer.train_step().cpu()  # .cpu() waits for the device
        times.append(clock() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:  # ru_maxrss is in KiB on Linux
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    del trainer
    return float(np.median(times)), peak


def _interpolate(ensembles: list[EnsemblePlan], probed: dict[int, float]) -> list[float]:
    """Seconds per step of every ensemble: linear in FLOPs through the probed ones."""
    (i, t_i), (j, t_j) = list(probed.items())[0], list(probed.items())[-1]
    f_i, f_j = ensembles[i].flops_per_step, ensembles[j].flops_per_step
    if f_i == f_j:
        return [t_i * e.flops_per_step / f_i for e in ensembles]
    slope = (t_i - t_j) / (f_i - f_j)
    return [max(t_j + slope * (e.flops_per_step - f_j), 0.0) for e in ensembles]


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.3g} TB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

"""Run a sweep on Dask distributed: one work unit per ensemble, retried, summarised, locked.

A spec expands into scalar specs (one per model configuration, ``spec.expand()``); each one
is a *work unit*: its num_tasks runs train as one ensemble (``train_ensemble``). Units run
as Dask tasks on an embedded ``LocalCluster`` or on any scheduler address, so the same
command goes from a laptop to a cluster. Every unit is idempotent: finished runs are
skipped and a half-trained ensemble resumes from ``OUT/.state/``, so a unit lost with its
worker, or rerun after a crash, continues where it stopped. Workers must see ``OUT`` at the
same path (a shared file system on a cluster).

A lock file ``OUT/.ricl-sweep.lock`` names the sweep writing the folder (host, pid, start
time); a second sweep on the same folder refuses. A lock whose holder is a dead process on
this host is stale and taken over.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from rational_icl.data import ExperimentSpec, Run
from rational_icl.errors import RiclError
from rational_icl.io import LOCK_NAME, folder_lock  # noqa: F401 (LOCK_NAME: public name)
from rational_icl.training.checkpoint import STATE_FOLDER, ensemble_name, state_path
from rational_icl.training.loop import is_finished, train_ensemble

STATUSES = ("done", "resumed", "skipped", "failed")


@dataclass(frozen=True)
class WorkUnit:
    """One scalar spec: its num_tasks runs train together as one ensemble."""

    spec: ExperimentSpec

    @property
    def name(self) -> str:
        return ensemble_name(self.spec, self.spec.num_tasks)

    @property
    def runs(self) -> list[Run]:
        return [Run(self.spec, d) for d in self.spec.num_tasks]


@dataclass(frozen=True)
class UnitOutcome:
    """What happened to one work unit: ``status`` is one of ``STATUSES``."""

    unit: str
    status: str
    attempts: int
    num_runs: int
    seconds: float = 0.0
    error: str = ""


def work_units(specs: ExperimentSpec | list[ExperimentSpec]) -> list[WorkUnit]:
    """One unit per scalar spec of every spec; refuses grids whose runs share a file name."""
    specs = [specs] if isinstance(specs, ExperimentSpec) else list(specs)
    units = [WorkUnit(scalar) for spec in specs for scalar in spec.expand()]
    owner: dict[str, str] = {}
    for unit in units:
        for run in unit.runs:
            if run.name in owner:
                raise RiclError(
                    f"two work units would write the same run file {run.name}.nc "
                    f"({owner[run.name]} and {unit.name}): the run file name encodes only "
                    "setting, num_dims, context_length, num_tasks, mlp_expansion_factor and "
                    "seed; sweep the other keys into separate output folders"
                )
            owner[run.name] = unit.name
    return units


def run_sweep(
    specs: ExperimentSpec | list[ExperimentSpec],
    out_dir: str | Path,
    *,
    scheduler: str = "local",
    workers: int | None = None,
    retries: int = 2,
    device: str | None = None,
    processes: bool = True,
    worker_timeout: float = 60.0,
    log=print,
) -> list[UnitOutcome]:
    """Train every work unit of ``specs`` into ``out_dir`` on Dask; return one outcome per unit.

    Parameters
    ----------
    specs : ExperimentSpec or list of ExperimentSpec
        The experiment(s); every scalar spec of ``spec.expand()`` is one work unit.
    out_dir : str or Path
        Output folder, created if missing; locked for the duration of the sweep.
    scheduler : str, default "local"
        ``"local"`` for an embedded ``LocalCluster``, or a Dask scheduler address such as
        ``tcp://10.0.0.5:8786`` (an existing cluster, e.g. one from dask-jobqueue).
    workers : int, optional
        LocalCluster workers (default: one per unit, at most the number of CPUs). Ignored
        with a scheduler address.
    retries : int, default 2
        Extra attempts for a unit that raised (or whose worker died too often); afterwards
        it is reported as failed and the rest of the sweep goes on.
    device : str, optional
        Torch device for training; default: each worker uses CUDA if it has it, else CPU.
    processes : bool, default True
        LocalCluster workers as processes (True) or threads of this process (False).
    worker_timeout : float, default 60
        Seconds to wait for a scheduler address to have at least one worker.
    log : callable, default print
        Receives one line per finished, retried or failed unit.

    Returns
    -------
    list of UnitOutcome
        In unit order. Check ``status == "failed"``; this function does not raise for them.
    """
    if retries < 0:
        raise RiclError(f"retries must be >= 0, got {retries}")
    if workers is not None and workers < 1:
        raise RiclError(f"workers must be >= 1, got {workers}")
    if scheduler != "local" and ":" not in scheduler:
        raise RiclError(
            f"scheduler {scheduler!r} is neither 'local' nor a Dask scheduler address "
            "like tcp://HOST:PORT"
        )
    units = work_units(specs)
    out_dir = Path(out_dir).resolve()  # workers may run in another working directory
    with sweep_lock(out_dir):
        _remove_orphaned_temporary_files(out_dir)
        workers = workers or max(1, min(len(units), os.cpu_count() or 1))
        with _client(scheduler, workers, processes, worker_timeout) as client:
            outcomes = _run_units(client, units, out_dir, retries, device, log)
        _remove_orphaned_temporary_files(out_dir)
    return outcomes


def format_summary(outcomes: list[UnitOutcome]) -> str:
    """The sweep's table: one line per unit, then counts per status and the failures."""
    width = max([len("unit"), *(len(o.unit) for o in outcomes)])
    lines = [f"{'unit':<{width}}  {'status':<8} {'attempts':>8} {'runs':>5} {'seconds':>8}"]
    for o in outcomes:
        lines.append(
            f"{o.unit:<{width}}  {o.status:<8} {o.attempts:>8} {o.num_runs:>5} {o.seconds:>8.1f}"
        )
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
    lines.append(", ".join(f"{s} {n}" for s, n in counts.items()))
    lines += [f"failed: {o.unit}: {o.error}" for o in outcomes if o.status == "failed"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the unit


def _train_unit(spec: ExperimentSpec, out_dir: str, device: str | None) -> tuple[str, float]:
    """Runs on a worker: train one unit's unfinished runs; return (status, seconds)."""
    torch.set_num_threads(1)  # one core per worker: several workers share a machine
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    todo = [run.num_tasks for run in WorkUnit(spec).runs if not is_finished(run, out_dir)]
    if not todo:
        return "skipped", 0.0
    resumed = state_path(out_dir, spec, todo).exists()
    start = time.perf_counter()
    train_ensemble(spec, out_dir, device=device, progress=False)
    return ("resumed" if resumed else "done"), time.perf_counter() - start


def _run_units(client, units, out_dir: Path, retries, device, log) -> list[UnitOutcome]:
    from distributed import as_completed

    by_key, attempts, outcomes = {}, {}, {}

    def submit(unit: WorkUnit) -> object:
        attempts[unit.name] = attempts.get(unit.name, 0) + 1
        # A fresh key per attempt: Dask would otherwise hand back the failed result.
        key = f"train-{unit.name}-attempt{attempts[unit.name]}"
        future = client.submit(_train_unit, unit.spec, str(out_dir), device, key=key, pure=False)
        by_key[future.key] = unit
        return future

    pending = as_completed([submit(unit) for unit in units])
    for future in pending:
        unit = by_key[future.key]
        tries = attempts[unit.name]
        if future.status == "finished":
            status, seconds = future.result()
            outcomes[unit.name] = UnitOutcome(unit.name, status, tries, len(unit.runs), seconds)
            log(f"[{len(outcomes)}/{len(units)}] {status}: {unit.name} ({seconds:.1f} s)")
        elif tries <= retries:
            log(f"retrying {unit.name} (attempt {tries + 1}): {_error(future)}")
            pending.add(submit(unit))
        else:
            error = _error(future)
            outcomes[unit.name] = UnitOutcome(unit.name, "failed", tries, len(unit.runs), 0, error)
            log(f"[{len(outcomes)}/{len(units)}] failed: {unit.name}: {error}")
        future.release()
    return [outcomes[unit.name] for unit in units]


def _remove_orphaned_temporary_files(out_dir: Path) -> None:
    """Delete the temporary files of atomic writes whose writer was killed (SIGKILL, lost
    worker). Safe only under the sweep lock, when no unit of this folder is running."""
    for folder in (out_dir, out_dir / STATE_FOLDER):
        for path in folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def _error(future) -> str:
    """The first line of a failed future's exception, with its type."""
    if future.status == "cancelled":
        return "cancelled: the connection to the Dask scheduler was lost"
    err = future.exception()
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


@contextmanager
def _client(scheduler: str, workers: int, processes: bool, worker_timeout: float):
    from distributed import Client, LocalCluster

    if scheduler == "local":
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=processes,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise RiclError(f"cannot reach the Dask scheduler at {scheduler!r}: {err}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=worker_timeout)
        except TimeoutError:
            raise RiclError(
                f"the Dask scheduler at {scheduler!r} has no workers after {worker_timeout:g} s; "
                "start some with `dask worker ADDRESS`"
            ) from None
        yield client


# ---------------------------------------------------------------------------- the lock


def sweep_lock(out_dir: str | Path):
    """Hold the output folder's lock (``io.folder_lock``) for the sweep's block."""
    return folder_lock(out_dir, "ricl sweep")

"""Aggregate member-steps/s of the tiny categorical sweep: serial, 2-worker LocalCluster, ensemble.

The `tiny-categorical` preset (10 num_tasks values, one model configuration) trained three ways,
each into a fresh folder, wall clock including strategy datasets and checkpoint evaluations:

- serial:   one run per num_tasks value, one after another, in this process;
- cluster:  the same 10 single-run units as a sweep on a 2-worker LocalCluster (processes);
- ensemble: all 10 runs as one ensemble (one work unit), in this process.

member-steps/s = (number of runs x max_steps) / wall seconds.

    python benchmarks/sweeps.py [--max-steps 200] [--num-checkpoints 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import torch

from rational_icl.data import preset_specs
from rational_icl.training.loop import train_ensemble
from rational_icl.training.sweep import format_summary, run_sweep


def tiny_spec(max_steps: int, num_checkpoints: int | None):
    spec = preset_specs("tiny-categorical")[0]
    training = dataclasses.replace(
        spec.training,
        max_steps=max_steps,
        num_checkpoints=num_checkpoints or spec.training.num_checkpoints,
    )
    return dataclasses.replace(spec, training=training)


def single_run_specs(spec):
    return [dataclasses.replace(spec, num_tasks=(d,)) for d in spec.num_tasks]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--num-checkpoints", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = tiny_spec(args.max_steps, args.num_checkpoints)
    singles = single_run_specs(spec)
    member_steps = len(spec.num_tasks) * spec.training.max_steps

    rows = []
    with tempfile.TemporaryDirectory() as root:
        seconds = timed(
            lambda: [train_ensemble(s, f"{root}/serial", progress=False) for s in singles]
        )
        rows.append(("serial (1 process)", seconds))
        if not args.skip_cluster:
            outcomes = []
            seconds = timed(
                lambda: outcomes.extend(
                    run_sweep(singles, f"{root}/cluster", workers=2, log=lambda line: None)
                )
            )
            assert all(o.status == "done" for o in outcomes), format_summary(outcomes)
            rows.append(("LocalCluster, 2 workers", seconds))
        seconds = timed(lambda: train_ensemble(spec, f"{root}/ensemble", progress=False))
        rows.append(("one ensemble (1 process)", seconds))

    print(
        f"tiny-categorical: {len(spec.num_tasks)} runs x {spec.training.max_steps} steps, "
        f"{spec.training.num_checkpoints} checkpoints; torch threads {args.threads}; "
        f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'mode':<26} {'seconds':>8} {'member-steps/s':>15}")
    for mode, seconds in rows:
        print(f"{mode:<26} {seconds:>8.1f} {member_steps / seconds:>15.1f}")


if __name__ == "__main__":
    main()

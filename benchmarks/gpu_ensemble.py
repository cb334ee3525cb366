"""Training throughput of the paper-categorical config as one 11-member ensemble (D = 4 ... 4096).

One scalar spec of the `paper-categorical` preset (default K = 8, T = 128,
mlp_expansion_factor = 4: hidden 64, 1 layer, batch 64) trains its 11 num_tasks values as
one ensemble with ``EnsembleTrainer.train_step`` (data, forward, backward, clip, AdamW; no
checkpoint evaluation). The first ``--warmup`` steps (allocation, kernel selection) are not
timed. Prints member-steps/s and seconds per 1000 steps.

    python benchmarks/gpu_ensemble.py                         # CUDA, 3000 steps
    python benchmarks/gpu_ensemble.py --device cpu --max-steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from rational_icl.data import preset_specs
from rational_icl.training.ensemble import EnsembleTrainer


def paper_spec(num_dims: int, context_length: int, mlp: float, precision: str):
    spec = preset_specs("paper-categorical")[0]
    scalar = next(
        s
        for s in spec.expand()
        if s.num_dims == num_dims
        and s.context_length == context_length
        and s.model.mlp_expansion_factor == mlp
    )
    return dataclasses.replace(
        scalar, training=dataclasses.replace(scalar.training, precision=precision)
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-steps", type=int, default=3000, help="timed steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--num-dims", type=int, default=8, choices=[8, 12, 16])
    parser.add_argument("--context-length", type=int, default=128, choices=[128, 256, 320])
    parser.add_argument("--mlp", type=float, default=4.0, choices=[0.5, 4.0, 8.0])
    parser.add_argument("--precision", default="float32", choices=["float32", "bf16"])
    args = parser.parse_args()
    if args.max_steps < 1 or args.warmup < 0:
        parser.error("--max-steps must be >= 1 and --warmup >= 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available here; use --device cpu")

    spec = paper_spec(args.num_dims, args.context_length, args.mlp, args.precision)
    start = time.perf_counter()
    trainer = EnsembleTrainer(spec, device=device)  # builds the 11 task sets, D up to 4096
    setup_seconds = time.perf_counter() - start
    for _ in range(args.warmup):
        trainer.train_step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.max_steps):
        loss = trainer.train_step()
    synchronize(device)
    seconds = time.perf_counter() - start
    steps_per_second = args.max_steps / seconds

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    m, t = spec.model, spec.training
    print(
        f"paper-categorical K={spec.num_dims} T={spec.context_length} "
        f"mlp={m.mlp_expansion_factor:g} hidden={m.hidden_size} layers={m.num_layers} "
        f"batch={t.batch_size} precision={t.precision}; {trainer.num_members} members "
        f"D={spec.num_tasks[0]}...{spec.num_tasks[-1]}; device {name}"
    )
    print(f"setup (task sets, model)     {setup_seconds:10.2f} s")
    print(f"timed steps                  {args.max_steps:10d}")
    print(f"ensemble steps/s             {steps_per_second:10.2f}")
    print(f"member-steps/s               {trainer.num_members * steps_per_second:10.1f}")
    print(f"seconds per 1000 steps       {1000 / steps_per_second:10.2f}")
    print(f"final mean training loss     {loss.mean().item():10.4f}")


if __name__ == "__main__":
    main()

"""Training speed: our ensemble transformer against HF transformers' GPTNeoX, on this machine.

Prints four tables:

1. one full training step (data + forward + backward + clip + AdamW) on the paper's
   categorical and regression configs, ours (E = 1) against GPTNeoX fed by a per-sequence
   dataset (as the authors' code does);
2. aggregate member-steps/s of an 8-member ensemble against 8 single runs;
3. achieved GFLOP/s (matmul FLOPs counted, training = 3x forward) against the measured
   float32 matmul peak;
4. bf16 autocast: step speed-up and how far its predictions move from float32 on the same
   weights;
5. the tiny presets as ``ricl run`` trains them (one ensemble of all their num_tasks):
   member-steps/s in float32 and bf16, GFLOP/s as a fraction of the measured peak, and the
   training time their max_steps imply.

    .venv/bin/python benchmarks/training.py [--steps 10] [--repeats 3] [--tables 3 5]

Needs the optional ``bench`` extra (``transformers``) for table 1 only; it is never a runtime
dependency of rational_icl.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from math import nan

import torch

from rational_icl.data import generator, spec_from_dict
from rational_icl.data.presets import PRESETS, preset_specs
from rational_icl.modeling.model import count_flops
from rational_icl.training.ensemble import EnsembleTrainer

PAPER_CATEGORICAL = {
    "setting": "categorical-sequence",
    "num_dims": 8,
    "context_length": 128,
    "model": {"num_layers": 1, "hidden_size": 64, "num_heads": 1, "mlp_expansion_factor": 4},
    "training": {"batch_size": 64, "learning_rate": 5e-4},
}
PAPER_REGRESSION = {
    "setting": "linear-regression",
    "num_dims": 8,
    "context_length": 16,
    "model": {"num_layers": 8, "hidden_size": 64, "num_heads": 1, "mlp_expansion_factor": 4},
    "training": {"batch_size": 128, "learning_rate": 5e-4},
}
TINY_CATEGORICAL = {
    "setting": "categorical-sequence",
    "num_dims": 8,
    "context_length": 64,
    "model": {
        "num_layers": 1,
        "hidden_size": 32,
        "num_heads": 1,
        "mlp_expansion_factor": 4,
        "position_encoding": "learned",
    },
    "training": {"batch_size": 32, "learning_rate": 3e-3},
}
EIGHT_D = [2, 4, 8, 16, 32, 64, 128, 256]


def _spec(table: dict, num_tasks=(16,), **training):
    table = {**table, "num_tasks": list(num_tasks)}
    table["training"] = {**table["training"], **training}
    return spec_from_dict(table).expand()[0]


def _seconds_per_call(*functions, steps: int, repeats: int) -> list[float]:
    """Seconds per call of each function: the best of ``repeats`` rounds of ``steps`` calls.

    Rounds of the functions alternate, so a burst of load from other processes hits all of
    them alike; the best round is the least disturbed one.
    """
    for fn in functions:
        for _ in range(2):  # warm-up: allocation, kernel selection
            fn()
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for i, fn in enumerate(functions):
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / steps)
    return best


def matmul_peak(repeats: int) -> float:
    """Measured float32 matmul GFLOP/s of this machine (2048 x 2048 products)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    (seconds,) = _seconds_per_call(lambda: a @ b, steps=5, repeats=repeats)
    return 2 * n**3 / seconds / 1e9


# ---------------------------------------------------------------------------- GPTNeoX path


class _PerSequenceDataset(torch.utils.data.IterableDataset):
    """One sequence per item, batched by a DataLoader: the authors' data path."""

    def __init__(self, trainer: EnsembleTrainer):
        self.setting, self.tasks = trainer.setting, trainer.tasks[0]
        self.gen = generator(0, "bench")

    def __iter__(self):
        while True:
            batch = self.setting.sample_batch(self.tasks, 1, self.gen)
            if self.setting.name == "categorical-sequence":
                yield batch.tokens[0]
            else:
                yield batch.x[0].float(), batch.y[0].float()


def gptneox_step_function(spec):
    """A closure running one GPTNeoX training step at the spec's size."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXModel

    m, training = spec.model, spec.training
    regression = spec.setting == "linear-regression"
    length = 2 * spec.context_length - 1 if regression else spec.context_length
    config = GPTNeoXConfig(
        vocab_size=spec.num_dims + 1,
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        intermediate_size=round(m.hidden_size * m.mlp_expansion_factor),
        max_position_embeddings=length,
        rotary_pct=1.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    if regression:
        backbone = GPTNeoXModel(config)
        read_in = torch.nn.Linear(spec.num_dims + 1, m.hidden_size)
        read_out = torch.nn.Linear(m.hidden_size, 1)
        modules = torch.nn.ModuleList([backbone, read_in, read_out])
    else:
        modules = GPTNeoXForCausalLM(config)
    optimizer = torch.optim.AdamW(modules.parameters(), lr=training.learning_rate)
    trainer = EnsembleTrainer(spec)
    batches = iter(torch.utils.data.DataLoader(_PerSequenceDataset(trainer), training.batch_size))

    def step():
        if regression:
            x, y = next(batches)  # (B, T, d), (B, T)
            tokens = torch.stack(
                [torch.nn.functional.pad(x, (0, 1)), torch.nn.functional.pad(y[..., None], (8, 0))],
                2,
            ).flatten(1, 2)[:, :-1]
            hidden = backbone(inputs_embeds=read_in(tokens)).last_hidden_state
            loss = (read_out(hidden[:, 0::2])[..., 0] - y).square().mean()
        else:
            tokens = next(batches)  # (B, T)
            start = torch.full_like(tokens[:, :1], spec.num_dims)
            logits = modules(torch.cat([start, tokens[:, :-1]], 1)).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), training.grad_clip)
        optimizer.step()

    return step


# ---------------------------------------------------------------------------- tables


def table_vs_gptneox(steps, repeats, peak):
    print("\n1. one training step (data + forward + backward + clip + AdamW), E = 1")
    print(
        f"{'config':<22}{'ours ms':>10}{'GPTNeoX ms':>12}{'speed-up':>10}{'ours GF/s':>11}"
        f"{'% peak':>8}{'NeoX GF/s':>11}"
    )
    rows = [("paper categorical", PAPER_CATEGORICAL), ("paper regression", PAPER_REGRESSION)]
    for name, table in rows:
        spec = _spec(table)
        trainer = EnsembleTrainer(spec)
        functions = [trainer.train_step]
        try:
            functions.append(gptneox_step_function(spec))
        except ImportError:  # transformers not installed: pip install .[bench]
            pass
        times = _seconds_per_call(*functions, steps=steps, repeats=repeats)
        ours, theirs = times[0], times[1] if len(times) > 1 else nan
        flops = count_flops(trainer.model.config, spec.training.batch_size)
        print(
            f"{name:<22}{ours * 1e3:>10.1f}{theirs * 1e3:>12.1f}{theirs / ours:>9.1f}x"
            f"{flops / ours / 1e9:>11.1f}{100 * flops / ours / 1e9 / peak:>7.0f}%"
            f"{flops / theirs / 1e9:>11.1f}"
        )


def table_ensemble(steps, repeats, peak):
    print("\n2. 8-member ensemble against 8 single runs (aggregate member-steps/s)")
    print(
        f"{'config':<22}{'ensemble':>10}{'8 singles':>11}{'ratio':>8}{'ens. GF/s':>11}{'% peak':>8}"
    )
    for name, table in [
        ("tiny categorical", TINY_CATEGORICAL),
        ("paper categorical", PAPER_CATEGORICAL),
    ]:
        spec = _spec(table, EIGHT_D)
        ensemble = EnsembleTrainer(spec)
        singles = [EnsembleTrainer(spec, [d]) for d in EIGHT_D]
        together, apart = _seconds_per_call(
            ensemble.train_step,
            lambda s=singles: [m.train_step() for m in s],
            steps=steps,
            repeats=repeats,
        )
        flops = count_flops(ensemble.model.config, spec.training.batch_size)
        print(
            f"{name:<22}{8 / together:>10.1f}{8 / apart:>11.1f}{apart / together:>7.1f}x"
            f"{flops / together / 1e9:>11.1f}{100 * flops / together / 1e9 / peak:>7.0f}%"
        )


def table_bf16(steps, repeats):
    print("\n4. bf16 autocast against float32 (same weights after 100 float32 steps)")
    print(
        f"{'config':<22}{'fp32 ms':>10}{'bf16 ms':>10}{'speed-up':>10}{'max |dp|':>10}"
        f"{'mean KL':>10}"
    )
    for name, table in [
        ("tiny categorical x8", TINY_CATEGORICAL),
        ("paper categorical x8", PAPER_CATEGORICAL),
    ]:
        full = EnsembleTrainer(_spec(table, EIGHT_D))
        half = EnsembleTrainer(_spec(table, EIGHT_D, precision="bf16"))
        fp32, bf16 = _seconds_per_call(
            full.train_step, half.train_step, steps=steps, repeats=repeats
        )
        for _ in range(100):
            full.train_step()
        half.model.load_state_dict(full.model.state_dict())
        batch, _ = full.sample()
        p, q = full.predict(batch).double(), half.predict(batch).double()
        kl = (p * (p.log() - q.log())).sum(-1).mean()
        print(
            f"{name:<22}{fp32 * 1e3:>10.1f}{bf16 * 1e3:>10.1f}{fp32 / bf16:>9.2f}x"
            f"{(p - q).abs().max():>10.4f}{kl:>10.2e}"
        )


def table_tiny_presets(steps, repeats, peak):
    print("\n5. tiny presets: one ensemble step of all their num_tasks, as ricl run trains them")
    print(
        f"{'preset':<22}{'E':>4}{'fp32 m-st/s':>13}{'bf16 m-st/s':>13}{'fp32 GF/s':>11}"
        f"{'% peak':>8}{'train s':>9}"
    )
    for name in PRESETS["tiny"]:
        (spec,) = preset_specs(name)
        scalar = spec.expand()[0]
        full = EnsembleTrainer(dataclasses.replace(scalar, training=_precision(scalar, "float32")))
        half = EnsembleTrainer(dataclasses.replace(scalar, training=_precision(scalar, "bf16")))
        fp32, bf16 = _seconds_per_call(
            full.train_step, half.train_step, steps=steps, repeats=repeats
        )
        flops = count_flops(full.model.config, scalar.training.batch_size)
        preset_step = bf16 if scalar.training.precision == "bf16" else fp32
        members = full.num_members
        print(
            f"{name:<22}{members:>4}{members / fp32:>13.1f}{members / bf16:>13.1f}"
            f"{flops / fp32 / 1e9:>11.1f}{100 * flops / fp32 / 1e9 / peak:>7.0f}%"
            f"{preset_step * scalar.training.max_steps:>9.0f}"
        )
    print("   train s: the preset's max_steps at its own precision, evaluation not counted")


def _precision(spec, precision: str):
    return dataclasses.replace(spec.training, precision=precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timing round")
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (best of)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--tables",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5],
        help="which tables to print (3, the peak, is always measured)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
    )
    peak = matmul_peak(args.repeats)
    print(
        f"3. measured float32 matmul peak: {peak:.0f} GFLOP/s (2048^3 products); "
        "GF/s columns count matmul FLOPs, training = 3x forward"
    )
    if 1 in args.tables:
        table_vs_gptneox(args.steps, args.repeats, peak)
    if 2 in args.tables:
        table_ensemble(args.steps, args.repeats, peak)
    if 4 in args.tables:
        table_bf16(args.steps, args.repeats)
    if 5 in args.tables:
        table_tiny_presets(args.steps, args.repeats, peak)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()

"""Train a tiny Hugging Face GPT-NeoX with the HF Trainer on a preset, record it, fit it.

The rational analysis needs a model's predictions at checkpoints, never its weights. This
script trains one GPT-NeoX per run of a spec (one per num_tasks value) with the HF
``Trainer`` on the very sequences ``ricl train`` would draw (``TaskStream``), records it
into the run's predictions file at the spec's checkpoints (``RecordCallback``), then runs
``ricl fit`` and ``ricl report`` on the result, as ``ricl run`` does for our transformer.

    pip install -e '.[hf]'
    python examples/hf_trainer.py --spec tiny-categorical --out runs/hf-tiny-categorical

The spec's ``[model]`` is set to ``kind = "external"`` (the files say a GPT-NeoX was
trained, and are named ``..._ext-gpt-neox_...``), keeping its sizes, which build the GPT-NeoX.
Rerun the same command after an interruption: finished runs are kept, and an interrupted
run resumes from the Trainer's state saved at the file's last recorded step (the callback
saves it there); ``--start-over`` retrains the unfinished runs from step 0 instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
import transformers

from rational_icl.cli.main import main as ricl
from rational_icl.data import ExperimentSpec, Run, load_specs
from rational_icl.errors import RiclError
from rational_icl.training.hf import HFReadOut, RecordCallback, training_arguments
from rational_icl.training.loop import run_path
from rational_icl.training.recorder import Recorder
from rational_icl.training.tasks_dataset import TaskStream, read_out_of


def backbone(run: Run) -> transformers.PreTrainedModel:
    """A GPT-NeoX of the spec's size, built from a config (no download)."""
    model, layout = run.spec.model, read_out_of(run).layout
    config = transformers.GPTNeoXConfig(
        vocab_size=max(layout.symbols, layout.num_outcomes),
        hidden_size=model.hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        intermediate_size=round(model.hidden_size * model.mlp_expansion_factor),
        max_position_embeddings=layout.sequence_length,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(run.spec.seed * 100_003 + run.num_tasks)  # one initialisation per run
    if layout.features:
        return transformers.GPTNeoXModel(config)  # features in, HFReadOut reads out
    return transformers.GPTNeoXForCausalLM(config)  # symbols in, the LM head's logits out


def as_external(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with ``[model] kind = "external"``: its files describe the GPT-NeoX."""
    model = dataclasses.replace(
        spec.model,
        kind="external",
        name="gpt-neox",
        description="GPT-NeoX (transformers, built from a config of the [model] sizes, "
        "rotary positions) in HFReadOut, trained by the HF Trainer",
    )
    return dataclasses.replace(spec, model=model)


def train_run(run: Run, runs_dir: Path, work_dir: Path, start_over: bool) -> None:
    """Train one run with the Trainer, recording at the spec's checkpoints; an interrupted
    run resumes from the state the callback saved at the file's last checkpoint."""
    path = run_path(run, runs_dir)
    recorder = Recorder(path)
    if recorder.last_checkpoint == run.spec.training.max_steps:
        print(f"finished, kept: {path}")
        return
    output_dir = work_dir / run.name
    resume = None
    if start_over:
        recorder.start_over()
    elif recorder.last_checkpoint is not None and output_dir.is_dir():
        resume = transformers.trainer_utils.get_last_checkpoint(output_dir)
    model = HFReadOut(backbone(run), run)
    trainer = transformers.Trainer(
        model=model,
        args=training_arguments(run, output_dir, use_cpu=not torch.cuda.is_available()),
        train_dataset=TaskStream(run),
        callbacks=[RecordCallback(path)],
    )
    trainer.train(resume_from_checkpoint=resume)  # a wrong resume is refused in one line
    print(f"recorded {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="tiny-categorical", help="a preset or a TOML spec")
    parser.add_argument("--out", type=Path, default=Path("runs/hf-tiny-categorical"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument(
        "--start-over",
        action="store_true",
        help="retrain unfinished runs from step 0, dropping their recorded checkpoints",
    )
    parser.add_argument(
        "--fit-args", default="", help="extra arguments for ricl fit, e.g. '--method map'"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runs_dir = args.out / "runs"
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in map(as_external, load_specs(args.spec)):
        spec_file = args.out / f"spec-{spec.setting}.toml"  # what ricl data reads
        spec_file.write_text(spec.to_toml())
        # the strategy part of every run's file: evaluation sequences, M, G, C, L_Q, K_Q
        data_argv = ["data", str(spec_file), "--out", str(runs_dir)]
        if ricl([*data_argv, "--threads", str(args.threads)]):
            raise SystemExit(1)
        try:
            for run in spec.runs():
                train_run(run, runs_dir, args.out / "hf", args.start_over)
        except RiclError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
    print(f"trained and recorded in {time.perf_counter() - start:.0f} s")
    fit = args.out / "fit.nc"
    fit_argv = ["fit", str(runs_dir), "-o", str(fit), "--drop-early", "--force"]
    fit_argv += ["--threads", str(args.threads)]
    if ricl(fit_argv + args.fit_args.split()) != 0:
        raise SystemExit(1)
    if ricl(["report", str(fit), "-o", str(args.out / "report")]) != 0:
        raise SystemExit(1)
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""``ricl record``: record the saved checkpoints of any model into a spec's predictions files."""

from __future__ import annotations

from pathlib import Path

from rational_icl.cli.checks import (
    add_memory_option,
    add_renamed_option,
    check_device,
    check_memory,
    check_writable_folder,
)
from rational_icl.data import load_specs
from rational_icl.errors import RiclError
from rational_icl.io import folder_lock


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "record",
        help="record the saved checkpoints of your own model into predictions files",
        description="For a model trained elsewhere (HF Trainer, your own loop): load each "
        "saved checkpoint of each run (CKPT_DIR/<run name>/checkpoint-<step>/ as the HF "
        "Trainer saves it, or checkpoint-<step>.pt / step-<step>.pt state dicts) into the "
        "model FACTORY(run) returns, evaluate it on the run's evaluation sequences and append "
        "it to the run's predictions file (written first where missing). Loading is safe "
        "(weights only, safetensors, or from_pretrained of a local folder); steps already "
        "recorded are kept. docs/byo-model.md has the model's contract.",
    )
    parser.add_argument("spec", metavar="SPEC_OR_PRESET", help="a TOML spec file or a preset name")
    parser.add_argument(
        "-o",
        "--out",
        "--runs",
        dest="runs",
        required=True,
        type=Path,
        help="the folder of predictions files to write (or add checkpoints) to",
    )
    parser.add_argument(
        "--factory",
        required=True,
        metavar="MODULE:FACTORY",
        help="a function FACTORY(run) -> model, in a module or a .py file; the model is "
        "called as model(tokens) -> the setting's read-out",
    )
    parser.add_argument(
        "--checkpoints",
        required=True,
        type=Path,
        metavar="CKPT_DIR",
        help="folder with one sub-folder of saved checkpoints per run, named after the run",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")
    add_memory_option(parser)
    add_renamed_option(
        parser, "--model", "--factory", "--model names the rational model in ricl fit"
    )
    parser.add_argument(
        "--start-over",
        action="store_true",
        help="drop the checkpoints the files already hold (of another model, or of a training "
        "that was restarted from scratch) and record every saved one",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    specs = load_specs(args.spec)
    check_memory(specs, args)
    device = check_device(args.device or "cpu")  # cpu unless asked: checkpoints are small
    if not args.checkpoints.is_dir():
        raise RiclError(f"--checkpoints {str(args.checkpoints)!r} is not a folder")
    check_writable_folder("-o", args.runs)
    from rational_icl.training.saved import load_factory  # torch loads only here

    factory = load_factory(args.factory)
    recorded = 0
    with folder_lock(args.runs, "ricl record"):  # one writer per folder
        for spec in specs:
            for one in spec.runs():
                recorded += record_run(
                    one, args.runs, factory, args.checkpoints, device, args.start_over
                )
    if not recorded:
        raise RiclError(
            f"no new checkpoints recorded: none found under {str(args.checkpoints)!r} in "
            "folders named after the spec's runs, or every one was recorded already"
        )
    print(f"recorded {recorded} checkpoint(s) into {args.runs}")
    return 0


def record_run(
    one, runs: Path, factory, checkpoints: Path, device, start_over: bool = False
) -> int:
    """Record every saved checkpoint of one run that its file lacks (every one after
    ``start_over`` dropped the file's); returns how many."""
    from rational_icl.io import write_netcdf
    from rational_icl.training.loop import run_path
    from rational_icl.training.predictions import strategy_dataset
    from rational_icl.training.recorder import Recorder
    from rational_icl.training.saved import load_checkpoint, saved_steps, trainer_losses

    folder = checkpoints / one.name
    if not folder.is_dir():
        print(f"no checkpoint folder {folder}, skipped")
        return 0
    steps = saved_steps(folder)  # bad step names and a failing factory write nothing
    if steps:
        factory(one)
    path = run_path(one, runs)
    if not path.exists():
        print(f"writing the strategy part of {path}")
        write_netcdf(strategy_dataset(one), path)
    recorder = Recorder(path, device)
    if start_over:
        recorder.start_over()
    count = 0
    for step, saved in steps:
        last = recorder.last_checkpoint
        if last is not None and step <= last:
            continue
        for logged_step, loss in trainer_losses(saved):
            recorder.log(logged_step, loss)
        model = load_checkpoint(factory(one), saved, device)
        recorder.record_checkpoint(model, step)
        count += 1
    print(f"{path}: recorded {count} checkpoint(s), last step {recorder.last_checkpoint}")
    return count

"""Entry point of ``ricl``. Each subcommand lives in its own module of this package and
exposes ``add_parser(subparsers)``, which registers it and sets ``func`` to its runner."""

from __future__ import annotations

import argparse
import importlib
import sys

from rational_icl import __version__
from rational_icl.errors import RiclError

# One module per subcommand, in the order `ricl --help` lists them.
COMMAND_MODULES = ["data", "train", "record", "sweep", "fit", "compare", "report", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ricl",
        description="rational-icl: train small transformers on task mixtures, record their "
        "predictions, and fit the rational model of in-context-learning strategies.",
    )
    parser.add_argument("--version", action="version", version=f"ricl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"rational_icl.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except RiclError as err:
        print(f"ricl {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"ricl {args.command}: interrupted; finished files are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

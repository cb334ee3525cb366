"""Entry point of ``ricl``. Each subcommand lives in its own module of this package and
exposes ``add_parser(subparsers)``, which registers it and sets ``func`` to its runner."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from contextlib import contextmanager

from rational_icl import __version__
from rational_icl.errors import INTERRUPTED, RiclError

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
    words = sys.argv[1:] if argv is None else list(argv)
    # named before parsing: an option's check may refuse it while argparse reads it
    command = f"ricl {words[0]}" if words and words[0] in COMMAND_MODULES else "ricl"
    with _interrupt_flag(), _messages():
        try:
            parser = build_parser()  # imports every command: Ctrl-C may land here too
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return 2
            command = f"ricl {args.command}"
            code = args.func(args) or 0
            if INTERRUPTED.is_set():  # raised where it was swallowed, e.g. in a JAX callback
                raise KeyboardInterrupt
            return code
        except RiclError as err:
            print(f"{command}: error: {err}", file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt:
            print(f"{command}: interrupted; finished files are kept", file=sys.stderr)
            return 130
        except MemoryError:  # a last resort: the size guards refuse what they can foresee
            print(
                f"{command}: error: out of memory; lower the spec's sizes or give smaller files",
                file=sys.stderr,
            )
            return 1


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


@contextmanager
def _messages():
    """What the stages say (the ``rational_icl`` loggers: the package itself never prints)
    goes to the terminal for the block: progress on stdout, warnings on stderr, each
    message as it is. Bound to the streams of the moment, and removed after (tests call
    ``main`` in-process with captured streams)."""
    logger = logging.getLogger("rational_icl")
    progress = logging.StreamHandler(sys.stdout)
    progress.addFilter(_BelowWarning())
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    before = (logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a caller's root handler would print them twice
    for handler in (progress, warnings):
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in (progress, warnings):
            logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]


@contextmanager
def _interrupt_flag():
    """SIGINT sets ``errors.INTERRUPTED`` and raises KeyboardInterrupt, for the block; the
    previous handler and a clear flag come back after it (tests call ``main`` in-process, and
    a flag left set would interrupt the next file write of the process)."""

    def interrupt(signum, frame):
        INTERRUPTED.set()
        raise KeyboardInterrupt

    INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        INTERRUPTED.clear()


if __name__ == "__main__":
    sys.exit(main())

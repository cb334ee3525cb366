"""Exceptions for user mistakes: the CLI prints their message as one line, no traceback."""


class RiclError(Exception):
    """A user-facing error: bad input, bad file, bad spec. The message is one line."""

    exit_code = 1


class SpecError(RiclError, ValueError):
    """An experiment spec has an unknown key, a wrong type or a value out of range."""

    exit_code = 2

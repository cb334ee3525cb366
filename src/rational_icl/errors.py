"""Exceptions for user mistakes: the CLI prints their message as one line, no traceback;
and the flag a Ctrl-C sets."""

import threading

# Set by the ``ricl`` command's SIGINT handler. The handler also raises KeyboardInterrupt,
# but one raised inside a callback (JAX's garbage-collection hook, say) is printed as
# "Exception ignored" and lost; io.atomic_path and the command read the flag instead.
INTERRUPTED = threading.Event()


class RiclError(Exception):
    """A user-facing error: bad input, bad file, bad spec. The message is one line."""

    exit_code = 1


class SpecError(RiclError, ValueError):
    """An experiment spec has an unknown key, a wrong type or a value out of range."""

    exit_code = 2


def reading_error(err: Exception) -> str:
    """One line on why a file could not be read (xarray's no-engine error spans three lines
    and two URLs; it means the file is not netCDF at all)."""
    text = str(err).strip()
    if "did not find a match in any of xarray's currently installed IO backends" in text:
        return "not a netCDF file"
    return text.splitlines()[0] if text else type(err).__name__

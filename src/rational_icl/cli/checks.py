"""Cheap refusals the commands make before any work: outputs that cannot be written, a
torch device that does not exist or cannot be used. Each raises a one-line RiclError."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rational_icl.errors import RiclError
from rational_icl.vocabulary import IGNORE_MEMORY


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (the folder a mkdir starts in)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(option: str, folder: Path) -> None:
    """Refuse ``folder`` when it, or a part of its path, is a file, or when nothing can be
    created where it is (or would be) made, or a name netCDF cannot take (not UTF-8).
    Creates nothing that is not removed again."""
    from rational_icl.io import check_file_name

    folder = Path(folder)
    check_file_name(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        where = "" if base == folder.absolute() else f" (its part {str(base)!r} is a file)"
        raise RiclError(f"{option} {str(folder)!r} is a file, not a folder{where}")
    try:
        # a real write, not os.access: root ignores permission bits, not read-only mounts
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise RiclError(
            f"{option} {str(folder)!r}: cannot write to folder {str(base)!r}: {err.strerror}"
        ) from None


def check_writable_file(option: str, path: Path) -> None:
    """Refuse an output file whose folder cannot be made or written, or whose name is not
    UTF-8 (see above)."""
    from rational_icl.io import check_file_name

    path = Path(path)
    check_file_name(path)
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise RiclError(f"{option} {str(path)!r}: {str(base)!r} is a file, not a folder")
    check_writable_folder(option, path.parent)


def check_sampler_options(args) -> None:
    """--chains, --draws (and --pointwise-draws where the command has it) at least 1,
    --warmup at least 0, --sampler-seed in 0 .. 2^63 - 1: the sampler options ``ricl fit`` and
    ``ricl run`` share."""
    for name in ("chains", "draws", "pointwise_draws"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise RiclError(f"--{name.replace('_', '-')} must be at least 1; got {value}")
    if args.warmup < 0:
        raise RiclError(f"--warmup must be at least 0; got {args.warmup}")
    seed = getattr(args, "sampler_seed", None)
    if seed is not None and not 0 <= seed <= MAX_FIT_SEED:
        # jax.random.PRNGKey takes a 64-bit integer (a larger one is an OverflowError)
        raise RiclError(f"--sampler-seed must be an integer from 0 to {MAX_FIT_SEED}; got {seed}")


MAX_FIT_SEED = 2**63 - 1


def check_device(name: str | None, *, probe: bool = True) -> str:
    """The torch device ``name`` resolves to (None: cuda if available, else cpu).

    Refuses a name torch does not parse, a CUDA device on a machine without one (or an index
    past its count), and, with ``probe``, a device on which a one-element tensor fails.
    """
    import torch  # loads only when a command needs it

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RiclError(
            f"--device {name!r} is not a torch device; allowed: cpu, cuda, cuda:N"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise RiclError(f"--device {name!r}: allowed: cpu, cuda, cuda:N, mps")
    if not probe:
        return name
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RiclError(f"--device {name!r}: CUDA is not available on this machine; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RiclError(f"--device {name!r}: this machine has {count} CUDA device(s)")
    try:
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RiclError(f"--device {name!r} cannot be used: {reason}") from None
    return name


def add_memory_option(parser) -> None:
    """The override of ``check_memory`` for the user who knows better."""
    parser.add_argument(
        IGNORE_MEMORY,
        action="store_true",
        help="start even when the spec's memory estimate exceeds this machine's memory",
    )


def check_memory(specs, args) -> None:
    """Refuse a spec whose memory estimate (``data.spec.memory_estimate``) exceeds this
    machine's physical memory, naming the key that drives it (``memory_driver``), unless
    --ignore-memory-check."""
    from rational_icl.data.spec import memory_driver, memory_estimate
    from rational_icl.io import physical_memory

    if getattr(args, "ignore_memory_check", False):
        return
    available = physical_memory()
    for spec in specs:
        for scalar in spec.expand():
            total = sum(memory_estimate(scalar).values())
            if total > available:
                key, default, lowered = memory_driver(scalar)
                raise RiclError(
                    f"spec {scalar.name or spec.name!r} needs about {total / 1e9:.3g} GB of "
                    f"memory, mostly for {key} = {_value(scalar, key)} (at its default "
                    f"{_plain(default)}: {lowered / 1e9:.3g} GB); this machine has "
                    f"{available / 1e9:.3g} GB; lower {key} or pass {IGNORE_MEMORY}"
                )


def _value(spec, key: str):
    for where in (spec, spec.model, spec.training, spec.evaluation):
        if hasattr(where, key):
            return _plain(getattr(where, key))
    return "?"


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def add_threads_option(parser, computes: str) -> None:
    """``--threads``, shared by every command that computes; ``computes``: with what."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"CPU threads for {computes} (default: the libraries' choice, all cores); use 1 "
        "when other jobs share the cores: small computations gain nothing from more, and "
        "waiting threads of an oversubscribed machine can slow them 100-fold",
    )


def check_threads(threads: int | None) -> int | None:
    """Refuse a --threads value below 1 in one line; None (not given) passes."""
    if threads is not None and threads < 1:
        raise RiclError(f"--threads {threads}: allowed: integers >= 1")
    return threads


def add_transition_level_option(parser) -> None:
    """``--transition-level``: the weight whose crossing defines the transition step that a
    ``forecast:F`` fit forecasts (fits/transition.py)."""
    parser.add_argument(
        "--transition-level",
        type=float,
        default=None,
        metavar="W",
        help="the weight on memorizing whose crossing defines each run's transition step, "
        "forecast by a --held-out forecast:F fit (0 < W < 1; default: halfway between the "
        "run's first fitted weight and its predicted last)",
    )


def check_transition_level(level: float | None) -> float | None:
    """Refuse a --transition-level outside (0, 1) in one line; None (halfway) passes."""
    if level is not None and not 0.0 < level < 1.0:
        raise RiclError(f"--transition-level {level:g}: allowed: a weight strictly between 0 and 1")
    return level


def add_renamed_option(parser, old: str, new: str, why: str) -> None:
    """Refuse ``old``, an option's former name, in one line naming ``new`` (hidden in help)."""

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            raise RiclError(f"{old} was renamed {new} ({why}); use {new}")

    parser.add_argument(old, action=Renamed, help=argparse.SUPPRESS)

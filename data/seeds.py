"""Named, seeded random streams: every draw of an experiment comes from one of these."""

from __future__ import annotations

import hashlib

import torch


def seed_for(seed: int, *names: object) -> int:
    """A 63-bit seed for one named random stream of an experiment (e.g. 'tasks', D)."""
    text = "/".join(str(n) for n in (seed, *names))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU generator for one named stream; see seed_for."""
    return torch.Generator().manual_seed(seed_for(seed, *names))

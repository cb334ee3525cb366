"""What a fit file must hold before a reader uses it, and which runs a behaviour or fit
file was made from (issue 24, items 5 and 10). Each refusal is one line naming the file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError

# The groups and variables a reader (report, compare, the summary) takes from a fit.
FIT_CONTENTS = {
    "posterior": ("alpha", "beta", "gamma", "weight_memorizing"),
    "observed_data": ("observed_weight",),
    "constant_data": ("strategy_loss", "strategy_complexity", "held_out"),
}
# Root attributes readers print or branch on: all text.
FIT_TEXT_ATTRIBUTES = ("observation_model", "measure", "ablation", "pooling", "inference_method")

# Run attributes that say which run a file is (not when or by which version it was made).
_IDENTIFYING = (
    "setting",
    "num_tasks",
    "num_dims",
    "context_length",
    "seed",
    "num_layers",
    "hidden_size",
    "num_heads",
    "mlp_expansion_factor",
    "position_encoding",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "max_steps",
)
RUNS_IDENTITY = "runs_identity"  # the attribute of behaviour and fit files


def check_fit(tree: xr.DataTree, path: str | Path) -> None:
    """Refuse a fit that lacks a group or variable readers need, or whose text attributes
    are not text."""
    for group, names in FIT_CONTENTS.items():
        if group not in tree.children:
            raise RiclError(f"fit file {str(path)!r} has no {group!r} group; not a whole fit")
        missing = [n for n in names if n not in tree[group].data_vars]
        if missing:
            raise RiclError(
                f"fit file {str(path)!r}: group {group!r} lacks {', '.join(missing)}; "
                f"a fit holds {', '.join(names)}"
            )
    for name in FIT_TEXT_ATTRIBUTES:
        value = tree.attrs.get(name)
        if value is not None and not isinstance(value, str):
            raise RiclError(
                f"fit file {str(path)!r}: attribute {name}={np.asarray(value).tolist()!r} is "
                "not text"
            )


def runs_identity(attributes: list[dict]) -> str:
    """A short hash of the identifying attributes of every run file (their global
    attributes): the same runs give the same identity wherever the folder is."""
    described = [
        json.dumps({k: np.asarray(a[k]).tolist() for k in _IDENTIFYING if k in a}, sort_keys=True)
        for a in attributes
    ]
    return hashlib.sha256("\n".join(sorted(described)).encode()).hexdigest()[:16]


def check_same_runs(identity: str, other, what: str, runs_name: str) -> None:
    """Refuse ``other`` (a behaviour dataset or fit) recorded from other runs than
    ``identity``'s. Files written before the identity was recorded are let through."""
    recorded = other.attrs.get(RUNS_IDENTITY)
    if recorded is not None and str(recorded) != identity:
        raise RiclError(
            f"{what} was made from other runs than {runs_name!r} (runs identity {recorded} vs "
            f"{identity}); give the files of one experiment"
        )

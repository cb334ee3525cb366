"""What a fit file must hold before a reader uses it, and which runs a behaviour or fit
file was made from (issue 24, items 5 and 10). Each refusal is one line naming the file."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits.validate import SAME_SPEC_ATTRIBUTES
from rational_icl.vocabulary import LAW_PARAMETERS

# The groups and variables a reader (report, compare, the summary) takes from a fit.
FIT_CONTENTS = {
    "posterior": ("alpha", "beta", "gamma", "weight_memorizing"),
    "observed_data": ("observed_weight",),
    "constant_data": ("strategy_loss", "strategy_complexity", "held_out"),
}
# Root attributes readers print or branch on: all text, and, by prefix, all numbers.
FIT_TEXT_ATTRIBUTES = (
    "observation_model",
    "measure",
    "ablation",
    "pooling",
    "inference_method",
    "model",
    "held_out_design",
    "fitted_splits",
    "strategies",
    "mass_matrix",
    "setting",
    "inadequate_num_tasks",
    "unfinished_runs",
    "runs_identity",
    "fit_settings",
)
_FIT_NUMBER_PREFIXES = (
    "heldout_",
    "oracle_",
    "fitted_",
    "authors_",
    "skill_",
    "best_baseline_rmse_",
    "family_distance_threshold",
    "centred",
    "context_dependent",
    "seed",
)
# Posterior parameters every fit has, finite in every draw.

# Run attributes that say which run a file is (not when or by which version it was made);
# with the spec's own text (every key of the spec, ``spec_keys``) and the checkpoints the
# file holds, they are everything that changes what was trained and recorded.
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
    *SAME_SPEC_ATTRIBUTES,
)
# Spec keys that name the experiment or list its other runs, not this run's training.
_NOT_IDENTIFYING_SPEC_KEYS = ("name", "num_tasks")
# The identity's form: identities of another form (or none) are not compared (a fit made
# before the checkpoints and every spec key counted had a bare 16-digit hash).
_IDENTITY_PREFIX = "v2-"
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
    _check_attribute_types(tree.attrs, path)
    _check_posterior(tree.posterior, path)


def _check_attribute_types(attributes: dict, path) -> None:
    """Text attributes are text, number attributes (by prefix) real numbers."""
    for name, value in attributes.items():
        if name in FIT_TEXT_ATTRIBUTES:
            if not isinstance(value, str):
                raise RiclError(
                    f"fit file {str(path)!r}: attribute {name}={np.asarray(value).tolist()!r} "
                    "is not text"
                )
            continue
        number = np.asarray(value)
        if name.startswith(_FIT_NUMBER_PREFIXES) and (
            number.ndim != 0 or number.dtype.kind not in "iuf"
        ):
            raise RiclError(
                f"fit file {str(path)!r}: attribute {name}={number.tolist()!r} is not a "
                "number; allowed: one real number"
            )


def _check_posterior(posterior, path) -> None:
    """alpha, beta and gamma finite; weight_memorizing a weight in [0, 1] (a fit whose
    weights are all NaN was drawn as an empty report)."""
    for name in LAW_PARAMETERS:
        values = np.asarray(posterior[name].values, dtype=float)
        if not np.all(np.isfinite(values)):
            raise RiclError(
                f"fit file {str(path)!r}: posterior {name} holds "
                f"{int(np.sum(~np.isfinite(values)))} non-finite draw(s); allowed: finite values"
            )
    weight = np.asarray(posterior["weight_memorizing"].values, dtype=float)
    finite = weight[np.isfinite(weight)]
    if finite.size == 0 or np.any((finite < 0) | (finite > 1)):
        found = "no finite value" if finite.size == 0 else f"values from {finite.min():.3g}"
        found += "" if finite.size == 0 else f" to {finite.max():.3g}"
        raise RiclError(
            f"fit file {str(path)!r}: posterior weight_memorizing has {found}; allowed: "
            "weights in [0, 1]"
        )


def runs_identity(runs: list[xr.Dataset]) -> str:
    """A short hash of what every run file holds (its identifying attributes, every key of
    its spec but its name and num_tasks list, and its checkpoint steps): the same runs give
    the same identity wherever the folder is; runs trained otherwise (any spec key) or
    recorded to other checkpoints (an unfinished run, later finished) give another."""
    described = [json.dumps(_described(ds), sort_keys=True) for ds in runs]
    digest = hashlib.sha256("\n".join(sorted(described)).encode()).hexdigest()[:16]
    return _IDENTITY_PREFIX + digest


def _described(ds: xr.Dataset) -> dict:
    attributes = ds.attrs
    found = {k: np.asarray(attributes[k]).tolist() for k in _IDENTIFYING if k in attributes}
    found["spec"] = spec_keys(attributes.get("spec", ""))
    if "checkpoint" in ds.coords:
        found["checkpoint"] = np.asarray(ds["checkpoint"].values).tolist()
    return found


def spec_keys(text) -> dict | str:
    """The keys of a run file's spec attribute (TOML text) but those that name the
    experiment or list its other runs (``_NOT_IDENTIFYING_SPEC_KEYS``): what says how the
    run was trained. The text as it is where it does not parse."""
    try:
        keys = tomllib.loads(str(text))
    except tomllib.TOMLDecodeError:
        return str(text)
    return {k: v for k, v in keys.items() if k not in _NOT_IDENTIFYING_SPEC_KEYS}


def check_same_runs(identity: str, other, what: str, runs_name: str) -> None:
    """Refuse ``other`` (a behaviour dataset or fit) recorded from other runs than
    ``identity``'s. Files written before the identity was recorded in its present form are
    let through."""
    recorded = other.attrs.get(RUNS_IDENTITY)
    if recorded is None or not (_current(recorded) and _current(identity)):
        return
    if str(recorded) != identity:
        raise RiclError(
            f"{what} was made from other runs than {runs_name!r} (runs identity {recorded} vs "
            f"{identity}: another spec, or other checkpoints, e.g. runs that have trained "
            "further since); refit it from these runs, or give the runs it was made from"
        )


def _current(identity) -> bool:
    return str(identity).startswith(_IDENTITY_PREFIX)

"""The facts a predictions file states about its task setting, for the stages that cannot
ask the setting itself (fits and reports import no torch, so no setting module).

The data stage writes them as global attributes of every predictions file, one attribute per
field of :class:`SettingFacts` (each setting declares its own, ``Setting.facts``). Files
written before they were attributes carry only ``setting``: for those, :func:`setting_facts`
derives them from the setting's name, the one place after the data stage that names a
setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from rational_icl.errors import RiclError

# The allowed values of each fact (a new value needs code that reads it: see SettingFacts).
ALLOWED = {
    "prediction_kind": ("probabilities", "mean"),
    "distance_kind": ("kl", "mse"),
    "loss_kind": ("task-kl", "cross-entropy", "squared-error"),
    "alternative_generalizer": ("tempered", "gradient-step", "none"),
}


@dataclass(frozen=True)
class SettingFacts:
    """What a setting's predictions files mean, in words a file reader can act on.

    Attributes
    ----------
    prediction_kind : {"probabilities", "mean"}
        A prediction is a distribution over the outcomes, or the predicted mean of y (one
        outcome, ``y``). The transformer trains on cross-entropy or squared error accordingly.
    distance_kind : {"kl", "mse"}
        The behaviour measures' distance between two predictions: symmetrized KL, or mean
        squared error (fits/behaviour.py).
    loss_kind : {"task-kl", "cross-entropy", "squared-error"}
        The per-prediction loss of ``strategy_loss`` and ``transformer_loss``:
        KL(theta || p) against the sequence's true task (``sequence_task``), -log p(target),
        or (target - prediction)^2 / (2 noise_variance) with the file's ``noise_variance``.
    alternative_generalizer : {"tempered", "gradient-step", "none"}
        The under-confident generalizer the barycentric measure sets beside G
        (fits/behaviour.py): G^(1/2) renormalised over outcomes; one step of in-context
        gradient descent on the file's ``x`` and ``y``; or none.
    """

    prediction_kind: str
    distance_kind: str
    loss_kind: str
    alternative_generalizer: str

    def __post_init__(self):
        for name, allowed in ALLOWED.items():
            value = getattr(self, name)
            if value not in allowed:
                raise RiclError(f"{name} {value!r} is unknown; allowed: {', '.join(allowed)}")

    def attributes(self) -> dict[str, str]:
        """The facts as file attributes (name -> value)."""
        return asdict(self)


FACT_NAMES = tuple(f.name for f in fields(SettingFacts))

# The facts of the settings whose files were written before the facts were attributes.
_FACTS_BEFORE_ATTRIBUTES = {
    "categorical-sequence": SettingFacts("probabilities", "kl", "task-kl", "tempered"),
    "linear-regression": SettingFacts("mean", "mse", "squared-error", "gradient-step"),
    "classification": SettingFacts("probabilities", "kl", "cross-entropy", "tempered"),
}


def setting_facts(attrs: Mapping) -> SettingFacts:
    """The facts of a predictions file (or runs dataset) from its global attributes.

    Read from the fact attributes where the file has them all; else derived from its
    ``setting`` (files written before the facts were attributes).
    """
    missing = [name for name in FACT_NAMES if name not in attrs]
    if not missing:
        return SettingFacts(**{name: str(attrs[name]) for name in FACT_NAMES})
    setting = attrs.get("setting")
    if setting in _FACTS_BEFORE_ATTRIBUTES:
        return _FACTS_BEFORE_ATTRIBUTES[setting]
    raise RiclError(
        f"runs have setting {setting!r} and no attribute {', '.join(missing)}; allowed: "
        f"files written by `ricl data` (they state these), or the settings "
        f"{', '.join(_FACTS_BEFORE_ATTRIBUTES)}"
    )

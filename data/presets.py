"""Built-in experiment presets (small ones for a laptop, the paper's grids for a cluster),
and loading a spec from a preset name or a TOML file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from rational_icl.data.spec import ExperimentSpec, spec_from_dict
from rational_icl.errors import SpecError

_POWERS_OF_TWO = [2**i for i in range(2, 13)]  # 4 ... 4096

_TINY = {
    "tiny-categorical": {
        "setting": "categorical-sequence",
        "num_dims": 8,
        "context_length": 64,
        "num_tasks": [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
        "model": {
            "num_layers": 1,
            "hidden_size": 32,
            "num_heads": 1,
            "mlp_expansion_factor": 4,
            "position_encoding": "learned",
        },
        "training": {
            "batch_size": 32,
            "learning_rate": 3e-3,
            "warmup_steps": 100,
            "max_steps": 4000,
            "num_checkpoints": 40,
        },
        "evaluation": {"num_sequences": 64, "num_loss_sequences": 4000},
    },
    # Paired tokens and a third layer leave the loss plateau early and near L_G at large D in 1500
    # steps; num_tasks crowds D = 3-12, where the weight moves (history: docs/science.md).
    "tiny-regression": {
        "setting": "linear-regression",
        "num_dims": 4,
        "context_length": 16,
        "num_tasks": [2, 3, 4, 6, 8, 12, 16, 64, 256, 1024],
        "model": {
            "num_layers": 3,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_expansion_factor": 4,
            "position_encoding": "learned",
            "regression_tokens": "paired",
        },
        "training": {
            "batch_size": 128,
            "learning_rate": 3e-3,
            "warmup_steps": 100,
            "lr_schedule": "cosine",
            "max_steps": 1500,
            "num_checkpoints": 40,
        },
        "evaluation": {"num_sequences": 256, "num_loss_sequences": 4000},
    },
    # One query a sequence: a large batch; context 8 and two heads learn the look-up and keep M and
    # G apart; num_tasks crowds D = 6-16, where the weight moves (history: docs/science.md).
    "tiny-classification": {
        "setting": "classification",
        "num_dims": 8,
        "context_length": 8,
        "num_tasks": [2, 4, 6, 8, 12, 16, 32, 64, 256, 1024],
        "model": {
            "num_layers": 1,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_expansion_factor": 4,
            "position_encoding": "learned",
        },
        "training": {
            "batch_size": 128,
            "learning_rate": 3e-3,
            "warmup_steps": 0,
            "max_steps": 3000,
            "num_checkpoints": 40,
        },
        "evaluation": {"num_sequences": 256, "num_loss_sequences": 4000},
    },
}

_PAPER = {
    "paper-categorical": {
        "setting": "categorical-sequence",
        "num_dims": [8, 12, 16],
        "context_length": [128, 256, 320],
        "num_tasks": _POWERS_OF_TWO,
        "model": {"num_layers": 1, "mlp_expansion_factor": [0.5, 4, 8]},
        "training": {"batch_size": 64, "warmup_steps": 5000, "max_steps": 100_000},
    },
    "paper-regression": {
        "setting": "linear-regression",
        "num_dims": [8, 12, 16],
        "context_length": [16, 32, 64],
        "num_tasks": _POWERS_OF_TWO,
        "model": {"num_layers": 8, "mlp_expansion_factor": [0.5, 4, 8]},
        "training": {"batch_size": 128, "warmup_steps": 5000, "max_steps": 100_000},
    },
    "paper-classification": {
        "setting": "classification",
        "num_dims": 8,
        "context_length": [128, 256, 384],
        "num_tasks": _POWERS_OF_TWO,
        "model": {"num_layers": 1, "mlp_expansion_factor": [0.5, 4, 8]},
        "training": {"batch_size": 64, "warmup_steps": 0, "max_steps": 100_000},
    },
}

# A preset names one spec or bundles several.
PRESETS: dict[str, list[str]] = {
    **{name: [name] for name in [*_TINY, *_PAPER]},
    "tiny": list(_TINY),
    "paper": list(_PAPER),
}


def preset_specs(name: str) -> list[ExperimentSpec]:
    """The validated specs a preset names."""
    tables = {**_TINY, **_PAPER}
    return [spec_from_dict({**tables[member], "name": member}) for member in PRESETS[name]]


def load_specs(spec_or_preset: str | Path) -> list[ExperimentSpec]:
    """Specs from a TOML file path or a preset name (a preset may bundle several specs)."""
    text = str(spec_or_preset)
    path = Path(text)
    if text in PRESETS:
        return preset_specs(text)
    if path.is_dir():
        raise SpecError(f"spec {text!r} is a folder; give a TOML spec file or a preset name")
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SpecError(f"spec file {text!r} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise SpecError(f"spec file {text!r} is not valid TOML: {err}") from None
        raw.setdefault("name", path.stem)
        return [spec_from_dict(raw)]
    raise SpecError(f"{text!r} is neither a spec file nor a preset; presets: {', '.join(PRESETS)}")

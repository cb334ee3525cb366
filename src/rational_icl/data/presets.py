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
    # Regression learns in-context only after a loss plateau. The interleaved layout (y tokens
    # carry y alone) first needs a layer that copies x_i onto the y_i token; with 2 layers of
    # width 32 it had not left the plateau at D = 1024 by step 2000 (batch 32-128, lr 1e-3 to
    # 3e-3, 2-3 layers: 2.5-7.9x L_Q). Paired tokens (y tokens carry x_i as well) leave it by
    # step ~200 and reach ~2x L_Q by step 1000 (batch 128, lr 3e-3, cosine). The early positions
    # (t < d) dominate the loss and its spread over sequences, hence 256 evaluation sequences.
    # A third layer is what closes the last gap at large D (the excess loss sits at t >= d):
    # 3 layers x 1500 steps reach 1.05x L_G (id) and 1.16x (ood) at D = 1024, where 2 layers x
    # 2000 steps stopped at 1.17x / 1.28x, for about the same training time.
    # The num_tasks values crowd where the weights move. Within 1500 steps these transformers
    # memorize up to D ~ 8 (the weight on M rises over training at D = 3 ... 8); from D ~ 12 on
    # the weight stays flat, the loss 1.1-1.6x G's (not converged: the tests' and report's
    # convergence line says so). A grid of 2, 4, 16, 64, ... holds one moving value (D = 4): the fit
    # reads "no dynamics": alpha 0.99 [0.98, 0.99]. With 3, 6, 8 and 12 added, alpha is 0.83
    # [0.72, 0.93] and held-out r 0.974 (id) / 0.935 (ood); members train independently, so
    # the added values leave the others' predictions bit for bit unchanged. alpha is still
    # seed-fragile: seed 2 stops at 2-2.6x the better L_Q at D = 6-256, reads 0.98 [0.96, 0.99]
    # (held-out r 0.962 / 0.960); 3000 steps read 0.80 [0.72, 0.87] (seed 1) and 0.95 [0.86,
    # 0.99] (seed 2, chains disagreeing), in twice the time.
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
    # Classification learns from one query per sequence, so it needs a larger batch than the
    # others, and more evaluation sequences for a steady weight. A short context keeps the
    # generalizing strategy good (7 distractors: L_G ~ 0.25 nats at every large D while
    # L_M -> 0.58), so M and G stay far apart; two heads of width 32 learn the in-context
    # look-up within a few hundred steps (one head of width 32 and context 16 had not by step
    # 4000), and no warm-up (the paper's) moves the first checkpoints away from the constant
    # predictor, which at large D sits next to M. lr 5e-3 never learned it at D = 1024.
    # The weight on M moves over training only at D ~ 6-16 (D <= 4 is M from the start; from
    # D = 64 on L_M > L_G and the weight is 0), so 6 and 12 replace 128 and 512, whose weight
    # is 0 throughout. alpha is weakly identified all the same: from D = 8 to 32 the
    # transformer heads for the Bayes predictor that uses the stored pairs and the context
    # together, which the barycentric measure reads as a fixed partial weight on M
    # (docs/science.md, third caution). Seeds 1, 2 and 3 read alpha 0.84 [0.76, 0.91], 0.47
    # [0.27, 0.77] and 0.98 [0.96, 1.00], with held-out r at least 0.977 (id), 0.921 (ood) and
    # 0.982 (iwl); seed 1 trained on an AVX2 CPU (other float rounding) read 0.90 [0.84, 0.96].
    # Training choices do not remove the spread: lr 1e-3 reads 0.73, 0.75, 0.98 for seeds 1-3;
    # lr 3e-4 0.93 [0.86, 0.98] for seed 1; a cosine schedule 0.78 and 0.80 [0.61, 0.96].
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

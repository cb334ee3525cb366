"""Experiment specs: TOML files or built-in presets, validated early, expanded into runs.

A spec describes one experiment (docs/files.md §0). Lists in ``[model]`` and lists for
``context_length``, ``num_dims`` or ``seed`` expand into a grid of scalar specs; each scalar
spec then has one run per ``num_tasks`` value.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field

from rational_icl.data.settings import SETTINGS, SpecOption, setting_class
from rational_icl.errors import SpecError
from rational_icl.formulas import FIRST_CHECKPOINT, MAX_STEPS

POSITION_ENCODINGS = ("rotary", "learned")
# Whose model the runs record: ours (modeling/model.py, trained by `ricl train`) or the
# user's own, trained elsewhere and recorded (docs/byo-model.md).
MODEL_KINDS = ("transformer", "external")
# An external model's name goes into file names: no separators, no spaces.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
# Regression token layouts (modeling/model.py): y tokens carry y alone, or their x as well.
REGRESSION_TOKENS = ("interleaved", "paired")
LR_SCHEDULES = ("constant", "cosine", "inverse-sqrt")
PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class ModelConfig:
    num_layers: int = 1
    hidden_size: int = 64
    num_heads: int = 1
    mlp_expansion_factor: float = 4.0
    position_encoding: str = "rotary"
    # linear-regression only: "paired" y tokens carry their x too, so one attention layer
    # can read (x_i, y_i) pairs without first copying x_i forward (a shorter loss plateau).
    # None is "interleaved", left out of the spec's TOML so that older specs read the same.
    regression_tokens: str | None = None
    # "external": the runs record the user's own model, which ``name`` (in file names) and
    # ``description`` (free text, in the files' attributes) describe; the size keys above
    # are then only what the user's code may read, and ``ricl train`` refuses the spec.
    kind: str = "transformer"
    name: str | None = None
    description: str | None = None

    @property
    def external(self) -> bool:
        """Whether the runs record the user's own model rather than ours."""
        return self.kind == "external"


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    max_steps: int = 100_000
    num_checkpoints: int = 100
    grad_clip: float = 1.0
    precision: str = "float32"


@dataclass(frozen=True)
class EvaluationConfig:
    num_sequences: int = 64
    num_loss_sequences: int | None = None  # None: the setting's default (10 000; 50 000)


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment. Scalar fields except ``num_tasks`` (one run per value) after expand()."""

    setting: str
    num_dims: int = 8
    context_length: int = 64
    num_tasks: tuple[int, ...] = (4, 16, 64, 256)
    seed: int = 1
    noise_variance: float | None = None  # regression; None: num_dims / 256
    within_class_variance: float = 0.5  # classification: epsilon
    prior: tuple[float, ...] | None = None  # categorical Dirichlet concentration; None: ones
    # The values of the setting's own keys (Setting.options) given in the spec, as
    # (key, value) pairs; written at the top level of the TOML.
    options: tuple[tuple[str, object], ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    name: str = ""

    @property
    def effective_num_loss_sequences(self) -> int:
        if self.evaluation.num_loss_sequences is not None:
            return self.evaluation.num_loss_sequences
        return setting_class(self.setting).num_loss_sequences

    def option(self, key: str):
        """The value of one of the setting's own keys: as given, else its default."""
        given = dict(self.options)
        if key in given:
            return given[key]
        (declared,) = [o for o in setting_class(self.setting).options if o.name == key]
        return declared.default

    def expand(self) -> list[ExperimentSpec]:
        """The grid of scalar specs: one per combination of the list-valued fields."""
        return list(_expand(self))

    def runs(self) -> list[Run]:
        """Every run of the expanded grid, one per num_tasks value."""
        return [Run(spec, d) for spec in self.expand() for d in spec.num_tasks]

    def to_toml(self) -> str:
        """The spec as TOML text; ``spec_from_dict(tomllib.loads(text))`` gives it back."""
        return _to_toml(to_dict(self))


@dataclass(frozen=True)
class Run:
    """One transformer (or ensemble member) trained on one task set of size num_tasks."""

    spec: ExperimentSpec
    num_tasks: int

    @property
    def name(self) -> str:
        """File stem, e.g. ``categorical-sequence_K8_T64_D16_mlp4_seed1``.

        Model fields other than the MLP factor appear only where they differ from the
        defaults (``L`` layers, ``H`` hidden size, ``nh`` heads, ``learned`` positions), so a
        grid over any model field never gives two runs the same file. The user's own model
        (``kind = "external"``) is named by its ``name`` instead, e.g.
        ``categorical-sequence_K8_T64_D16_ext-gpt-neox_seed1``.
        """
        s, m, default = self.spec, self.spec.model, ModelConfig()
        if m.external:  # nothing of our architecture: the user's model by its name
            return (
                f"{s.setting}_K{s.num_dims}_T{s.context_length}_D{self.num_tasks}"
                f"_ext-{m.name}_seed{s.seed}"
            )
        extras = [
            f"_L{m.num_layers}" if m.num_layers != default.num_layers else "",
            f"_H{m.hidden_size}" if m.hidden_size != default.hidden_size else "",
            f"_nh{m.num_heads}" if m.num_heads != default.num_heads else "",
            f"_{m.position_encoding}" if m.position_encoding != default.position_encoding else "",
            "_paired" if m.regression_tokens == "paired" else "",
        ]
        return (
            f"{s.setting}_K{s.num_dims}_T{s.context_length}_D{self.num_tasks}"
            f"_mlp{m.mlp_expansion_factor:g}{''.join(extras)}_seed{s.seed}"
        )


# ---------------------------------------------------------------------------- loading


def spec_from_dict(raw: dict) -> ExperimentSpec:
    """Validate a TOML-like dict into an ExperimentSpec; unknown keys are errors."""
    raw = dict(raw)
    sections = {"model": ModelConfig, "training": TrainingConfig, "evaluation": EvaluationConfig}
    kwargs = {}
    for section, cls in sections.items():
        table = raw.pop(section, {})
        if not isinstance(table, dict):
            raise SpecError(f"spec key {section!r}: expected a table [{section}], got {table!r}")
        kwargs[section] = cls(**_validate_fields(cls, table, prefix=f"{section}."))
    if "setting" not in raw:
        raise SpecError(f"spec key 'setting' is missing; allowed: {', '.join(SETTINGS)}")
    options = _setting_options(raw)
    top = _validate_fields(
        ExperimentSpec,
        raw,
        prefix="",
        skip={*sections, "options"},
        also=[o.name for o in _declared_options(raw)],
    )
    spec = ExperimentSpec(**top, **kwargs, options=options)
    _check_cross_fields(spec)
    return spec


def to_dict(spec: ExperimentSpec) -> dict:
    """The spec as a plain dict of TOML-able values (None values left out)."""
    out = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name == "options":
            out.update(value)
        elif dataclasses.is_dataclass(value):
            out[f.name] = {
                k: v
                for k, v in dataclasses.asdict(value).items()
                if v is not None and _LEFT_OUT.get((f.name, k), _UNSET) != v
            }
        elif value is not None:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# Keys left out of the TOML at this value: specs written before the key existed give the
# same text, which finished runs are matched by (loop.is_finished).
_LEFT_OUT = {("model", "kind"): "transformer"}
_UNSET = object()


# ---------------------------------------------------------------------------- validation

# Each field: (allowed types, check, description of what is allowed). Fields whose value may
# be a list that expands into a grid are marked in _GRID_FIELDS.
_INT, _FLOAT, _STR = (int,), (int, float), (str,)
MAX_SEED = 2**63 - 1
MIN_PRIOR = 1e-300
# The Monte Carlo estimate of L_Q has a standard error of 1e-4 of the loss's spread at 1e8
# sequences; more only costs time, which the memory estimate does not see (1e15 ran for days).
MAX_LOSS_SEQUENCES = 10**8
_RULES = {
    # settings may register after this module is loaded: the allowed text is made when needed
    "setting": (_STR, lambda v: v in SETTINGS, lambda: f"one of {', '.join(SETTINGS)}"),
    "name": (_STR, lambda v: True, "a string"),
    "num_dims": (_INT, lambda v: v >= 2, "integers >= 2"),
    "context_length": (_INT, lambda v: v >= 2, "integers >= 2"),
    "num_tasks": (_INT, lambda v: v >= 1, "integers >= 1"),
    # files store the seed as an int64 attribute
    "seed": (_INT, lambda v: 0 <= v <= MAX_SEED, f"integers from 0 to {2**63 - 1}"),
    "noise_variance": (_FLOAT, lambda v: v > 0, "numbers > 0"),
    "within_class_variance": (_FLOAT, lambda v: v > 0, "numbers > 0"),
    # a subnormal concentration (1e-310) makes the Gamma sampler's 1/alpha infinite: NaN files
    "prior": (
        _FLOAT,
        lambda v: v >= MIN_PRIOR,
        f"numbers >= {MIN_PRIOR:g} (Dirichlet concentration)",
    ),
    "num_layers": (_INT, lambda v: v >= 1, "integers >= 1"),
    "hidden_size": (_INT, lambda v: v >= 1, "integers >= 1"),
    "num_heads": (_INT, lambda v: v >= 1, "integers >= 1"),
    "mlp_expansion_factor": (_FLOAT, lambda v: v > 0, "numbers > 0"),
    "position_encoding": (_STR, lambda v: v in POSITION_ENCODINGS, " or ".join(POSITION_ENCODINGS)),
    "regression_tokens": (_STR, lambda v: v in REGRESSION_TOKENS, " or ".join(REGRESSION_TOKENS)),
    "kind": (_STR, lambda v: v in MODEL_KINDS, " or ".join(MODEL_KINDS)),
    # [model] name: part of file names (the top-level name is the spec's, any string)
    "model.name": (
        _STR,
        lambda v: _MODEL_NAME.fullmatch(v) is not None and len(v) <= 64,
        "up to 64 letters, digits, '.', '+' and '-', starting with a letter or digit",
    ),
    "description": (_STR, lambda v: True, "a string"),
    "batch_size": (_INT, lambda v: v >= 1, "integers >= 1"),
    "learning_rate": (_FLOAT, lambda v: v > 0, "numbers > 0"),
    "weight_decay": (_FLOAT, lambda v: v >= 0, "numbers >= 0"),
    "warmup_steps": (_INT, lambda v: v >= 0, "integers >= 0"),
    "lr_schedule": (_STR, lambda v: v in LR_SCHEDULES, ", ".join(LR_SCHEDULES)),
    "max_steps": (_INT, lambda v: 1 <= v <= MAX_STEPS, f"integers from 1 to {MAX_STEPS}"),
    # at most max_steps: checked with it (_check_checkpoints)
    "num_checkpoints": (_INT, lambda v: v >= 1, "integers >= 1"),
    "grad_clip": (_FLOAT, lambda v: v > 0, "numbers > 0"),
    "precision": (_STR, lambda v: v in PRECISIONS, " or ".join(PRECISIONS)),
    "num_sequences": (_INT, lambda v: v >= 1, "integers >= 1"),
    "num_loss_sequences": (
        _INT,
        lambda v: 2 <= v <= MAX_LOSS_SEQUENCES,
        f"integers from 2 to {MAX_LOSS_SEQUENCES}",
    ),
}
# Fields that are always lists (num_tasks, prior) or may be lists that expand into a grid.
_LIST_FIELDS = {"num_tasks", "prior"}
_GRID_FIELDS = {
    "num_dims",
    "context_length",
    "seed",
    "num_layers",
    "hidden_size",
    "num_heads",
    "mlp_expansion_factor",
    "position_encoding",
    "regression_tokens",
}


def _belongs_in(key: str, prefix: str) -> str:
    """Where a misplaced key goes: ' (it belongs in [training])', or '' if nowhere."""
    homes = {"model": ModelConfig, "training": TrainingConfig, "evaluation": EvaluationConfig}
    for section, cls in homes.items():
        if prefix != f"{section}." and key in {f.name for f in dataclasses.fields(cls)}:
            return f" (it belongs in the [{section}] table)"
    top = {f.name for f in dataclasses.fields(ExperimentSpec)} - set(homes) - {"options"}
    if prefix and key in top:
        return " (it belongs at the top level, before any table)"
    return ""


def _validate_fields(
    cls, table: dict, prefix: str, skip: frozenset | set = frozenset(), also=()
) -> dict:
    """The validated fields of ``cls`` in ``table``; ``also``: more allowed keys, which the
    caller has taken out of ``table`` (only named in the unknown-key message)."""
    allowed = {f.name for f in dataclasses.fields(cls)} - set(skip)
    out = {}
    for key, value in table.items():
        if key not in allowed:
            named = sorted(allowed | set(also))
            raise SpecError(
                f"spec key {prefix + key!r} is unknown{_belongs_in(key, prefix)}; allowed keys"
                f"{' in [' + prefix[:-1] + ']' if prefix else ''}: {', '.join(named)}"
                f"{'' if prefix else ', and the tables [model], [training], [evaluation]'}"
            )
        out[key] = _validate_value(prefix + key, key, value)
    return out


def _validate_value(full_key: str, key: str, value, rule=None):
    types, check, allowed = rule or _RULES.get(full_key) or _RULES[key]
    allowed = allowed() if callable(allowed) else allowed
    is_list = isinstance(value, list)
    if key in _LIST_FIELDS and not is_list:
        value, is_list = [value], True
    if is_list and key not in _LIST_FIELDS | _GRID_FIELDS:
        raise SpecError(f"spec key {full_key!r}: value {value!r} is a list; allowed: {allowed}")
    items = value if is_list else [value]
    if is_list and not items:
        raise SpecError(f"spec key {full_key!r}: the list is empty; allowed: {allowed}")
    for item in items:
        # bool is an int in Python but never a valid count or rate here
        if isinstance(item, bool) or not isinstance(item, types):
            kind = "integers" if types == _INT else "numbers" if types == _FLOAT else "strings"
            raise SpecError(
                f"spec key {full_key!r}: value {item!r} has the wrong type; allowed: {kind}"
                f"{'' if allowed.startswith(kind) else ' (' + allowed + ')'}"
            )
        if isinstance(item, float) and not math.isfinite(item):
            # inf and nan pass "> 0" checks and give NaN files or hang the samplers
            raise SpecError(
                f"spec key {full_key!r}: value {item!r} is not finite; allowed: finite {allowed}"
            )
        if not check(item):
            raise SpecError(
                f"spec key {full_key!r}: value {item!r} is out of range; allowed: {allowed}"
            )
    # Numbers keep their TOML type (4 stays 4, not 4.0): a run's file is recognised as this
    # spec's by the spec's text (to_toml), so a conversion would orphan every trained run.
    if key == "num_tasks" and len(set(items)) < len(items):
        repeated = sorted({v for v in items if items.count(v) > 1})
        raise SpecError(
            f"spec key {full_key!r}: value(s) {repeated} repeated; allowed: distinct {allowed}"
        )
    return tuple(items) if is_list else items[0]


def _declared_options(raw: dict) -> tuple[SpecOption, ...]:
    """The own keys of the raw spec's setting (none while the setting is not valid)."""
    setting = raw.get("setting")
    return SETTINGS[setting].options if isinstance(setting, str) and setting in SETTINGS else ()


def _setting_options(raw: dict) -> tuple[tuple[str, object], ...]:
    """Take the setting's own keys out of ``raw``, validated, as (key, value) pairs."""
    kinds = {int: _INT, float: _FLOAT, str: _STR}
    options = []
    for option in _declared_options(raw):
        if option.name in raw:
            rule = (kinds[option.kind], option.check, option.allowed)
            options.append(
                (option.name, _validate_value(option.name, option.name, raw.pop(option.name), rule))
            )
    return tuple(options)


def _check_cross_fields(spec: ExperimentSpec) -> None:
    _check_checkpoints(spec.training)
    _check_model_kind(spec.model)
    for s in spec.expand():
        if not s.model.external:  # the size keys build our transformer only
            _check_transformer(s.model)
        _check_setting_keys(s)
        setting_class(s.setting).check_spec(s)


def _check_transformer(model: ModelConfig) -> None:
    """Sizes our transformer can be built with."""
    if model.hidden_size % model.num_heads:
        raise SpecError(
            f"spec key 'model.num_heads': value {model.num_heads} does not divide "
            f"hidden_size {model.hidden_size}; allowed: divisors of hidden_size"
        )
    if model.position_encoding == "rotary" and (model.hidden_size // model.num_heads) % 2:
        raise SpecError(
            f"spec key 'model.position_encoding': 'rotary' needs an even head size, got "
            f"hidden_size / num_heads = {model.hidden_size // model.num_heads}; "
            "allowed: 'learned', or an even head size"
        )


def _check_model_kind(model: ModelConfig) -> None:
    """``name`` and ``description`` describe the user's own model, which needs a name (its
    files are named by it) and one model per spec (a grid would give runs one name)."""
    if not model.external:
        for key in ("name", "description"):
            if getattr(model, key) is not None:
                raise SpecError(
                    f"spec key 'model.{key}' is for kind = \"external\" (your own model) only; "
                    "our transformer is described by its size keys"
                )
        return
    if model.name is None:
        raise SpecError(
            "spec key 'model.name' is missing; allowed: with kind = \"external\", a short name "
            "of your model for its file names (letters, digits, '.', '+', '-')"
        )
    for key, value in dataclasses.asdict(model).items():
        if isinstance(value, tuple):
            raise SpecError(
                f"spec key 'model.{key}': value {list(value)!r} is a list; allowed: one value "
                'with kind = "external" (one model of yours per spec)'
            )


def _check_checkpoints(training: TrainingConfig) -> None:
    """Refuse a schedule that asks for several checkpoints but records one (e.g. max_steps
    = 3 with num_checkpoints = 10): a fit needs two, and would find out only after training;
    and more checkpoints than steps (1e12 of them was an array of 7 TiB)."""
    # checkpoint_steps records max_steps alone exactly then; computed, not called, since the
    # schedule is an array of num_checkpoints values (the memory check has not run yet)
    records_one = training.max_steps <= FIRST_CHECKPOINT or training.num_checkpoints == 1
    if training.num_checkpoints > 1 and records_one:
        raise SpecError(
            f"spec key 'training.num_checkpoints': value {training.num_checkpoints} needs "
            f"max_steps > {FIRST_CHECKPOINT} (the first checkpoint's step), got max_steps "
            f"{training.max_steps}, which records 1 checkpoint; allowed: num_checkpoints = 1 "
            f"or max_steps > {FIRST_CHECKPOINT}"
        )
    if training.num_checkpoints > training.max_steps:
        raise SpecError(
            f"spec key 'training.num_checkpoints': value {training.num_checkpoints} is more "
            f"than max_steps {training.max_steps}; allowed: integers from 1 to max_steps"
        )


def _check_setting_keys(spec: ExperimentSpec) -> None:
    """Keys that belong to other settings: a token layout this setting does not read, or a
    field another setting holds exclusively (Setting.token_layouts, .exclusive_keys)."""
    own = SETTINGS[spec.setting]
    layout = spec.model.regression_tokens or "interleaved"
    if layout not in own.token_layouts:
        owners = [name for name, cls in SETTINGS.items() if layout in cls.token_layouts]
        raise SpecError(
            f"spec key 'model.regression_tokens' is for the {' and '.join(owners)} setting "
            f"only, not {spec.setting!r}"
        )
    for name, cls in SETTINGS.items():
        for key in cls.exclusive_keys:
            if key not in own.exclusive_keys and getattr(spec, key) is not None:
                raise SpecError(
                    f"spec key {key!r} is for the {name} setting only, not {spec.setting!r}"
                )


# ---------------------------------------------------------------------------- grid


def _expand(spec: ExperimentSpec):
    top = {k: getattr(spec, k) for k in ("num_dims", "context_length", "seed")}
    model = dataclasses.asdict(spec.model)
    axes = {**top, **{f"model.{k}": v for k, v in model.items()}}
    keys = list(axes)
    values = [v if isinstance(v, tuple) else (v,) for v in axes.values()]
    for combo in itertools.product(*values):
        chosen = dict(zip(keys, combo, strict=True))
        model_kwargs = {k[6:]: v for k, v in chosen.items() if k.startswith("model.")}
        yield dataclasses.replace(
            spec,
            num_dims=chosen["num_dims"],
            context_length=chosen["context_length"],
            seed=chosen["seed"],
            model=ModelConfig(**model_kwargs),
        )


# ---------------------------------------------------------------------------- TOML out


def _to_toml(data: dict) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


# ---------------------------------------------------------------------------- memory

_FLOAT_BYTES = 4  # bytes per float32 element
_CHUNK_ELEMENTS = 2**23  # the Monte Carlo chunk bound of modeling.losses (sequences x T x D)


def memory_estimate(spec: ExperimentSpec) -> dict[str, int]:
    """A rough lower bound on the bytes one scalar spec's ``ricl data`` and ``ricl train``
    hold at once, by the spec key that drives each part.

    - ``num_tasks``: the ensemble's task tables (sum of D x width) and the memorizing
      strategy's block of the largest D (at least one sequence x T x D, three temporaries);
    - ``context_length``: one training batch of the ensemble (activations and attention
      scores, forward and backward: three copies);
    - ``num_sequences``: the strategies' and every checkpoint's evaluation predictions;
    - ``hidden_size``: the ensemble's parameters, gradients and two Adam moments.
    """
    k, t, e = spec.num_dims, spec.context_length, len(spec.num_tasks)
    width = k + 1  # outcomes (categorical) or features plus y (regression, classification)
    d_max = max(spec.num_tasks)
    m, tr, ev = spec.model, spec.training, spec.evaluation
    hidden = m.hidden_size
    block = max(t * d_max, min(_CHUNK_ELEMENTS, spec.effective_num_loss_sequences * t * d_max))
    per_position = m.num_layers * hidden * (4 + 2 * m.mlp_expansion_factor) + m.num_heads * t
    parameters = m.num_layers * hidden**2 * (4 + 2 * m.mlp_expansion_factor) + hidden * width
    predictions = 3 * ev.num_sequences * t * width * (3 + tr.num_checkpoints)
    return {
        "num_tasks": _FLOAT_BYTES * (sum(spec.num_tasks) * width + 3 * block),
        "context_length": int(_FLOAT_BYTES * 3 * e * tr.batch_size * t * per_position),
        "num_sequences": _FLOAT_BYTES * e * predictions,
        "hidden_size": int(_FLOAT_BYTES * 4 * e * parameters),
    }


# The spec keys that set a size, by the part of the spec that holds them ("" for the top).
SIZE_KEYS = {
    "num_dims": "",
    "context_length": "",
    "num_tasks": "",
    "num_layers": "model",
    "hidden_size": "model",
    "num_heads": "model",
    "mlp_expansion_factor": "model",
    "batch_size": "training",
    "num_checkpoints": "training",
    "num_sequences": "evaluation",
    "num_loss_sequences": "evaluation",
}


def memory_driver(spec: ExperimentSpec) -> tuple[str, object, int]:
    """The size key whose value drives one scalar spec's memory estimate: (key, its default,
    the estimate's total with that key at its default).

    Each key is put back at its default in turn, and the one whose default lowers the
    total most is named: the estimate's parts are per use (task tables, a training batch),
    and one key (num_dims, batch_size) can enter several of them.
    """
    best = None
    for key, section in SIZE_KEYS.items():
        default = _default(key, section)
        if section:
            part = dataclasses.replace(getattr(spec, section), **{key: default})
            lowered = dataclasses.replace(spec, **{section: part})
        else:
            lowered = dataclasses.replace(spec, **{key: default})
        total = sum(memory_estimate(lowered).values())
        if best is None or total < best[2]:
            best = (key, default, total)
    return best


def _default(key: str, section: str):
    cls = {"": ExperimentSpec, "model": ModelConfig, "training": TrainingConfig}.get(
        section, EvaluationConfig
    )
    (found,) = [f for f in dataclasses.fields(cls) if f.name == key]
    return found.default_factory() if found.default is dataclasses.MISSING else found.default

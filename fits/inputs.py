"""What a fit reads and how: ``FitSettings``, the held-out and early cells, the authors'
early-checkpoint rule, and the model's input arrays built from a behaviour dataset (and,
for the ``outputs`` model or context-dependent weights, from the predictions files).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.facts import setting_facts
from rational_icl.fits import parameters, sufficient
from rational_icl.fits.behaviour import context_loss
from rational_icl.fits.designs import held_out_cells_of, held_out_design
from rational_icl.fits.runs import config_dims as _config_dims
from rational_icl.vocabulary import (
    CONFIG_DIMS,
    MASS_MATRICES,
    METHODS,
    OBSERVATIONS,
    default_model,
    form_of,
    model_refusal,
)

# Behaviour measures the relative-distance model can observe, and their behaviour variables
# (the fit's observed_data names every measure observed_weight: docs/files.md §3).
MEASURE_VARIABLES = {"barycentric": "barycentric_weight", "relative-distance": "relative_distance"}


@dataclass(frozen=True)
class FitSettings:
    """What to fit and how. The defaults are every door's (``ricl fit``, ``ricl run``, the
    notebooks): the default model with the paper's early-checkpoint rule (docs/science.md);
    ``model="paper", drop_early=...`` reproduces the authors' fit."""

    observation: str = "relative-distance"
    measure: str = "auto"  # barycentric where the behaviour has it, else relative-distance
    splits: tuple[str, ...] | None = None  # None fits every split
    ablation: str = "none"
    model: str | None = None  # parameters.MODELS; None: the default for the observation
    pooling: str = "auto"  # partial where the runs vary in seed, else complete
    centred: bool = False  # partial pooling: centred parameterisation (parameters.py)
    strategies: tuple[str, ...] = ("memorizing", "generalizing")
    context_dependent: bool = False
    method: str = "nuts"
    mass_matrix: str = "adapted"  # NUTS: windowed adaptation, or the fixed Laplace covariance
    target_accept: float | None = None  # NUTS; None: engines.target_acceptance's default
    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    seed: int = 0
    held_out_fraction: float = 0.8  # the authors design's fitted fraction
    held_out: str = "authors"  # a design of HELD_OUT_DESIGNS
    drop_early: bool = True  # fit checkpoints after the transformer nears the M-G mixture
    law_free: bool = True  # score the law-free reference beside the baselines (fits/lawfree.py)
    svi_steps: int = 5000
    pointwise_draws: int = 1000  # draws kept (all chains) for the per-cell predictive, log lik
    outputs_bin_width: float | None = 0.25  # Dirichlet normaliser nodes (dirichlet_statistics)
    progress_bar: bool = False
    priors: parameters.Priors = parameters.Priors()

    def __post_init__(self):
        if self.model is None:
            object.__setattr__(self, "model", default_model(self.observation))
        for name, allowed in [
            ("observation", OBSERVATIONS),
            ("measure", ("auto", *MEASURE_VARIABLES)),
            ("ablation", parameters.ABLATIONS),
            ("pooling", ("auto", *parameters.POOLINGS)),
            ("method", METHODS),
            ("mass_matrix", MASS_MATRICES),
        ]:
            if getattr(self, name) not in allowed:
                raise RiclError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        refused = model_refusal(self.model, observation=self.observation)
        if refused:
            raise RiclError(refused)
        _check_strategies(self.strategies, self.observation)
        form = form_of(self.model)
        if self.ablation == "unit-gamma" and form.anchored:
            raise RiclError(
                f"the unit-gamma ablation fixes gamma, which model {self.model!r} derives; "
                "use it with model paper"
            )
        if form.drift and self.observation != "relative-distance":
            raise RiclError(
                f"model {self.model!r} lets the observed weight drift along training, which "
                "the outputs observation does not observe; use observation relative-distance"
            )
        for name in ("chains", "draws", "svi_steps", "pointwise_draws"):
            if getattr(self, name) < 1:
                raise RiclError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.warmup < 0:
            raise RiclError(f"warmup must be at least 0; got {self.warmup}")
        if self.outputs_bin_width is not None and not self.outputs_bin_width > 0:
            raise RiclError(
                f"outputs_bin_width must be positive or None; got {self.outputs_bin_width}"
            )
        if self.target_accept is not None and not 0.0 < self.target_accept < 1.0:
            raise RiclError(f"target_accept must be in (0, 1); got {self.target_accept}")
        if not 0.0 < self.held_out_fraction <= 1.0:
            raise RiclError(f"held_out_fraction must be in (0, 1]; got {self.held_out_fraction}")
        held_out_design(self.held_out)  # raises on a bad design

    def recorded(self) -> str:
        """Every setting that changes the fit, as JSON text (the fit's ``fit_settings``
        attribute): ``ricl run`` refits when any of them differs (progress_bar does not)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "progress_bar"}
        return json.dumps(fields, sort_keys=True)


# The root attribute of a fit that records its FitSettings (FitSettings.recorded).
FIT_SETTINGS = "fit_settings"


# The strategy a fit weighs against generalizing (first in --strategies), and those the
# outputs observation model can add to the softmax after the two.
MEMORIZERS = ("memorizing", "contextual")
EXTRA_STRATEGIES = ("constant", "memorizing", "contextual")


def _check_strategies(strategies: tuple[str, ...], observation: str) -> None:
    """One line naming what is wrong with ``--strategies`` for this observation model."""
    text = ",".join(strategies)
    if (
        len(strategies) < 2
        or strategies[0] not in MEMORIZERS
        or strategies[1] != "generalizing"
        or not set(strategies[2:]) <= set(EXTRA_STRATEGIES)
        or len(set(strategies)) != len(strategies)
    ):
        raise RiclError(
            "strategies must be memorizing,generalizing or contextual,generalizing, then "
            f"(--observation outputs) any of {', '.join(EXTRA_STRATEGIES)}; got {text!r}"
        )
    if len(strategies) > 2 and observation == "relative-distance":
        raise RiclError(
            f"strategies {text!r} need --observation outputs: the observed weight measures "
            "one strategy against generalizing"
        )


def measured_variable(behaviour: xr.Dataset, settings: FitSettings) -> tuple[str, str]:
    """``(measure, behaviour variable)`` the fit observes: the weight of the first strategy
    (memorizing, or the contextual memorizer, read barycentrically) against generalizing."""
    measure = resolved_measure(behaviour, settings.measure)
    if settings.strategies[0] != "contextual":
        return measure, MEASURE_VARIABLES[measure]
    if measure != "barycentric":
        raise RiclError(
            f"strategies {','.join(settings.strategies)!r}: the contextual strategy's weight "
            f"is measured barycentrically only; got --measure {measure}"
        )
    return measure, "contextual_weight"


def resolved_pooling(behaviour: xr.Dataset, pooling: str) -> str:
    """``pooling``, with ``"auto"`` read as partial where the runs vary in training seed
    (replicates of one configuration share a population), else complete."""
    if pooling != "auto":
        return pooling
    return "partial" if "seed" in behaviour.dims and behaviour.sizes["seed"] > 1 else "complete"


def early_cells(
    interpolation_distance: xr.DataArray, within: float = 0.2, seen: xr.DataArray | None = None
) -> xr.DataArray:
    """True for the checkpoints before the transformer first comes within ``within`` (of its
    range over checkpoints) of its best memorizing-generalizing mixture, per cell.

    The paper fits only later checkpoints: early on the transformer is far from any mixture.
    ``seen`` (bool, broadcast against the distance): the cells a fit may read. The range is
    then taken over them only, so that no held-out checkpoint decides which fitted cells
    are dropped; a run with no seen cell (held out whole, never fitted) keeps its own range.
    """
    distance = interpolation_distance
    low, high = distance.min("checkpoint"), distance.max("checkpoint")
    if seen is not None:
        visible = distance.where(seen)
        low = visible.min("checkpoint").fillna(low)
        high = visible.max("checkpoint").fillna(high)
    close = distance <= low + within * (high - low)
    return (close.cumsum("checkpoint") == 0).rename("dropped")


def _fitted_splits(split: xr.DataArray, splits) -> xr.DataArray:
    """True for the splits that enter the likelihood (all when ``splits`` is None)."""
    if splits is None:
        return xr.ones_like(split, dtype=bool)
    unknown = [s for s in splits if s not in split.values]
    if unknown or not splits:
        raise RiclError(
            f"splits {','.join(splits)!r}: allowed are {', '.join(map(str, split.values))}"
        )
    return split.isin(list(splits))


def authors_kept(interpolation_distance: xr.DataArray, within: float) -> xr.DataArray:
    """The authors' early-checkpoint rule: one threshold common to all num_tasks.

    The threshold is the largest over num_tasks of the first checkpoint whose ``id``
    interpolation distance is within ``within`` of its range over checkpoints (the authors'
    p: 0.2, and 0.1 for regression); checkpoints from it on are kept. Returns bool
    (config..., num_tasks, checkpoint).
    """
    distance = interpolation_distance.sel(split="id", drop=True)
    early = early_cells(distance, within)
    first = distance.checkpoint.where(~early).min("checkpoint")  # per num_tasks
    common = first.max("num_tasks")  # per configuration
    return (distance.checkpoint >= common).broadcast_like(distance).rename("authors_kept")


# The authors' early-checkpoint tolerance p (find_approximate_interpolation_threshold).
AUTHORS_WITHIN = {"linear-regression": 0.1}


@dataclass
class ModelInputs:
    """Arrays for the model functions, with the configuration axis C flattened."""

    kwargs: dict  # model keyword arguments (observations included)
    observed_key: str
    observed_weight: xr.DataArray  # (config..., num_tasks, checkpoint, split)
    fit_mask: xr.DataArray  # same dims, bool
    held_out: xr.DataArray
    dropped: xr.DataArray | None
    config_dims: tuple[str, ...]
    config_shape: tuple[int, ...]
    chains_draws: tuple[int, int] = (0, 0)


def resolved_measure(behaviour: xr.Dataset, measure: str) -> str:
    """``measure``, with ``"auto"`` read as barycentric where ``behaviour`` has it."""
    if measure != "auto":
        return measure
    return "barycentric" if MEASURE_VARIABLES["barycentric"] in behaviour else "relative-distance"


def model_inputs(behaviour: xr.Dataset, settings: FitSettings, runs=None) -> ModelInputs:
    """The model function's keyword arrays and the cells it fits, from a behaviour dataset.

    Parameters
    ----------
    behaviour : xr.Dataset
        docs/files.md §2: the measured weight, ``strategy_loss``, ``strategy_complexity``.
    settings : FitSettings
    runs : xr.Dataset, optional
        The predictions files, for the ``outputs`` model and context-dependent weights.

    Returns
    -------
    ModelInputs
        Arrays with the configuration dims flattened to one axis C, the observed weight,
        and the fitted, held-out and dropped cells as labelled masks.
    """
    measure, measured = measured_variable(behaviour, settings)
    _check_behaviour(behaviour, settings, measured)
    config_dims = _config_dims(behaviour)
    pooling = resolved_pooling(behaviour, settings.pooling)
    if pooling != "complete" and not config_dims:
        raise RiclError(
            f"pooling {pooling!r} needs several configurations "
            f"({', '.join(CONFIG_DIMS)}); the runs have one, use --pooling complete"
        )
    observed = behaviour[measured].transpose(*config_dims, "num_tasks", "checkpoint", "split")
    observed = observed.rename("observed_weight").assign_attrs(measure=measure)
    strategies = list(settings.strategies)
    cell_dims = (*config_dims, "num_tasks")
    template = observed.isel(checkpoint=0, split=0, drop=True)
    loss, complexity = (
        behaviour[name].sel(strategy=strategies).broadcast_like(template)
        for name in ("strategy_loss", "strategy_complexity")
    )
    loss, complexity = (a.transpose("strategy", *cell_dims) for a in (loss, complexity))
    if not (np.isfinite(loss.values).all() and (complexity.values > 0).all()):
        raise RiclError("strategy_loss must be finite and strategy_complexity positive")
    fit_mask, held_out, dropped = _fit_cells(behaviour, observed, settings)
    config_shape = tuple(behaviour.sizes[d] for d in config_dims)
    num_config = int(np.prod(config_shape)) if config_dims else 1

    def flat(values, leading=0):  # (lead..., config..., rest) -> (lead..., C, rest)
        values = np.asarray(values)
        return values.reshape(
            values.shape[:leading] + (num_config,) + values.shape[leading + len(config_dims) :]
        )

    kwargs = dict(
        strategy_loss=jnp.asarray(flat(loss.values, 1)),
        strategy_complexity=jnp.asarray(flat(complexity.values, 1)),
        checkpoint=jnp.asarray(behaviour.checkpoint.values, dtype=jnp.float64),
        fit_mask=jnp.asarray(flat(fit_mask.values)),
        ablation=settings.ablation,
        model=settings.model,
        pooling=pooling,
        priors=settings.priors,
        centred=settings.centred,
    )
    if form_of(settings.model).smooth:  # its offsets follow log num_tasks
        kwargs["num_tasks"] = jnp.asarray(behaviour.num_tasks.values, dtype=jnp.float64)
    if settings.observation == "relative-distance":
        kwargs["observed_weight"] = jnp.asarray(flat(np.nan_to_num(observed.values, nan=0.5)))
        key = "observed_weight"
        if form_of(settings.model).drift:  # conditions the held-out cells' predictions
            kwargs["weight_history"] = kwargs["observed_weight"]
        if settings.context_dependent:
            losses, size = _context_inputs(runs, strategies, cell_dims, config_dims)
            kwargs["context_loss"] = jnp.asarray(flat(losses.mean("sequence").values, 1))
            kwargs["context_size"] = jnp.asarray(size)
    else:
        key = "transformer_prediction"
        kwargs.update(_outputs_inputs(runs, strategies, cell_dims, config_dims, flat, settings))
    return ModelInputs(
        kwargs, key, observed, fit_mask, held_out, dropped, config_dims, config_shape
    )


def _check_behaviour(behaviour: xr.Dataset, settings: FitSettings, measured: str) -> None:
    """Refuse, in one line, a behaviour dataset that lacks what the fit reads."""
    for name in (measured, "strategy_loss", "strategy_complexity"):
        if name not in behaviour:
            hint = (
                "; the barycentric measure needs the constant strategy's predictions "
                "(recompute the behaviour with this version, or use --measure relative-distance)"
                if name == "barycentric_weight"
                else "; the contextual strategy's weight needs runs with that strategy "
                "(ricl data of this version) and their behaviour"
                if name == "contextual_weight"
                else ""
            )
            raise RiclError(f"behaviour dataset has no variable {name!r}{hint}")
    missing = [s for s in settings.strategies if s not in behaviour.strategy.values]
    if missing:
        raise RiclError(f"behaviour dataset has no strategy {missing[0]!r}")
    for dim in ("num_tasks", "checkpoint"):
        if behaviour.sizes.get(dim, 0) < 2:
            raise RiclError(
                f"the fit needs at least 2 {dim} values; got {behaviour.sizes.get(dim, 0)}"
            )


def _fit_cells(behaviour: xr.Dataset, observed: xr.DataArray, settings: FitSettings):
    """``(fit_mask, held_out, dropped)``: the cells the fit sees (observed, in a fitted
    split, neither held out nor dropped as early), the held-out design's cells (config...,
    num_tasks, checkpoint), and the early cells (None without ``drop_early``)."""
    held_out = held_out_cells_of(behaviour, settings.held_out, settings.held_out_fraction)
    grid = observed.isel(split=0, drop=True)  # (config..., num_tasks, checkpoint)
    held_out = held_out.broadcast_like(grid).transpose(*grid.dims)
    fit_mask = (~held_out) & observed.notnull() & _fitted_splits(observed.split, settings.splits)
    dropped = None
    if settings.drop_early:
        if "interpolation_distance" not in behaviour:
            raise RiclError("dropping early checkpoints needs interpolation_distance")
        distance = behaviour.interpolation_distance
        dropped = early_cells(distance, seen=~held_out).transpose(*observed.dims)
        fit_mask = fit_mask & ~dropped
    return fit_mask.transpose(*observed.dims), held_out, dropped


def _context_inputs(runs, strategies, cell_dims, config_dims):
    if runs is None:
        raise RiclError("context-dependent weights need the predictions files, not only behaviour")
    if "context_length" in config_dims:
        raise RiclError("context-dependent weights need one context_length across the runs")
    losses = context_loss(runs).sel(strategy=strategies)
    losses = losses.transpose("strategy", *cell_dims, "split", "sequence", "position")
    return losses, np.arange(runs.sizes["position"], dtype=float)


def _outputs_inputs(runs, strategies, cell_dims, config_dims, flat, settings):
    if runs is None:
        raise RiclError("--observation outputs needs the predictions files, not only behaviour")
    if "transformer_prediction" not in runs:
        raise RiclError("--observation outputs needs transformer_prediction in the runs")
    order = ("split", "sequence", "position", "outcome")
    strategy = runs.strategy_prediction.sel(strategy=strategies)
    strategy = strategy.transpose("strategy", *cell_dims, *order)
    transformer = runs.transformer_prediction.transpose(*cell_dims, "checkpoint", *order)
    mean = setting_facts(runs.attrs).prediction_kind == "mean"
    kind = "regression" if mean else "probabilities"
    strategy_values = flat(strategy.values, 1)
    transformer_values = flat(transformer.values)
    inputs = dict(outcome_kind=kind)
    if settings.context_dependent:  # weights per sequence and position: every prediction
        losses, size = _context_inputs(runs, strategies, cell_dims, config_dims)
        inputs["context_loss"] = jnp.asarray(flat(losses.values, 1))
        inputs["context_size"] = jnp.asarray(size)
        inputs["strategy_prediction"] = jnp.asarray(strategy_values, dtype=jnp.float32)
        inputs["transformer_prediction"] = jnp.asarray(transformer_values, dtype=jnp.float32)
    elif kind == "probabilities":  # per-cell sums, computed once (see outputs_model)
        inputs["statistics"] = sufficient.dirichlet_statistics(
            strategy_values, transformer_values, bin_width=settings.outputs_bin_width
        )
    else:
        inputs["statistics"] = sufficient.normal_statistics(strategy_values, transformer_values)
    return inputs

"""``ricl fit``: fit the rational model to a folder of predictions files, write ``fit.nc``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rational_icl.cli.checks import (
    add_renamed_option,
    add_threads_option,
    add_transition_level_option,
    check_sampler_options,
    check_threads,
    check_transition_level,
    check_writable_file,
)
from rational_icl.errors import RiclError
from rational_icl.pipeline import configure_jax, fit_runs
from rational_icl.vocabulary import (
    ABLATIONS,
    DEFAULT_MODEL,
    MASS_MATRICES,
    METHODS,
    MODELS,
    OBSERVATIONS,
    OUTPUTS_DEFAULT_MODEL,
    default_model,
    model_refusal,
)
from rational_icl.vocabulary import MEASURES as _MEASURES
from rational_icl.vocabulary import POOLINGS as _POOLINGS

MEASURES = ("auto", *_MEASURES)
POOLINGS = ("auto", *_POOLINGS)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit the rational model (NumPyro) to a folder of predictions files",
        description="Fit the rational model of strategy weights to the behaviour of the "
        "transformers in RUNS_DIR (one setting; runs combined along num_tasks and any varying "
        "configuration). The first 80% of checkpoints and of num_tasks values are fitted, "
        "the other cells held out. Writes an ArviZ DataTree (netCDF) and prints a summary, "
        "diagnostics and the held-out correlations. PSIS-LOO (the ELPD that ricl compare "
        "ranks by) is printed when the importance weights support it: as a rule for NUTS; for "
        "MAP/Laplace and SVI only when at most 10%% of the cells have Pareto k above 0.7 and "
        "p_loo is at most 3 times the number of parameters, otherwise one warning line says "
        "why instead.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", type=Path, help="folder of run files")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output fit file (.nc)")
    parser.add_argument("--observation", choices=OBSERVATIONS, default="relative-distance")
    parser.add_argument(
        "--behaviour",
        type=Path,
        default=None,
        help="a behaviour file computed from RUNS_DIR (ricl run writes one); default: "
        "measured here from the runs",
    )
    add_fit_options(parser)
    parser.add_argument("--ablation", choices=ABLATIONS, default="none")
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="auto",
        help="alpha, beta, gamma shared by every configuration (complete), one set each "
        "(none), or drawn from a population (partial); auto (default): partial where the "
        "runs vary in training seed, else complete",
    )
    parser.add_argument(
        "--centred",
        action="store_true",
        help="partial pooling: draw each configuration's alpha, beta, gamma from the "
        "population directly (centred) instead of as standardised offsets; far better "
        "when every configuration has many cells, as in the paper's grids",
    )
    parser.add_argument(
        "--strategies",
        default="memorizing,generalizing",
        help="strategies in the softmax: memorizing,generalizing[,constant]",
    )
    parser.add_argument(
        "--context-dependent",
        action="store_true",
        help="weights also accumulate evidence along the context",
    )
    parser.add_argument(
        "--mass-matrix",
        choices=MASS_MATRICES,
        default="adapted",
        help="NUTS's mass matrix: adapted during warm-up (default), or fixed at the Laplace "
        "covariance of the MAP (for large hierarchical fits, e.g. the paper's grids)",
    )
    parser.add_argument(
        "--target-accept",
        type=float,
        default=None,
        help="NUTS's target acceptance probability (default 0.99 for the offset models, "
        "whose posterior curves, 0.995 for them with partial pooling of training seeds, "
        "else 0.9); higher means smaller steps and fewer divergences",
    )
    parser.add_argument(
        "--sampler-seed",
        type=int,
        default=0,
        help="the sampler's random seed (a training seed is the spec's seed, or seed:S)",
    )
    add_renamed_option(parser, "--seed", "--sampler-seed", "a seed elsewhere is a training seed")
    parser.add_argument(
        "--pointwise-draws",
        type=int,
        default=1000,
        help="draws (all chains together, evenly thinned) kept for the per-cell posterior "
        "predictive and log likelihood; summaries use every draw (default 1000)",
    )
    parser.add_argument(
        "--held-out-fraction",
        type=float,
        default=0.8,
        help="the authors design: fraction of checkpoints and of num_tasks values fitted "
        "(default 0.8)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing fit file")
    add_threads_option(parser, "the fit (JAX; with fewer threads than chains, chains run in turn)")
    parser.set_defaults(func=run)


def add_fit_options(parser) -> None:
    """The options ``ricl fit`` and ``ricl run`` share, with one default each: what the fit
    reads (measure, splits, early checkpoints), the model, the held-out design and the
    sampler. The defaults are ``FitSettings()``'s (tests/cli/test_fit.py checks it)."""
    parser.add_argument(
        "--measure",
        choices=MEASURES,
        default="auto",
        help="the observed weight on memorizing: barycentric weights over memorizing, "
        "generalizing and constant predictors (an under-confident generalizer does not "
        "read as memorizing), or the relative distance; auto (default): barycentric "
        "where the runs have the constant strategy",
    )
    # Every split enters the fit by default. On the three tiny presets an all-splits fit and an
    # id-only fit (whose other splits are predicted with the id noise scale) gave held-out
    # correlations within 0.004 and 90% coverage within 0.01 of each other (README).
    parser.add_argument(
        "--splits",
        default="all",
        help="comma-separated splits that enter the likelihood, e.g. id (the authors' "
        "choice), or all (the default). Every split is still predicted and scored",
    )
    parser.add_argument(
        "--drop-early",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit only checkpoints after the transformer first comes within 20%% of its "
        "range of the best memorizing-generalizing mixture, as the paper does (default: on; "
        "--no-drop-early fits every checkpoint)",
    )
    add_model_option(parser)
    add_held_out_option(parser)
    add_transition_level_option(parser)
    parser.add_argument(
        "--law-free",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the law-free reference (the same drift and noise around each run's level "
        "or line in log N, no law) beside the baselines: what the law adds (default: on; "
        "about 15 s on a tiny preset)",
    )
    parser.add_argument("--method", choices=METHODS, default="nuts")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)


def add_model_option(parser) -> None:
    """``--model``, shared by ``ricl fit`` and ``ricl run`` (None: ``model_or_default``)."""
    parser.add_argument(
        "--model",
        default=None,
        # checked by model_or_default, not argparse's choices: a removed model gets a line
        # that says so and names its replacement
        metavar="{" + ",".join(MODELS) + "}",
        help=f"the form of the rational model (default {DEFAULT_MODEL}; {OUTPUTS_DEFAULT_MODEL} "
        "with --observation outputs): paper (the authors' alpha, beta, gamma), "
        "anchored-offsets (the evidence at the middle of training in place of gamma, and a "
        "per-run shift of the log odds), anchored-offsets-drift (anchored-offsets whose "
        "runs drift from the law along training, correlated in time), and "
        "anchored-smooth-offsets[-drift] (the same with shifts that vary smoothly in log "
        "num_tasks, a random walk: an unseen num_tasks borrows its neighbours'); "
        "docs/science.md, 'Which model'",
    )


def add_held_out_option(parser) -> None:
    """``--held-out``, shared by ``ricl fit`` and ``ricl run``."""
    parser.add_argument(
        "--held-out",
        default="authors",
        metavar="DESIGN",
        help="which cells the fit leaves out to predict: authors (default: the last 20%% of "
        "checkpoints and of num_tasks values), forecast:F (every checkpoint after F x "
        "max_steps, e.g. forecast:0.3), num-tasks (every other num_tasks value), seed:S "
        "(every run of training seed S; runs of several seeds). The model is scored on "
        "them beside baselines that see only the fitted cells",
    )


def run(args) -> int:
    from rational_icl.io import check_no_live_writer

    _check_args(args)
    check_threads(args.threads)
    check_no_live_writer(args.runs_dir, "ricl fit")  # (ricl run holds it and fits itself)
    configure_jax(max(args.chains, os.cpu_count() or 1), args.threads)  # before JAX starts
    fit_and_summarise(
        args.runs_dir,
        args.out,
        fit_settings(args),
        behaviour_file=args.behaviour,
        force=args.force,
        transition_level=args.transition_level,
    )
    return 0


def fit_settings(args):
    """The FitSettings of ``ricl fit``'s options."""
    from rational_icl.fits.inputs import FitSettings

    return FitSettings(
        **shared_fit_settings(args),
        observation=args.observation,
        ablation=args.ablation,
        pooling=args.pooling,
        centred=args.centred,
        mass_matrix=args.mass_matrix,
        target_accept=args.target_accept,
        strategies=tuple(s.strip() for s in args.strategies.split(",")),
        context_dependent=args.context_dependent,
        seed=args.sampler_seed,
        pointwise_draws=args.pointwise_draws,
        held_out_fraction=args.held_out_fraction,
    )


def shared_fit_settings(args) -> dict:
    """The FitSettings keywords of the options ``ricl fit`` and ``ricl run`` share: the
    measure, the fitted splits, the sampler and the early-checkpoint rule."""
    return dict(
        measure=args.measure,
        splits=_splits(args.splits),
        method=args.method,
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        drop_early=args.drop_early,
        law_free=args.law_free,
        held_out=args.held_out,
        model=model_or_default(args),
        progress_bar=os.isatty(2),
    )


def model_or_default(args) -> str:
    """``--model``, or the default for the observation (the drift is of observed weights);
    a one-line RiclError for a value outside the family (``vocabulary.model_refusal``)."""
    observation = getattr(args, "observation", "relative-distance")
    if args.model is None:
        return default_model(observation)
    refused = model_refusal(args.model, "--model", observation)
    if refused:
        raise RiclError(refused)
    return args.model


def fit_and_summarise(
    runs_dir: Path, out: Path, settings, *, behaviour_file=None, force=True, transition_level=None
):
    """``pipeline.fit_runs``, then the fit's summary on stdout (after the fit is written: a
    summary that fails must not lose the fit); returns the fit's DataTree."""
    tree = fit_runs(runs_dir, out, settings, behaviour_file=behaviour_file, force=force)
    print_summary(tree, out, transition_level)
    return tree


def print_summary(tree, out: Path, transition_level=None) -> None:
    """The fit's summary on stdout, then the file it was written to."""
    _report_safely(tree, transition_level)
    print(f"wrote {out}")


def _report_safely(tree, transition_level=None) -> None:
    """The fit's summary (fits/summary.py) on stdout, with a diagnostic that cannot be
    computed from this few draws (ESS needs several per chain) said in one line instead of
    a traceback."""
    from rational_icl.fits.summary import fit_summary

    try:
        found = fit_summary(tree, transition_level=transition_level)
    except RiclError as err:  # the fit is written, say why there is no summary
        print(f"warning: {err}")
        return
    except (IndexError, ValueError, ZeroDivisionError) as err:
        draws = tree.posterior.sizes.get("draw", 0)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(
            f"warning: the fit's diagnostics need more draws than {draws} per chain (pass "
            f"--draws and --pointwise-draws of 100 or more): {reason}"
        )
        return
    print(summary_text(found), end="")


def _splits(text: str | None) -> tuple[str, ...] | None:
    if text is None or text.strip() == "all":
        return None
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _check_args(args) -> None:
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise RiclError(f"-o {str(out)!r} is a folder, not a file")
    if out.exists() and not args.force:
        raise RiclError(f"fit file {str(out)!r} exists (use --force to overwrite)")
    if out.suffix != ".nc":
        raise RiclError(f"-o {str(out)!r} must end in .nc")
    check_sampler_options(args)
    check_transition_level(args.transition_level)
    if args.behaviour is not None and not Path(args.behaviour).is_file():
        raise RiclError(f"--behaviour {str(args.behaviour)!r} is not a file")
    check_writable_file("-o", out)  # before the fit, not after it


# ---------------------------------------------------------------------------- the summary
# Each function renders part of one FitSummary (fits/summary.py) as lines of text, each
# line ending in a newline ("" where the fit has nothing to say).


def summary_text(found) -> str:
    """The whole of ``ricl fit``'s summary of one fit, in the order it is printed."""
    parts = [
        header_line(found.about),
        found.parameters.to_string() + "\n",  # arviz-stats' digits
        run_offsets_line(found.run_offsets),
        population_lines(found.population),
        skill_lines(found),
        split_lines(found.splits),
        authors_line(found.authors),
        dropped_lines(found.dropped),
        "".join(f"warning: {text}\n" for text in found.diagnostics["problem"]),
        adequacy_line(found),
        transition_lines(found.transition),
        alpha_verdict_lines(found.verdict),
        loo_lines(found),
    ]
    return "".join(parts)


def header_line(about: dict) -> str:
    """What was fitted: model, strategies, measure, splits, ablation, pooling, method."""
    return (
        f"rational model {about['model']} (strategies {about['strategies']}), observed "
        f"{about['observed']} in splits {about['fitted_splits']}, ablation {about['ablation']}, "
        f"pooling {about['pooling']}, method {about['method']}\n"
    )


def skill_lines(found) -> str:
    """The held-out table: the model, every baseline and the law-free references on the same
    cells, per split, and the skill lines: against the best baseline by RMSE and by CRPS, and
    what the law adds (empty for a fit without a predictive_skill group)."""
    if found.skill is None:
        return ""
    splits = found.splits
    cells = ", ".join(f"{s} {int(n)}" for s, n in splits["num_cells"].items())
    lines = [
        f"held-out design {found.about['held_out_design']} (held-out cells: {cells}); every "
        "predictor scored on the same cells:",
        _predictors(found.skill).to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"),
        "skill = 1 - RMSE(model) / RMSE(best baseline seeing only fitted cells): "
        + _per_split(splits, "skill", "best_baseline"),
    ]
    if "best_crps_baseline" in splits:
        lines.append(
            "CRPS skill = 1 - CRPS(model) / CRPS(best baseline by CRPS, a censored normal of "
            "its fitted residuals' spread): "
            + _per_split(splits, "crps_skill", "best_crps_baseline")
        )
    if "best_law_free" in splits:
        lines.append(
            "what the law adds = 1 - RMSE(model) / RMSE(better law-free reference: the "
            "model's drift and noise around each run's level or line in log N, fitted on "
            f"the same cells, {found.law_free_seconds:.0f} s): "
            + _per_split(splits, "law_free_skill", "best_law_free")
            + "; by CRPS: "
            + "; ".join(f"{s} {k:+.3f}" for s, k in splits["law_free_crps_skill"].items())
        )
    return "\n".join(lines) + "\n"


_SHORT_TITLES = {"Pearson r": "r", "90% coverage": "90% cover"}


def _predictors(skill):
    """The skill table's predictor rows, without the skill rows and columns."""
    from rational_icl.fits.summary import SKILL_ROWS

    rows = skill.drop(index=[label for _, label in SKILL_ROWS], errors="ignore")
    rows = rows.drop(columns="skill", level=1).dropna(how="all")
    return rows.rename(columns=_SHORT_TITLES, level=1).rename_axis(None)


def _per_split(splits, value: str, best: str) -> str:
    """``id +0.123 (best: name); ood ...``."""
    rows = zip(splits.index, splits[value], splits[best], strict=True)
    return "; ".join(f"{s} {float(k):+.3f} (best: {b})" for s, k, b in rows)


def split_lines(splits) -> str:
    """Per split: the agreement of predicted and observed weights, held out and fitted."""
    return "".join(
        f"{split}: Pearson r predicted vs observed weight on memorizing: held out "
        f"{s.heldout_correlation:.3f}, fitted {s.fitted_correlation:.3f}; held-out Spearman "
        f"{s.heldout_spearman:.3f}, TVD {s.heldout_tvd:.3f}, R^2 {s.heldout_r2:.3f}; oracle "
        f"(sees held-out cells: each num_tasks' held-out mean) r "
        f"{s.oracle_heldout_correlation:.3f}\n"
        for split, s in splits.iterrows()
    )


def authors_line(a: dict | None) -> str:
    """The authors' evaluation ("" where the fit has none)."""
    from rational_icl.fits.metrics import LAW_ALONE

    if a is None:
        return ""
    law = f"; {LAW_ALONE}" if a["law_alone"] else ""
    return (
        f"authors' evaluation (id split, checkpoints from step {a['authors_threshold']:.0f} "
        f"on, all num_tasks pooled, fitted cells included{law}): Pearson r "
        f"{a['authors_correlation']:.3f}, TVD {a['authors_tvd']:.3f}, R^2 "
        f"{a['authors_r2']:.3f}; oracle (each num_tasks' mean over the same cells) r "
        f"{a['authors_oracle_correlation']:.3f}, TVD {a['authors_oracle_tvd']:.3f}, "
        f"R^2 {a['authors_oracle_r2']:.3f}\n"
    )


def dropped_lines(dropped: dict) -> str:
    """One line per num_tasks whose early checkpoints were not fitted."""
    return "".join(
        f"num_tasks {num_tasks}: early checkpoints not fitted {steps}\n"
        for num_tasks, steps in dropped.items()
    )


def run_offsets_line(offsets) -> str:
    """The run offsets' spread and the three runs furthest from the law, in one line."""
    if offsets is None:
        return ""
    flat = offsets["run_offset"].to_series()
    largest = flat.reindex(flat.abs().sort_values(ascending=False).index)[:3]
    keys = [key if isinstance(key, tuple) else (key,) for key in largest.index]
    named = ", ".join(
        " ".join(f"{dim}={value}" for dim, value in zip(flat.index.names, key, strict=True))
        + f" {offset:+.2f}"
        for key, offset in zip(keys, largest.values, strict=True)
    )
    scale = offsets["offset_scale"]
    low, median, high = (float(scale.sel(statistic=s)) for s in ("low", "median", "high"))
    return (
        f"run offsets (log odds against generalizing): spread offset_scale "
        f"{median:.2f} [{low:.2f}, {high:.2f}]; furthest from the law: {named}\n"
    )


def population_lines(population) -> str:
    """Population and per-configuration alpha, beta, gamma of a partially pooled fit."""
    if population is None:
        return ""
    lines = []
    for name in population.data_vars:
        row = population[name]
        per = row.sel(quantity="configuration")
        dims = [d for d in per.dims if d not in ("quantity", "statistic")]
        stacked = per.stack(configuration=dims) if dims else per.expand_dims("configuration")
        each = ", ".join(
            f"{_config_label(stacked, i)} {float(v[1]):.3g} [{float(v[0]):.3g}, {float(v[2]):.3g}]"
            for i, v in enumerate(stacked.transpose("configuration", "statistic").values)
        )
        pop = row.sel(quantity="population").isel({d: 0 for d in dims})
        new = row.sel(quantity="new_configuration").isel({d: 0 for d in dims})
        lines.append(
            f"{name}: population median {float(pop[1]):.3g} [90%: {float(pop[0]):.3g}, "
            f"{float(pop[2]):.3g}], a new configuration's 95% range [{float(new[0]):.3g}, "
            f"{float(new[2]):.3g}]; per configuration: {each}"
        )
    return "\n".join(lines) + "\n" if lines else ""


def _config_label(stacked, i: int) -> str:
    if "configuration" not in stacked.indexes:
        return ""
    value = stacked.indexes["configuration"][i]
    names = stacked.indexes["configuration"].names
    value = value if isinstance(value, tuple) else (value,)
    return " ".join(f"{n}={v}" for n, v in zip(names, value, strict=True))


def adequacy_line(found) -> str:
    """One warning naming the num_tasks values the strategies cannot represent ("" if none)."""
    worst = found.inadequate
    if worst.empty:
        return ""
    flagged = ",".join(str(d) for d in worst.index)
    values = ", ".join(f"{d} ({v:.2f})" for d, v in worst.items())
    return (
        f"warning: at num_tasks {flagged} no mixture of the strategies comes within "
        f"{found.family_distance_threshold:g} of the memorizing-generalizing distance "
        f"of the transformer (median over the later half of training: {values}): the "
        "observed weight there is partly what no strategy explains (another strategy, or a "
        "misfit as large as the difference the weight measures), and so is alpha fitted to "
        "it (docs/science.md, Adequacy)\n"
    )


def alpha_verdict_lines(verdict) -> str:
    """Whether to believe alpha (fits/verdict.py) and what would test the untested criteria."""
    from rational_icl.fits.verdict import how_to_test, verdict_line

    if verdict is None:
        return ""
    lines = [f"verdict: {verdict_line(verdict)}"]
    lines += [f"  to test {hint}" for hint in how_to_test(verdict)]
    return "\n".join(lines) + "\n"


def transition_lines(found) -> str:
    """A forecast:F fit's transition step forecast (fits/transition.py): the score line and
    one line per run that crosses after the forecast origin ("" for other designs)."""
    if found is None:
        return ""
    a = found.attrs
    origin = int(found.forecast_origin.max())
    text = (
        f"transition step N* (where a run's weight on memorizing crosses {a['level_rule']}), "
        f"forecast from the checkpoints up to step {origin}: "
    )
    if not a["num_scored"]:
        return text + "no run crosses after the forecast origin, nothing to score\n"
    lines = [
        text + f"{a['num_scored']} run(s) cross after it; median |log(forecast / observed)| "
        f"{a['median_abs_log_error']:.2f} (each run's line in log N over its fitted window: "
        f"{a['baseline_median_abs_log_error']:.2f}); 90% intervals cover "
        f"{a['coverage']:.2f} of them"
    ]
    scored = found.where(found.scored).to_dataframe().dropna(subset=["observed_step"])
    for key, row in scored.iterrows():
        names = scored.index.names
        where = " ".join(
            f"{n}={v}"
            for n, v in zip(names, key if isinstance(key, tuple) else (key,), strict=True)
        )
        lines.append(
            f"  {where}: observed {row.observed_step:.0f}, forecast {row.predicted_median:.0f} "
            f"[{row.predicted_low:.0f}, {row.predicted_high:.0f}], line {row.baseline_step:.0f}"
        )
    return "\n".join(lines) + "\n"


def loo_lines(found) -> str:
    """PSIS-LOO's ELPD, or the one warning that says why it is not reported."""
    if found.loo_problem is not None:
        return f"warning: {found.loo_problem}\n"
    result = found.loo
    if result is None:
        return ""
    text = f"PSIS-LOO: elpd_loo {result.elpd:.1f} (se {result.se:.1f}), p_loo {result.p:.1f}\n"
    bad = int((~(result.pareto_k <= result.good_k)).sum())
    return text + (f"warning: {bad} cell(s) with Pareto k > {result.good_k:.2f}\n" if bad else "")

"""The self-contained HTML report: ``index.html`` with every figure embedded as a base64
PNG (it opens offline, no scripts), each figure also as a PNG file and each table as CSV.

``write_report(out, behaviour=..., fits=...)`` makes every figure it can: with runs only,
the figures that need a fit are listed with the reason instead of drawn.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from rational_icl import __version__
from rational_icl.errors import RiclError
from rational_icl.fits.summary import FitSummary, fit_summary
from rational_icl.io import atomic_path
from rational_icl.reports import figures, tables

_DPI = 110


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: file stem, title, what it shows, and how to draw it."""

    name: str
    title: str
    caption: str
    draw: Callable  # (behaviour, fit, config) -> Figure
    per_configuration: bool = True


FIGURES = (
    FigureSpec(
        "01_weight_map",
        "Weight on memorizing over training and num_tasks",
        "Observed weight on memorizing (top) and the fitted model's posterior mean (bottom); "
        "× marks cells held out of the fit.",
        lambda b, f, c: figures.weight_map(b, f, c),
    ),
    FigureSpec(
        "02_weight_over_training",
        "Weight on memorizing over training",
        "One colour per num_tasks: observed points, posterior mean and 90% posterior "
        "predictive band.",
        lambda b, f, c: figures.weight_over_training(b, f, c),
    ),
    FigureSpec(
        "03_predicted_vs_observed",
        "Predicted against observed weight",
        "Each point is one (num_tasks, checkpoint) cell; the legend gives Pearson "
        "correlations on fitted and held-out cells.",
        lambda b, f, c: figures.predicted_vs_observed(f, c),
    ),
    FigureSpec(
        "04a_parameter_trace",
        "Posterior of the parameters",
        "Posterior density and trace of each parameter, one line per chain.",
        lambda b, f, c: figures.parameter_trace(f),
        per_configuration=False,
    ),
    FigureSpec(
        "04b_parameter_rank",
        "Rank plots",
        "Ranks of the draws per chain: well-mixed chains give uniform ranks (inside the band).",
        lambda b, f, c: figures.parameter_rank(f),
        per_configuration=False,
    ),
    FigureSpec(
        "05_posterior_predictive",
        "Posterior predictive check",
        "Distribution of the observed weight over all cells (black) against posterior "
        "predictive draws.",
        lambda b, f, c: figures.posterior_predictive_check(f),
        per_configuration=False,
    ),
    FigureSpec(
        "06_loss_complexity",
        "Loss and complexity of each strategy",
        "Expected loss L_Q on training-task sequences and complexity K_Q against num_tasks, "
        "and the tradeoff between them.",
        lambda b, f, c: figures.loss_complexity(b, f, c),
    ),
    FigureSpec(
        "07_log_odds",
        "Log prior odds, log Bayes factor and log posterior odds",
        "Posterior means, memorizing against generalizing; the black line is where the "
        "posterior odds are even.",
        lambda b, f, c: figures.log_odds(f, c),
    ),
    FigureSpec(
        "08_transition_steps",
        "Transition step N*(D)",
        "Observed: where the weight on memorizing first crosses 0.5. Predicted: "
        "[ln2·(K_M^β − K_G^β)/(γ·(L_G − L_M))]^(1/(1−α)), posterior median and 90% interval.",
        lambda b, f, c: figures.transition_steps(b, f, c),
    ),
    FigureSpec(
        "09_transience",
        "Transient generalization",
        "Weight on generalizing over training at intermediate num_tasks.",
        lambda b, f, c: figures.transience(b, f, c),
    ),
    FigureSpec(
        "10_losses_over_training",
        "Transformer loss against the strategies' losses",
        "The transformer's evaluation loss over training beside L_M and L_G.",
        lambda b, f, c: figures.losses_over_training(b, c),
    ),
    FigureSpec(
        "11_parameters_by_configuration",
        "Parameters across configurations",
        "β, 1 − α and γ of a pooled fit against the configuration values.",
        lambda b, f, c: figures.parameters_by_configuration(f),
        per_configuration=False,
    ),
    FigureSpec(
        "12_family_distance",
        "How far the transformer is from the strategies the model knows",
        "Distance from the transformer to the closest mixture of the strategies, over the "
        "distance between memorizing and generalizing. Where it is large (inside the white "
        "contour) no mixture represents the transformer: its weight on memorizing is the "
        "projection of another strategy, and the fit should not be read there.",
        lambda b, f, c: figures.family_distance_map(b, f, c),
    ),
    FigureSpec(
        "13_context_weights",
        "Evidence accumulation along the context",
        "Weight on memorizing at each context position for a few num_tasks and training "
        "steps: solid observed, dashed the fit's prediction.",
        lambda b, f, c: figures.context_weights(b, f, c),
    ),
)


# The figure shown right after the verdict, above the tables: what the fit is of.
FIRST_FIGURE = "01_weight_map"


@dataclass(frozen=True)
class Rendered:
    """A drawn figure (``png`` bytes) or a skipped one (``skipped`` says why)."""

    name: str
    title: str
    caption: str
    png: bytes | None = None
    skipped: str = ""


def render_figures(
    behaviour: xr.Dataset | None, fit: xr.DataTree | None, specs=FIGURES
) -> list[Rendered]:
    """Draw every figure of ``specs`` it can, once per configuration where that applies."""
    source = behaviour if behaviour is not None else (fit["observed_data"] if fit else None)
    if source is None:
        raise RiclError("a report needs a runs folder or a fit file")
    configs = figures.configurations(source)
    rendered = []
    for spec in specs:
        for config in configs if spec.per_configuration else [{}]:
            suffix = _suffix(config, taken={r.name for r in rendered}, stem=spec.name)
            title = spec.title + (f" ({_describe(config)})" if config else "")
            try:
                figure = spec.draw(behaviour, fit, config)
            except figures.FigureUnavailable as why:
                rendered.append(Rendered(spec.name, spec.title, spec.caption, skipped=str(why)))
                break
            rendered.append(Rendered(spec.name + suffix, title, spec.caption, _png(figure)))
    return rendered


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _slug(value) -> str:
    """``value`` as a file-name part: letters, digits, . _ + - (others, slashes included,
    become '-'), at most 40 characters. The values come from input files' attributes, so a
    crafted one must not steer the path (e.g. '/../../tmp/x') or the page."""
    return _UNSAFE.sub("-", str(value))[:40] or "-"


def _suffix(config: dict, *, taken: set[str], stem: str) -> str:
    """The file-name suffix of one configuration's figure; an index keeps two
    configurations whose values slug alike apart."""
    suffix = "".join(f"_{_slug(k)}{_slug(v)}" for k, v in config.items())
    index, unique = 1, suffix
    while stem + unique in taken:
        index += 1
        unique = f"{suffix}_{index}"
    return unique


def _inside(out: Path, path: Path) -> Path:
    """``path``, after checking that it resolves inside the report folder ``out``."""
    if not path.resolve().is_relative_to(out.resolve()):
        raise RiclError(f"report file {str(path)!r} would be written outside {str(out)!r}")
    return path


def _describe(config: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in config.items())


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    plt.close(figure)
    return buffer.getvalue()


def report_tables(
    fits: dict[str, xr.DataTree], found: FitSummary | None = None
) -> dict[str, tuple[str, pd.DataFrame]]:
    """The report's tables by file stem: (title, table). Empty without a fit; ``found`` is
    the first fit's summary (computed here when not given)."""
    if not fits:
        return {}
    name, fit = next(iter(fits.items()))
    found = found or fit_summary(fit)
    tables_found = {}
    if found.skill is not None:
        design = html.escape(found.about["held_out_design"])
        tables_found["skill"] = (
            f"Predictive skill on the held-out cells, design {design} ({name})",
            found.skill,
        )
    if len(fits) > 1:
        tables_found["models"] = (
            "Predictive skill of every fit (each on its own design's held-out cells)",
            tables.model_skill_table(fits),
        )
    tables_found |= {
        "parameters": (f"Parameter summary ({name})", tables.parameter_table(found)),
        "diagnostics": (f"Diagnostics ({name})", tables.diagnostics_table(found)),
        "heldout": (f"Held-out agreement ({name})", tables.heldout_table(found)),
    }
    same_cells = {n: f for n, f in fits.items() if _design(f) == _design(fit)}
    if len(same_cells) > 1:  # PSIS-LOO ranks fits of the same fitted cells only
        tables_found["comparison"] = (
            "LOO comparison of the fits",
            tables.comparison_table(same_cells),
        )
    return tables_found


def first_summary(
    fits: dict[str, xr.DataTree], transition_level: float | None = None
) -> FitSummary | None:
    """The first fit's summary, its verdict on α read with every fit of its model (None
    without a fit)."""
    if not fits:
        return None
    first, *others = _of_first_model(fits).values()
    return fit_summary(first, transition_level=transition_level, verdict_fits=others)


def _of_first_model(fits: dict[str, xr.DataTree]) -> dict[str, xr.DataTree]:
    """The fits of the first fit's model (the verdict and the forecast read these)."""
    model = next(iter(fits.values())).attrs.get("model", "paper") if fits else None
    return {n: f for n, f in fits.items() if f.attrs.get("model", "paper") == model}


def _forecast_fit(fits: dict[str, xr.DataTree]) -> tuple[str, xr.DataTree] | None:
    """The first ``forecast:F`` fit of the first fit's model, by name (None if none)."""
    found = _of_first_model(fits).items()
    return next(((n, f) for n, f in found if _design(f).startswith("forecast:")), None)


def _design(fit: xr.DataTree) -> str:
    return str(fit.attrs.get("held_out_design", "authors"))


def write_report(
    out: str | Path,
    *,
    behaviour: xr.Dataset | None = None,
    fits: dict[str, xr.DataTree] | None = None,
    title: str = "rational-icl report",
    sources: list[str] | None = None,
    transition_level: float | None = None,
) -> Path:
    """Write ``out/index.html``, ``out/figures/*.png`` and ``out/tables/*.csv``; the PNGs and
    CSVs there that this report did not write (an earlier report's) are removed after it.

    Parameters
    ----------
    out : str or Path
        The report folder (created).
    behaviour : xr.Dataset, optional
        The behaviour dataset of the runs (docs/files.md §2).
    fits : dict of str to xr.DataTree, optional
        Fits by name (docs/files.md §3). Figures show the first; the LOO comparison uses all.
    title : str
    sources : list of str, optional
        The inputs, listed at the top of the page.
    transition_level : float, optional
        The level whose crossing the transition step forecast of a ``forecast:F`` fit of
        the first fit's model reads (fits/transition.py; default: halfway).

    Returns
    -------
    Path
        The ``index.html`` written.
    """
    fits = fits or {}
    fit = next(iter(fits.values()), None)
    out = Path(out)
    found = first_summary(fits, transition_level)
    rendered = render_figures(behaviour, fit)
    found_tables = report_tables(fits, found)
    forecast = _forecast_fit(fits)
    if forecast is not None:
        name, forecast_fit = forecast
        transition = _transition(forecast_fit, fit, found, transition_level)
        heading = (
            f"Transition step forecast from early training ({name}, {transition.attrs['design']})"
        )
        found_tables["transition"] = (heading, tables.transition_table(transition))
        spec = FigureSpec(
            "08b_transition_forecast",
            "Transition step forecast from early training",
            f"Where each run's weight on memorizing crosses {transition.attrs['level_rule']}, "
            f"forecast from the checkpoints up to the origin ({name}): posterior median and 90% "
            "interval (an interval open to the top: some draws never cross), the finished run's "
            "step (stars: runs that cross after the origin), and each run's straight line in "
            "log N over its fitted checkpoints, extrapolated.",
            lambda b, f, c: figures.transition_forecast(transition, c),
        )
        rendered += render_figures(behaviour, forecast_fit, specs=(spec,))
    written = []
    for item in rendered:
        if item.png is not None:
            written.append(_inside(out, out / "figures" / f"{item.name}.png"))
            with atomic_path(written[-1]) as tmp:
                tmp.write_bytes(item.png)
    for stem, (_, table) in found_tables.items():
        written.append(_inside(out, out / "tables" / f"{stem}.csv"))
        with atomic_path(written[-1]) as tmp:
            table.to_csv(tmp, index=_has_index(table))
    page = _page(title, rendered, found_tables, sources or [], behaviour, fit, found)
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    _remove_stale(out, written)
    return out / "index.html"


def _transition(forecast_fit, fit, found, level) -> xr.Dataset:
    """The forecast fit's transition step forecast: the first fit's summary holds it when
    the forecast fit is the first fit."""
    from rational_icl.fits.transition import transition_forecast

    if forecast_fit is fit:
        return found.transition
    return transition_forecast(forecast_fit, level)


def _remove_stale(out: Path, written: list[Path]) -> None:
    """Remove the figures and tables of an earlier report in ``out`` that this one did not
    write (a two-fit report's comparison.csv beside a one-fit report), once the new page
    is in place; nothing else in the folder is touched."""
    kept = {path.resolve() for path in written}
    for pattern in ("figures/*.png", "tables/*.csv"):
        for path in out.glob(pattern):
            if path.resolve() not in kept:
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: sans-serif; max-width: 1300px; margin: 2em auto; color: #222; }
figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
.skipped { color: #8a5a00; } code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _page(title, rendered, found_tables, sources, behaviour, fit, found) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Made by rational-icl {e(__version__)} on "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}.</p>",
    ]
    if sources:
        items = "".join(f"<li><code>{e(s)}</code></li>" for s in sources)
        parts.append(f"<p>Inputs:</p><ul>{items}</ul>")
    if found is not None and found.verdict is not None:
        parts.append(_verdict_html(found.verdict))
    parts.append(_summary(behaviour, fit, found))
    first = [item for item in rendered if item.name == FIRST_FIGURE]
    parts += [_figure_html(item) for item in first]  # the verdict, then the weight map
    if found_tables:
        parts.append("<h2>Tables</h2>")
        for stem, (table_title, table) in found_tables.items():
            parts.append(f'<h3>{e(table_title)}</h3><p><a href="tables/{stem}.csv">CSV</a></p>')
            if table.empty:
                parts.append("<p>Nothing to report.</p>")
            else:
                parts.append(
                    table.to_html(
                        float_format=lambda x: f"{x:.4g}",
                        border=0,
                        escape=True,
                        na_rep="",
                        index=_has_index(table),
                    )
                )
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(item) for item in rendered if item.name != FIRST_FIGURE]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _figure_html(item: Rendered) -> str:
    """A drawn figure, embedded, with its caption; a skipped one as the reason."""
    e = html.escape
    if item.png is None:
        return f'<p class="skipped"><b>{e(item.title)}</b>: not drawn, {e(item.skipped)}.</p>'
    data = base64.b64encode(item.png).decode("ascii")
    return (
        f'<figure id="{e(item.name)}"><h3>{e(item.title)}</h3>'
        f'<img alt="{e(item.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{e(item.caption)} "
        f'(<a href="figures/{e(item.name)}.png">PNG</a>)</figcaption></figure>'
    )


def _has_index(table: pd.DataFrame) -> bool:
    """Whether a table's row labels mean something (a plain 0, 1, 2... index does not)."""
    return not isinstance(table.index, pd.RangeIndex)


def _verdict_html(verdict: xr.Dataset) -> str:
    """Whether to believe α (``FitSummary.verdict``, fits/verdict.py) on the fits of the
    first fit's model, one row per criterion: what passed, what failed and what no fit
    given tests."""
    a = {
        k: html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))
        for k, v in verdict.attrs.items()
    }
    rows = "".join(
        f"<tr><td>{html.escape(str(c))}</td><td>{html.escape(str(s))}</td>"
        f'<td style="text-align:left">{html.escape(str(d))}</td></tr>'
        for c, s, d in zip(
            verdict.criterion.values, verdict.status.values, verdict.detail.values, strict=True
        )
    )
    return (
        f"<h2>Verdict: α {a['alpha_median']} [90%: {a['alpha_low']}, {a['alpha_high']}], "
        f"{a['verdict']}</h2><p>α, the law's growth exponent, of model <b>{a['model']}</b> "
        "(first fit). Believe it when the law predicts held-out checkpoints (forecast) and "
        "held-out num_tasks better than the best baseline and than the same model without "
        "the law, with 90% intervals covering 0.80-0.97 of the held-out cells; the sampler "
        "converged; training seeds agree; and the strategies can represent the transformer "
        f'(docs/science.md, "When to believe α").</p><table><tr><th>criterion</th>'
        f"<th>status</th><th>what was measured</th></tr>{rows}</table>"
    )


def _alpha_line(quantiles: xr.DataArray | None) -> str | None:
    """α's posterior median and 90% interval per configuration (``FitSummary.alpha``; None
    where α is one number: the verdict gives it)."""
    if quantiles is None:
        return None
    others = [d for d in quantiles.dims if d != "quantile"]
    if not others:
        return None
    stacked = quantiles.stack(cell=others)
    parts = []
    for i in range(stacked.sizes["cell"]):
        low, median, high = (float(v) for v in stacked.isel(cell=i).values)
        parts.append(f"{median:.3f} [{low:.3f}, {high:.3f}] at {stacked.cell.values[i]}")
    return (
        "<b>α</b> (how fast evidence accumulates: sublinear below 1), posterior median and "
        f"90% interval: {'; '.join(parts)}"
    )


def _score_lines(splits: pd.DataFrame) -> list[str]:
    """Per split (``FitSummary.splits``): the skill against the best baseline, what the law
    adds (against the law-free reference), and the held-out correlation."""
    lines = []
    for split in [s for s in ("id", "ood", "iwl") if s in splits.index]:
        s = splits.loc[split]
        if not np.isnan(s.skill):
            lines.append(
                f"<b>skill ({split}): {float(s.skill):+.3f}</b> = 1 − RMSE of the model "
                f"({float(s.heldout_rmse):.3f}) / RMSE of the best baseline that sees only "
                f"fitted cells ({html.escape(str(s.best_baseline))}, "
                f"{float(s.best_baseline_rmse):.3f}); 90% predictive coverage "
                f"{float(s.heldout_coverage):.2f} (share of held-out cells whose PIT lies in "
                "[0.05, 0.95]; a cell at 0 or 1 counts by the share of its PIT range inside)"
            )
        if not np.isnan(s.law_free_skill):
            lines.append(
                f"<b>what the law adds ({split}): {float(s.law_free_skill):+.3f}</b> = 1 − RMSE "
                "of the model / RMSE of the better law-free reference (the model's drift and "
                "noise around each run's level or line in log N, fitted on the same cells); by "
                f"CRPS {float(s.law_free_crps_skill):+.3f}; CRPS skill against the best "
                f"baseline {float(s.crps_skill):+.3f}"
            )
        if not np.isnan(s.heldout_correlation):
            text = f"held-out correlation ({split}): {float(s.heldout_correlation):.3f}"
            if not np.isnan(s.oracle_heldout_correlation):
                text += (
                    " (oracle that sees the held-out cells, each num_tasks' held-out "
                    f"mean: {float(s.oracle_heldout_correlation):.3f})"
                )
            lines.append(text)
    return lines


def _summary(behaviour, fit, found) -> str:
    """A few lines on what was fitted: setting, grid, method, held-out correlations."""
    source = behaviour if behaviour is not None else fit["observed_data"]
    setting = (behaviour.attrs if behaviour is not None else fit.attrs).get("setting", "?")
    num_tasks = ", ".join(str(int(d)) for d in source["num_tasks"].values)
    lines = [
        f"setting <code>{html.escape(str(setting))}</code>",
        f"num_tasks {num_tasks}",
        f"{source.sizes['checkpoint']} checkpoints up to step "
        f"{int(source['checkpoint'].values[-1])}",
    ]
    if found is None:
        lines.append("no fit given: figures that need one are listed, not drawn")
    else:
        lines += _fit_lines(found)
    return "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"


def _fit_lines(found: FitSummary) -> list[str]:
    """The summary's lines on the fit: what was fitted, the scores, α, the warnings."""
    from rational_icl.fits.metrics import LAW_ALONE

    # attributes come from a file anyone could have written: escape them all
    about = {k: html.escape(v) for k, v in found.about.items()}
    lines = [
        f"fit: model <b>{about['model']}</b>, {about['method']}, ablation {about['ablation']}, "
        f"pooling {about['pooling']}, strategies {about['strategies']}"
        f"{', context-dependent' if about['context_dependent'] == '1' else ''}; "
        f"held-out design {about['held_out_design']}",
        f"observed: {about['observed']}; fitted splits {about['fitted_splits']}",
        *_score_lines(found.splits),
        *[line for line in [_alpha_line(found.alpha)] if line],
    ]
    if not found.inadequate.empty:
        flagged = ",".join(str(d) for d in found.inadequate.index)
        lines.append(
            f"<b>warning</b>: at num_tasks {flagged} no mixture of the strategies comes "
            "close to the transformer (figure 12): the observed weight there is partly "
            "what no strategy explains, and so is the fit's reading of it"
        )
    a = found.authors
    if a is not None:  # numbers, formatted as floats: never raw text
        lines.append(
            "authors' evaluation (id split, checkpoints from their common early "
            f"threshold, step {a['authors_threshold']:.0f}, on, num_tasks "
            f"pooled{'; ' + LAW_ALONE if a['law_alone'] else ''}): r "
            f"{a['authors_correlation']:.3f}, TVD {a['authors_tvd']:.3f}, R<sup>2</sup> "
            f"{a['authors_r2']:.3f}; oracle (each num_tasks' mean over the same cells) r "
            f"{a['authors_oracle_correlation']:.3f}"
        )
    return lines

"""The HTML report: self-contained, figures as PNG files, tables as CSV, skipped figures
named, and every embedded image loads in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from rational_icl.reports import FIGURES, write_report
from tests.fits.simulated import PAPER_FIT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIT_FIGURES = {
    "03_predicted_vs_observed",
    "04a_parameter_trace",
    "04b_parameter_rank",
    "05_posterior_predictive",
    "07_log_odds",
}


@pytest.fixture(scope="module")
def report(behaviour, fit, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_report(out, behaviour=behaviour, fits={"fit": fit}, sources=["runs", "fit.nc"])


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_embeds_every_figure_and_writes_pngs_and_csvs(report):
    page = report.read_text()
    images = _images(page)
    drawn = sorted(p.stem for p in (report.parent / "figures").glob("*.png"))
    # all but figure 11, which needs a fit pooled over configurations
    assert drawn == sorted(f.name for f in FIGURES if not f.name.startswith("11"))
    assert len(images) == len(drawn)
    assert all(image.startswith(PNG_SIGNATURE) for image in images)
    tables = sorted(p.name for p in (report.parent / "tables").glob("*.csv"))
    assert tables == ["diagnostics.csv", "heldout.csv", "parameters.csv", "skill.csv"]
    parameters = pd.read_csv(report.parent / "tables" / "parameters.csv", index_col=0)
    assert {"alpha", "beta", "gamma"} <= set(parameters.index)
    assert {"mean", "sd", "5%", "95%"} <= set(parameters.columns)


def test_report_opens_offline(report):
    page = report.read_text()
    assert "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert page.count("<img") == len(_images(page))


def test_heldout_table_holds_the_fits_correlations(report, fit):
    table = pd.read_csv(report.parent / "tables" / "heldout.csv")
    row = table[(table["cells"] == "held out") & (table["split"] == "id")]
    assert row["Pearson r"].item() == pytest.approx(fit.attrs["heldout_correlation_id"])


def test_skill_table_comes_first_and_holds_the_fits_numbers(report, fit):
    page = report.read_text()
    assert page.index("Predictive skill on the held-out cells") < page.index("Parameter summary")
    assert "oracle (sees held-out cells)" in page and "no-skill" not in page
    table = pd.read_csv(report.parent / "tables" / "skill.csv", header=[0, 1], index_col=0)
    model = table.loc["rational model (posterior mean)"]
    assert model[("id", "RMSE")] == pytest.approx(fit.attrs["heldout_rmse_id"])
    skill = table.loc["skill: 1 - RMSE model / RMSE best baseline", ("id", "skill")]
    assert skill == pytest.approx(fit.attrs["skill_id"])
    law = "what the law adds: 1 - RMSE model / RMSE better law-free reference"
    assert table.loc[law, ("id", "skill")] == pytest.approx(fit.attrs["law_free_skill_id"])
    assert "what the law adds (id)" in page


@pytest.mark.slow
def test_runs_only_report_names_the_figures_it_skips(behaviour, tmp_path):
    page = write_report(tmp_path, behaviour=behaviour).read_text()
    drawn = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert not drawn & FIT_FIGURES
    assert {"01_weight_map", "06_loss_complexity", "10_losses_over_training"} <= drawn
    assert page.count("not drawn, needs a fit") == len(FIT_FIGURES) + 1  # and figure 11
    assert not (tmp_path / "tables").exists()


@pytest.mark.slow
def test_two_fits_add_a_loo_comparison(behaviour, fit, tmp_path):
    page = write_report(tmp_path, behaviour=behaviour, fits={"first": fit, "second": fit})
    assert "LOO comparison" in page.read_text()
    table = pd.read_csv(tmp_path / "tables" / "comparison.csv")
    assert set(table["fit"]) == {"first", "second"}
    assert table["elpd"].iloc[0] == pytest.approx(table["elpd"].iloc[1])


@pytest.fixture(scope="module")
def three_designs(behaviour, fit, tmp_path_factory):
    """A report of the fit beside (stand-ins for) its num-tasks and forecast:0.3 fits: the
    same draws under the other designs' names, the num-tasks one with skill -0.5."""
    num_tasks = fit.copy()
    num_tasks.attrs = {**fit.attrs, "held_out_design": "num-tasks"}
    num_tasks.attrs |= {f"skill_{s}": -0.5 for s in fit["predictive_skill"].split.values}
    forecast = fit.copy()
    forecast.attrs = {**fit.attrs, "held_out_design": "forecast:0.3"}
    fits = {"fit": fit, "num_tasks": num_tasks, "forecast": forecast}
    out = tmp_path_factory.mktemp("designs")
    return write_report(out, behaviour=behaviour, fits=fits, transition_level=0.3), forecast


def test_the_verdict_reads_every_design_of_the_model_and_loo_ranks_one_design(three_designs):
    """A fit of another held-out design tests its criterion in the verdict table; PSIS-LOO
    does not rank fits of different fitted cells."""
    page, _ = three_designs
    text = page.read_text()
    verdict = text[text.index("<h2>Verdict") : text.index("</table>")]
    assert "do not believe" in verdict
    assert "<td>num-tasks</td><td>fail</td>" in verdict
    assert "num-tasks id: skill -0.50 ≤ 0" in verdict
    assert "<td>forecast</td><td>fail</td>" in verdict  # the authors' draws, coverage 0.66
    assert "<td>seeds</td><td>untested</td>" in verdict
    assert "ricl run --seeds 3 pools three" in verdict
    assert not (page.parent / "tables" / "comparison.csv").exists()


def test_a_forecast_fit_adds_the_transition_forecast(three_designs):
    """The first forecast:F fit of the first fit's model gives the transition table (the
    runs that cross after the origin, fits/transition.py's numbers) and its figure."""
    from rational_icl.fits.transition import transition_forecast

    page, forecast = three_designs
    text = page.read_text()
    assert "<title>rational-icl report</title>" in text  # the page keeps its own title
    assert 'id="08b_transition_forecast"' in text
    assert "Transition step forecast from early training (forecast, forecast:0.3)" in text
    table = pd.read_csv(page.parent / "tables" / "transition.csv")
    found = transition_forecast(forecast, 0.3)
    expected = found.observed_step.values[found.scored.values]
    assert len(table) == len(expected) > 0
    np.testing.assert_allclose(np.sort(table["observed_step"]), np.sort(expected), rtol=1e-12)
    np.testing.assert_allclose(table["level"], 0.3)
    figure = page.parent / "figures" / "08b_transition_forecast.png"
    assert figure.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_two_fits_add_a_skill_row_each_naming_its_model(behaviour, fit, tmp_path):
    page = write_report(tmp_path, behaviour=behaviour, fits={"first": fit, "second": fit})
    text = page.read_text()
    assert "Predictive skill of every fit" in text
    assert f"model <b>{fit.attrs['model']}</b>" in text
    table = pd.read_csv(tmp_path / "tables" / "models.csv", header=[0, 1])
    table.columns = [(top, "" if low.startswith("Unnamed") else low) for top, low in table.columns]
    assert list(table[("fit", "")]) == ["first", "second"]
    assert set(table[("model", "")]) == {fit.attrs["model"]}
    for split in fit["predictive_skill"].split.values:
        expected = float(fit.attrs[f"skill_{split}"])
        np.testing.assert_allclose(table[(str(split), "skill")], expected, rtol=1e-12)
        coverage = float(fit.attrs[f"heldout_coverage_{split}"])
        np.testing.assert_allclose(table[(str(split), "90% coverage")], coverage, rtol=1e-12)


# ---------------------------------------------------------------------------- Chromium

_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Appended to a copy of the page: after load, counts images that decoded with a size.
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((im) => im.complete && im.naturalWidth > 0).length;
  document.body.setAttribute("data-probe", loaded + "/" + images.length);
});
</script>"""


@pytest.mark.skipif(
    _CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_every_image_loads_in_headless_chromium(report, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    command = [
        _CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'data-probe="(\d+)/(\d+)"', result.stdout)
    assert found, f"the probe did not run; stderr: {result.stderr[-2000:]}"
    loaded, total = int(found.group(1)), int(found.group(2))
    assert total == len(_images(report.read_text())) > 0
    assert loaded == total


_INJECTED = "<script>alert(1)</script>"


@pytest.mark.slow
def test_no_file_borne_string_reaches_the_page_raw(behaviour, fit, tmp_path):
    hostile_fit = fit.copy()
    hostile_fit.attrs = dict(fit.attrs)
    for name in ("inference_method", "observation_model", "ablation", "pooling", "setting"):
        hostile_fit.attrs[name] = _INJECTED
    hostile_behaviour = behaviour.copy()
    hostile_behaviour.attrs = behaviour.attrs | {"setting": _INJECTED}
    page = write_report(
        tmp_path,
        behaviour=hostile_behaviour,
        fits={_INJECTED: hostile_fit, "other": hostile_fit},
        title=_INJECTED,
        sources=[_INJECTED],
    ).read_text()
    assert "<script" not in page
    # every hostile string is on the page, escaped: 5 attributes (4 fit, 1 setting), the fit
    # name in three table titles and the comparison table, the title twice, the source
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10


@pytest.mark.slow
def test_a_fit_with_unreliable_loo_gets_a_note_not_numbers(behaviour, fit, tmp_path):
    from rational_icl.fits.inference import fit as fit_model
    from rational_icl.fits.inputs import FitSettings

    # two num_tasks values, one fitted: the Laplace draws miss the posterior (issue 15)
    settings = FitSettings(**PAPER_FIT, method="map", chains=1, draws=200, seed=0)
    unidentified = fit_model(behaviour.isel(num_tasks=[0, 1]), settings)
    fits = {"first": fit, "second": fit, "unidentified": unidentified}
    page = write_report(tmp_path, behaviour=behaviour, fits=fits).read_text()
    assert "PSIS-LOO not reported" in page
    table = pd.read_csv(tmp_path / "tables" / "comparison.csv", keep_default_na=False)
    row = table[table["fit"] == "unidentified"]
    assert row["note"].item().startswith("PSIS-LOO not reported: ")
    assert row["elpd"].item() == ""  # no number for it
    assert (table[table["fit"] != "unidentified"]["note"] == "").all()


@pytest.mark.slow
def test_figure_names_from_file_values_stay_inside_the_report_folder(behaviour, tmp_path):
    # Issue 24, item 1: a configuration value read from the runs ('/../../x/PWN') became part
    # of a figure's file name and the report wrote outside -o.
    hostile = "/../../../escaped/PWN<img src=x onerror=alert(1)>"
    crafted = behaviour.expand_dims(mlp_expansion_factor=np.array([hostile]))
    out = tmp_path / "deep" / "er" / "rep"
    write_report(out, behaviour=crafted)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert all(p.parts[:3] == ("deep", "er", "rep") for p in written), written
    names = [p.name for p in (out / "figures").iterdir()]
    assert names and all(re.fullmatch(r"[A-Za-z0-9._+-]+\.png", n) for n in names), names


def test_first_screen_is_the_verdict_then_the_weight_map(report, fit):
    """Skill and α above the weight map, the weight map above every table; tables whose rows
    are only numbered carry no index column (in the page or the CSV)."""
    page = report.read_text()
    verdict, skill = page.index("<h2>Verdict: α"), page.index("<b>skill (id)")
    assert verdict < skill < page.index('id="01_weight_map"') < page.index("<h2>Tables</h2>")
    low, median, high = fit.posterior.alpha.quantile([0.05, 0.5, 0.95]).values
    # this MAP fit loses to the best baseline under the authors' design: do not believe
    assert f"<h2>Verdict: α {median:.3f} [90%: {low:.3f}, {high:.3f}], do not believe" in page
    assert f"authors id: skill {float(fit.attrs['skill_id']):+.2f} ≤ 0" in page
    heldout = page[page.index("Held-out agreement") :]
    assert "<th>cells</th>" in heldout[: heldout.index("</table>")]
    assert "<th></th>" not in heldout[: heldout.index("</table>")]
    assert pd.read_csv(report.parent / "tables" / "heldout.csv").columns[0] == "cells"

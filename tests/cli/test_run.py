"""`ricl run`: the stages in order, skipped on a rerun, the report's path printed.

Training is not exercised here (it has its own tests): the runs folder is filled with
simulated runs of the very spec first, which `ricl run` counts as trained.
"""

from __future__ import annotations

import pytest

from rational_icl.cli.fit import DEFAULT_MODEL
from rational_icl.cli.main import main
from rational_icl.cli.run import with_seeds
from rational_icl.data import load_specs
from rational_icl.fits import simulate_runs
from tests.specs import SMALL_CATEGORICAL as SPEC
from tests.specs import SMALL_SWEEP

pytestmark = pytest.mark.slow

FIT = ["--method", "map", "--chains", "2", "--draws", "50"]
ONE_DESIGN = [*FIT, "--verdict-designs", "none"]  # the tests of other stages fit less
# One fit, the cheapest, for the tests whose subject is not the fit (the default model, its
# law-free reference and the paper's beside it run in the first test)
CHEAP = [*ONE_DESIGN, "--model", "paper", "--no-law-free"]


def test_run_skips_finished_stages_and_prints_the_report(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    job = tmp_path / "job"
    assert main(["data", str(spec), "--out", str(tmp_path / "data")]) == 0
    simulate_runs(tmp_path / "data", job / "runs", seed=2)
    capsys.readouterr()

    assert main(["run", str(spec), "-o", str(job), *FIT]) == 0
    out = capsys.readouterr().out
    assert "== data: done" in out and "== train: done" in out  # simulated runs count
    assert "== behaviour:" in out and "== ricl fit" in out and "== ricl report" in out
    # the default model into fit.nc, the paper's beside it into fit_paper.nc, and the
    # default under the designs the verdict on alpha needs
    lines = [line for line in out.splitlines() if line.startswith("== ricl fit")]
    fit_line, paper_line, forecast_line, num_tasks_line = lines
    assert f"-o {job / 'fit_forecast-0.3.nc'} " in forecast_line
    assert (
        "--held-out forecast:0.3" in forecast_line and f"--model {DEFAULT_MODEL}" in forecast_line
    )
    assert f"-o {job / 'fit_num-tasks.nc'} " in num_tasks_line
    assert "--held-out num-tasks" in num_tasks_line
    assert "--held-out" not in fit_line and "--held-out" not in paper_line
    assert out.count("verdict: alpha ") == 4  # each fit's summary says what it tests
    assert out.count("transition step N* (where a run's weight on memorizing crosses") == 1
    assert f"-o {job / 'fit.nc'} " in fit_line and f"--model {DEFAULT_MODEL}" in fit_line
    assert f"-o {job / 'fit_paper.nc'} " in paper_line and "--model paper" in paper_line
    assert " --drop-early" in fit_line  # the paper's procedure, on by default
    assert " --measure auto" in fit_line and f" --behaviour {job / 'behaviour.nc'}" in fit_line
    assert f"rational model {DEFAULT_MODEL} (strategies memorizing,generalizing)" in out
    assert "rational model paper (strategies memorizing,generalizing)" in out
    assert "early checkpoints not fitted" in out
    page = job / "report" / "index.html"
    assert out.strip().splitlines()[-1] == f"report: {page}"
    assert page.is_file() and (job / "fit.nc").is_file() and (job / "behaviour.nc").is_file()
    text = page.read_text()
    assert "Predictive skill of every fit" in text  # the two models side by side
    verdict = text[text.index("<h2>Verdict") : text.index("</table>")]
    for criterion in ("forecast", "num-tasks", "authors"):  # each tested by its own fit
        assert f"<td>{criterion}</td><td>untested</td>" not in verdict
    assert 'id="08b_transition_forecast"' in text  # from fit_forecast-0.3.nc

    before = (job / "fit.nc").stat().st_mtime_ns
    assert main(["run", str(spec), "-o", str(job), *FIT]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "train", "behaviour", "fit", "report"):
        assert f"== {stage}: done, kept" in out
    assert (job / "fit.nc").stat().st_mtime_ns == before


def test_run_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["run", "tiny-categorical", "-o", str(tmp_path / "file")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_run_threads_must_be_positive(tmp_path, capsys):
    assert main(["run", "tiny-categorical", "-o", str(tmp_path), "--threads", "0"]) == 1
    assert "--threads 0: allowed: integers >= 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_run_unknown_preset_is_a_spec_error(tmp_path, capsys):
    assert main(["run", "no-such-preset", "-o", str(tmp_path)]) == 2
    assert "neither a spec file nor a preset" in capsys.readouterr().err


def test_run_prints_convergence_and_warns_for_an_untrained_spec(tmp_path, capsys):
    # 25 optimizer steps (checkpoints at 20 and 25, a fit needs two): the regression
    # transformers still predict about the prior mean, several times L_G
    spec = tmp_path / "untrained.toml"
    setting = 'setting = "linear-regression"\nnum_dims = 4\ncontext_length = 8\n'
    spec.write_text(setting + SMALL_SWEEP.replace("max_steps = 1000", "max_steps = 25"))
    job = tmp_path / "job"
    assert main(["run", str(spec), "-o", str(job), "--threads", "1", *CHEAP]) == 0
    captured = capsys.readouterr()
    (line,) = [s for s in captured.out.splitlines() if s.startswith("convergence untrained")]
    assert (
        "(step 25): id loss / best of L_M, L_G: D=2 " in line
        and "D=128 loss / G's on the split: id " in line
    )
    assert "WARNING: untrained: the transformers for num_tasks 2, 8, 32, 128 did not reach" in (
        captured.err
    )
    assert (job / "report" / "index.html").is_file()  # a warning, not an error


def test_run_with_seeds_pools_them_and_can_hold_one_out(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    seeds = tmp_path / "seeds.toml"  # the runs `--seeds 2` trains: seed 1 and seed 2
    (scalar,) = load_specs(str(spec))
    seeds.write_text(with_seeds(scalar, 2).to_toml())
    job = tmp_path / "job"
    assert main(["data", str(seeds), "--out", str(tmp_path / "data")]) == 0
    simulate_runs(tmp_path / "data", job / "runs", seed=2)
    capsys.readouterr()

    argv = ["run", str(spec), "-o", str(job), "--seeds", "2", "--held-out", "seed:2", *CHEAP]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "== train: done" in out  # both seeds' runs were found: nothing trained
    assert "held-out design seed:2" in out and "mean of the other seeds" in out
    assert "alpha: population median" in out and "seed=1" in out and "seed=2" in out
    (fit_line,) = [line for line in out.splitlines() if line.startswith("== ricl fit")]
    assert "--held-out seed:2" in fit_line
    from rational_icl.fits.tree import read_fit

    tree = read_fit(job / "fit.nc")
    assert tree.attrs["pooling"] == "partial" and tree.attrs["held_out_design"] == "seed:2"
    held_out = tree.constant_data.held_out
    assert bool(held_out.sel(seed=2).all()) and not bool(held_out.sel(seed=1).any())


def test_run_refuses_a_bad_held_out_design_before_anything_runs(tmp_path, capsys):
    assert main(["run", "tiny-categorical", "-o", str(tmp_path), "--held-out", "later"]) == 1
    assert "held-out design 'later' is not valid; allowed:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_run_refuses_a_bad_verdict_design_before_anything_runs(tmp_path, capsys):
    argv = ["run", "tiny-categorical", "-o", str(tmp_path), "--verdict-designs", "forecast:2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--verdict-designs: held-out design 'forecast:2'" in err[0]
    assert not any(tmp_path.iterdir())


def test_run_refuses_a_removed_model_before_anything_runs(tmp_path, capsys):
    assert main(["run", "tiny-categorical", "-o", str(tmp_path), "--model", "offsets"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "ricl run: error: --model 'offsets' was removed; the default anchored-offsets-drift "
        "replaces it (leave out --model), or choose one of paper, anchored-offsets, "
        "anchored-offsets-drift, anchored-smooth-offsets, anchored-smooth-offsets-drift\n"
    )
    assert not any(tmp_path.iterdir())


def test_changed_fit_options_refit_and_another_spec_is_refused(tmp_path, capsys):
    # Issue 24, item 11: a rerun with other fit options kept the old fit ("done, kept");
    # item 2: a second spec's runs joined the first's in one folder.
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    job = tmp_path / "job"
    assert main(["data", str(spec), "--out", str(tmp_path / "data")]) == 0
    simulate_runs(tmp_path / "data", job / "runs", seed=2)
    assert main(["run", str(spec), "-o", str(job), *CHEAP]) == 0
    capsys.readouterr()

    before = (job / "fit.nc").stat().st_mtime_ns
    changed = [*CHEAP, "--measure", "relative-distance", "--splits", "id"]
    assert main(["run", str(spec), "-o", str(job), *changed]) == 0
    out = capsys.readouterr().out
    assert "== fit: options differ" in out and "measure auto -> relative-distance" in out
    assert "splits default -> id" in out and "== fit: done, kept" not in out
    assert (job / "fit.nc").stat().st_mtime_ns != before
    assert main(["run", str(spec), "-o", str(job), *changed]) == 0
    assert "== fit: done, kept" in capsys.readouterr().out  # now they agree
    # issue 35, item 7: the sampler's options did not count ("done, kept" a 4 x 1000 fit)
    assert main(["run", str(spec), "-o", str(job), *changed, "--draws", "60"]) == 0
    out = capsys.readouterr().out
    assert "== fit: options differ" in out and "draws 50 -> 60" in out

    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("num_tasks = [2, 8, 32, 128]", "num_tasks = [2, 16]"))
    listing = sorted(p.name for p in job.rglob("*"))
    assert main(["run", str(other), "-o", str(job), *CHEAP]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds runs of the spec in" in err[0] and "spec.toml" in err[0]
    assert sorted(p.name for p in job.rglob("*")) == listing  # nothing written

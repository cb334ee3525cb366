"""Tests for fits/verdict.py: the criteria for believing α, on hand-made fits whose scores,
draws and diagnostics are known."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from rational_icl.fits.verdict import (
    CRITERIA,
    FAILED,
    PASSED,
    UNTESTED,
    alpha_verdict,
    how_to_test,
    verdict_line,
)

SPLITS = ("id", "ood")


def fake_fit(
    design: str = "authors",
    *,
    skill: float = 0.3,
    law_free_skill: float = 0.2,
    coverage: float = 0.9,
    method: str = "nuts",
    divergences: int = 0,
    stuck_chain: bool = False,
    seeds: tuple[int, ...] = (),
    seed_alpha: tuple[float, ...] = (),
    inadequate: str = "",
) -> xr.DataTree:
    """A fit with the scores, α draws and sampler statistics the verdict reads."""
    rng = np.random.default_rng(0)
    chains, draws = 2, 400
    alpha = 0.7 + 0.02 * rng.standard_normal((chains, draws))
    if stuck_chain:  # the second chain elsewhere: R-hat far above 1.01
        alpha[1] += 0.2
    posterior = {"alpha": (("chain", "draw"), alpha)}
    if seeds:
        per_seed = np.asarray(seed_alpha)[None, None, :] + 0.01 * rng.standard_normal(
            (chains, draws, len(seeds))
        )
        posterior = {
            "alpha": (("chain", "draw", "seed"), per_seed),
            "alpha_loc": (("chain", "draw"), 0.85 + 0.001 * rng.standard_normal((chains, draws))),
            "alpha_scale": (("chain", "draw"), 0.2 + 0.001 * rng.standard_normal((chains, draws))),
        }
    coords = {"chain": range(chains), "draw": range(draws)}
    if seeds:
        coords["seed"] = list(seeds)
    diverging = np.zeros((chains, draws), bool)
    diverging[0, :divergences] = True
    attrs = {"held_out_design": design, "inference_method": method, "model": "default"}
    attrs["inadequate_num_tasks"] = inadequate
    for split in SPLITS:
        attrs |= {
            f"skill_{split}": skill,
            f"law_free_skill_{split}": law_free_skill,
            f"heldout_coverage_{split}": coverage,
        }
    return _tree(posterior, coords, diverging, attrs)


def _tree(posterior, coords, diverging, attrs) -> xr.DataTree:
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset(posterior, coords=coords),
            "sample_stats": xr.Dataset(
                {"diverging": (("chain", "draw"), diverging)},
                coords={"chain": coords["chain"], "draw": coords["draw"]},
            ),
            "observed_data": xr.Dataset(coords={"split": list(SPLITS)}),
            "constant_data": xr.Dataset({"family_distance_summary": ("num_tasks", [0.1, 0.3])}),
        }
    )
    tree.attrs = attrs
    return tree


def statuses(verdict: xr.Dataset) -> dict[str, str]:
    return dict(zip(verdict.criterion.values, verdict.status.values, strict=True))


def test_every_criterion_passed_is_believe_and_alpha_is_the_first_fits():
    fits = [fake_fit("authors"), fake_fit("forecast:0.3"), fake_fit("num-tasks")]
    seeded = [
        fake_fit(d, seeds=(1, 2, 3), seed_alpha=(0.69, 0.7, 0.71))
        for d in ("authors", "forecast:0.3", "num-tasks")
    ]
    verdict = alpha_verdict(seeded)
    assert list(verdict.criterion.values) == list(CRITERIA)
    assert set(statuses(verdict).values()) == {PASSED}
    assert verdict.attrs["verdict"] == "believe"
    pooled = seeded[0].posterior["alpha"].values.ravel()
    assert verdict.attrs["alpha_median"] == pytest.approx(np.median(pooled))
    assert verdict.attrs["alpha_low"] == pytest.approx(np.quantile(pooled, 0.05))
    assert verdict.attrs["alpha_high"] == pytest.approx(np.quantile(pooled, 0.95))
    # one seed: nothing says whether another seed would give the same alpha
    single = alpha_verdict(fits)
    assert statuses(single)["seeds"] == UNTESTED
    assert single.attrs["verdict"] == "undecided"


def test_a_design_fails_on_skill_on_what_the_law_adds_or_on_coverage():
    cases = {
        "skill": fake_fit("forecast:0.3", skill=-0.1),
        "law": fake_fit("forecast:0.3", law_free_skill=-0.05),
        "narrow": fake_fit("forecast:0.3", coverage=0.72),
        "vague": fake_fit("forecast:0.3", coverage=1.0),
    }
    for case, fit in cases.items():
        verdict = alpha_verdict([fake_fit("authors"), fit])
        assert statuses(verdict)["forecast"] == FAILED, case
        assert verdict.attrs["verdict"] == "do not believe"
        assert statuses(verdict)["authors"] == PASSED
    detail = alpha_verdict([cases["narrow"]]).detail.sel(criterion="forecast").item()
    assert "coverage 0.72" in detail and "forecast:0.3 id" in detail
    # law_free skill not scored (NaN): that part is not required
    fit = fake_fit("num-tasks", law_free_skill=float("nan"))
    assert statuses(alpha_verdict([fit]))["num-tasks"] == PASSED


def test_untested_designs_name_the_fit_that_tests_them():
    verdict = alpha_verdict([fake_fit("authors")])
    found = statuses(verdict)
    assert found["forecast"] == UNTESTED and found["num-tasks"] == UNTESTED
    assert found["authors"] == PASSED
    hints = "\n".join(how_to_test(verdict))
    assert "--held-out forecast:0.3" in hints and "--held-out num-tasks" in hints
    line = verdict_line(verdict)
    assert line.startswith("alpha 0.699 [90%: 0.670, 0.731]: undecided")
    assert "undecided" in line and "untested forecast, num-tasks, seeds" in line


def test_sampler_fails_on_divergences_or_r_hat_and_is_untested_for_map():
    assert statuses(alpha_verdict([fake_fit()]))["sampler"] == PASSED
    diverged = alpha_verdict([fake_fit(), fake_fit("forecast:0.3", divergences=3)])
    assert statuses(diverged)["sampler"] == FAILED
    assert "3 divergent" in diverged.detail.sel(criterion="sampler").item()
    stuck = alpha_verdict([fake_fit(stuck_chain=True)])
    assert statuses(stuck)["sampler"] == FAILED
    assert "R-hat" in stuck.detail.sel(criterion="sampler").item()
    assert statuses(alpha_verdict([fake_fit(method="map")]))["sampler"] == UNTESTED


def test_a_seed_outside_the_population_range_fails():
    # population: logit alpha ~ N(0.85, 0.2): 95% range [0.62, 0.77]
    inside = fake_fit(seeds=(1, 2, 3), seed_alpha=(0.66, 0.7, 0.74))
    outside = fake_fit(seeds=(1, 2, 3), seed_alpha=(0.66, 0.7, 0.95))
    assert statuses(alpha_verdict([inside]))["seeds"] == PASSED
    verdict = alpha_verdict([outside])
    assert statuses(verdict)["seeds"] == FAILED
    assert "seed(s) 3" in verdict.detail.sel(criterion="seeds").item()


def test_adequacy_fails_where_the_fit_flags_num_tasks():
    assert statuses(alpha_verdict([fake_fit()]))["adequacy"] == PASSED
    verdict = alpha_verdict([fake_fit(inadequate="64,128")])
    assert statuses(verdict)["adequacy"] == FAILED
    assert "fails adequacy (num_tasks 64,128" in verdict_line(verdict)

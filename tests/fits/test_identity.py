"""Issue 24, items 5 and 10: fits are checked before use; runs carry an identity."""

from __future__ import annotations

import pytest
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits.identity import check_fit, check_same_runs, runs_identity
from rational_icl.fits.tree import read_fit, write_fit
from tests.fits.conftest import run_attrs


def _without(fit, group, name=None):
    broken = fit.copy()
    if name is None:
        del broken[group]
    else:
        broken[group] = broken[group].to_dataset().drop_vars(name)
    return broken


@pytest.mark.parametrize(
    ("group", "name", "words"),
    [
        ("posterior", "alpha", "group 'posterior' lacks alpha"),
        ("constant_data", None, "has no 'constant_data' group"),
        ("observed_data", "observed_weight", "lacks observed_weight"),
    ],
)
def test_a_fit_missing_what_readers_need_is_refused(map_fit, tmp_path, group, name, words):
    path = write_fit(_without(map_fit, group, name), tmp_path / "fit.nc")
    with pytest.raises(RiclError, match=words) as info:
        read_fit(path)
    assert str(path) in str(info.value)


def test_a_text_attribute_of_another_type_is_refused(map_fit):
    broken = map_fit.copy()
    broken.attrs = dict(map_fit.attrs) | {"ablation": 3}
    with pytest.raises(RiclError, match="attribute ablation=3 is not text"):
        check_fit(broken, "fit.nc")


def _run(checkpoints=(20, 40), **attrs) -> xr.Dataset:
    return xr.Dataset(coords={"checkpoint": list(checkpoints)}, attrs=run_attrs(**attrs))


def test_the_runs_identity_names_the_runs_not_their_order_or_time():
    one, two = _run(num_tasks=2), _run(num_tasks=8)
    later = _run(num_tasks=2, created="later")
    same = runs_identity([two, later])
    assert runs_identity([one, two]) == same
    assert runs_identity([one, _run(num_tasks=8, seed=2)]) != same


TRAINING = 'setting = "categorical-sequence"\nname = "a"\nnum_tasks = [2, 8]\n[training]\n'


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (_run(spec=TRAINING + "weight_decay = 0.1\n"), "weight_decay"),
        (_run(spec=TRAINING + 'lr_schedule = "cosine"\n'), "lr_schedule"),
        (_run(spec=TRAINING + "grad_clip = 0.5\n"), "grad_clip"),
        (_run(spec=TRAINING + 'precision = "bf16"\n'), "precision"),
        (_run(spec=TRAINING + "num_checkpoints = 7\n"), "num_checkpoints"),
        (_run(spec=TRAINING.replace("[training]", "prior = [0.5]\n[training]")), "prior"),
        (_run(checkpoints=(20, 40, 80), spec=TRAINING), "checkpoints"),
    ],
)
def test_every_training_field_and_the_checkpoints_change_the_identity(other, why):
    # Issue 35, items 2 and 3: a fit of runs with another weight_decay (or of the same runs
    # before they finished) passed as a fit of these runs.
    base = runs_identity([_run(spec=TRAINING)])
    assert runs_identity([other]) != base, why
    renamed = TRAINING.replace('name = "a"', 'name = "b"').replace("[2, 8]", "[2]")
    assert runs_identity([_run(spec=renamed)]) == base  # the name and other runs: no change


def test_a_file_of_other_runs_is_refused_one_made_before_identities_passes(map_fit):
    fit = map_fit.copy()
    fit.attrs = dict(map_fit.attrs) | {"runs_identity": "v2-abc"}
    with pytest.raises(RiclError, match="was made from other runs than 'RUNS'"):
        check_same_runs("v2-def", fit, "fit 'b.nc'", "RUNS")
    old = map_fit.copy()
    old.attrs = {k: v for k, v in map_fit.attrs.items() if k != "runs_identity"}
    check_same_runs("v2-def", old, "fit 'old.nc'", "RUNS")  # no identity recorded
    old.attrs["runs_identity"] = "abc"  # the earlier form, without the checkpoints
    check_same_runs("v2-def", old, "fit 'old.nc'", "RUNS")


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        ({"model": 7}, "attribute model=7 is not text"),
        ({"held_out_design": 3}, "attribute held_out_design=3 is not text"),
        ({"heldout_correlation_id": "high"}, "heldout_correlation_id='high' is not a number"),
    ],
)
def test_attributes_of_the_wrong_type_are_refused(map_fit, attrs, words):
    # Issue 35, item 11: model=7 and held_out_design=3 were drawn into a report.
    broken = map_fit.copy()
    broken.attrs = dict(map_fit.attrs) | attrs
    with pytest.raises(RiclError, match=words):
        check_fit(broken, "fit.nc")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("weight_memorizing", float("nan"), "weight_memorizing has no finite value; allowed"),
        ("weight_memorizing", 1.5, "weight_memorizing has values from 1.5 to 1.5; allowed"),
        ("alpha", float("inf"), "posterior alpha holds .* non-finite draw"),
    ],
)
def test_a_posterior_of_impossible_values_is_refused_on_read(map_fit, tmp_path, name, value, words):
    # Issue 35, item 11: a fit whose weight_memorizing was all NaN made a report, rc 0.
    broken = map_fit.copy()
    posterior = broken["posterior"].to_dataset()
    posterior[name] = posterior[name] * 0 + value
    broken["posterior"] = xr.DataTree(posterior)
    path = write_fit(broken, tmp_path / "fit.nc")
    with pytest.raises(RiclError, match=words) as info:
        read_fit(path)
    assert str(info.value).startswith(f"fit file {str(path)!r}: posterior ")

"""Issue 24, items 5 and 10: fits are checked before use; runs carry an identity."""

from __future__ import annotations

import pytest

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


def test_the_runs_identity_names_the_runs_not_their_order_or_time():
    one, two = run_attrs(num_tasks=2), run_attrs(num_tasks=8)
    same = runs_identity([two, one | {"created": "later"}])
    assert runs_identity([one, two]) == same
    assert runs_identity([one, two | {"seed": 2}]) != same


def test_a_file_of_other_runs_is_refused_one_made_before_identities_passes(map_fit):
    fit = map_fit.copy()
    fit.attrs = dict(map_fit.attrs) | {"runs_identity": "abc"}
    with pytest.raises(RiclError, match="was made from other runs than 'RUNS'"):
        check_same_runs("def", fit, "fit 'b.nc'", "RUNS")
    check_same_runs("def", map_fit, "fit 'old.nc'", "RUNS")  # no identity recorded

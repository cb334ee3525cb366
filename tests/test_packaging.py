"""pyproject.toml installs every package: the five stages at the top of the repository and
the glue in src/rational_icl/ (docs/architecture.md, "Where each import lives"), so a new
subpackage cannot be left out of an install."""

from tests.layout import ROOT, package_folders, pyproject_setuptools

STAGES = ("data", "modeling", "training", "fits", "reports")


def test_each_stage_is_a_top_level_folder_and_the_glue_is_under_src():
    expected = {"rational_icl": ROOT / "src" / "rational_icl"}
    expected.update({f"rational_icl.{stage}": ROOT / stage for stage in STAGES})
    assert package_folders() == expected
    # no other top-level folder is a package that pyproject forgets to map
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert top == {*STAGES, "tests"}


def test_the_packages_list_names_every_folder_with_an_init():
    found = set()
    for package, folder in package_folders().items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join([package, *parts]))
    assert sorted(pyproject_setuptools()["packages"]) == sorted(found)


def test_every_folder_with_source_files_is_a_package():
    loose = [
        str(path.relative_to(ROOT))
        for folder in package_folders().values()
        for path in folder.rglob("*.py")
        if not (path.parent / "__init__.py").is_file()
    ]
    assert loose == []

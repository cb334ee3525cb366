"""Where the package's source files stand: the stages at the top of the repository, the glue
in src/rational_icl/, as pyproject.toml's [tool.setuptools.package-dir] maps them."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyproject_setuptools() -> dict:
    """The [tool.setuptools] table of pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folders() -> dict[str, Path]:
    """Dotted package name -> its folder, for each package pyproject maps to a folder."""
    mapping = pyproject_setuptools()["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for package, folder in package_folders().items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return dict(sorted(out.items()))

"""Data flows one way through the stages (docs/architecture.md): no module imports a later
stage, the torch-free stages never load torch, and nothing imports in a circle."""

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.layout import modules as _modules

STAGES = ("data", "modeling", "training", "fits", "reports", "pipeline", "cli")
# top-level modules every stage may use
SHARED = ("errors", "io", "formulas", "facts", "vocabulary")
TORCH_FREE = ("fits", "reports")
# modules of an optional extra, and the one package each may import that the core may not
OPTIONAL = {"rational_icl.training.hf": "transformers"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from rational_icl import formulas` names a module too
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "rational_icl" or len(parts) == 1:
        return None
    return parts[1]


def test_no_module_imports_a_later_stage_or_torch_where_it_must_not():
    arrows = []
    for name, path in _modules().items():
        source = _stage(name)
        for target in _imports(path):
            stage = _stage(target)
            if source in SHARED and stage in STAGES:
                arrows.append(f"{name} -> {target} (shared modules import no stage)")
            elif (
                source in STAGES and stage in STAGES and STAGES.index(stage) > STAGES.index(source)
            ):
                arrows.append(f"{name} -> {target}")
            if source in TORCH_FREE and target.split(".")[0] == "torch":
                arrows.append(f"{name} -> torch")
    assert arrows == []


def test_only_the_optional_modules_import_their_extra():
    extras = set(OPTIONAL.values())
    found = [
        f"{name} -> {target}"
        for name, path in _modules().items()
        for target in _imports(path)
        if target.split(".")[0] in extras and OPTIONAL.get(name) != target.split(".")[0]
    ]
    assert found == []


def test_no_import_circle_between_modules():
    modules = _modules()
    graph = {
        name: {t for t in _imports(path) if t in modules and t != name}
        for name, path in modules.items()
    }
    # a package __init__ re-exports its modules: an edge into a package is not a circle
    # through it unless the package's own modules come back
    state, circles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph[node]:
            if nxt.startswith(node + "."):  # a package importing its own submodule
                continue
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    circles = [c for c in circles if not _through_own_package(c)]
    assert circles == []


def _installed(module: str) -> bool:
    """Whether a module's optional extra (if it has one) is installed."""
    extra = OPTIONAL.get(module)
    return extra is None or importlib.util.find_spec(extra) is not None


def _through_own_package(circle: str) -> bool:
    """A submodule that imports its package's __init__, which imports it back, is the usual
    re-export pattern, not a design circle."""
    names = circle.split(" -> ")
    return any(
        b.startswith(a + ".") or a.startswith(b + ".")
        for a, b in zip(names, names[1:], strict=False)
    )


def _last_json_line(code: str):
    """Run ``code`` in a fresh interpreter; the JSON of its last printed line."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_importing_a_stage_loads_no_later_stage(stage):
    modules = [name for name in _modules() if _stage(name) == stage and _installed(name)]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('rational_icl.')"
        " or m == 'torch')))\n"
    )
    loaded = _last_json_line(code)
    later = STAGES[STAGES.index(stage) + 1 :]
    assert [m for m in loaded if _stage(m) in later] == []
    if stage in TORCH_FREE:
        assert "torch" not in loaded


def test_the_fits_front_door_loads_jax_only_when_a_fit_name_is_read():
    code = (
        "import json, sys\n"
        "import rational_icl.fits as fits\n"
        "bare = sorted(m for m in ('jax', 'numpyro') if m in sys.modules)\n"
        "from rational_icl.fits import FitSettings, fit, read_fit, write_fit\n"
        "from rational_icl.fits import inference, inputs, tree\n"
        "same = [fit is inference.fit, FitSettings is inputs.FitSettings,\n"
        "        read_fit is tree.read_fit, write_fit is tree.write_fit]\n"
        "print(json.dumps({'bare': bare, 'same': same, 'all': sorted(fits.__all__),\n"
        "                  'listed': sorted(set(fits.__all__) - set(dir(fits)))}))\n"
    )
    found = _last_json_line(code)
    assert found["bare"] == []  # no JAX, so no JAX setting changed, on a bare import
    assert found["same"] == [True, True, True, True]
    assert {"FitSettings", "fit", "read_fit", "write_fit"} <= set(found["all"])
    assert found["listed"] == []  # every exported name is in dir()


def test_importing_changes_no_jax_setting_and_configure_jax_does():
    modules = [name for name in _modules() if _stage(name) in ("fits", "reports", "pipeline")]
    code = (
        "import importlib, json, os, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "import jax\n"
        "imported = jax.config.jax_enable_x64\n"
        "flags = os.environ.get('XLA_FLAGS', '')\n"
        "from rational_icl.pipeline import configure_jax\n"
        "configure_jax(3)\n"
        "print(json.dumps([imported, flags, jax.config.jax_enable_x64, jax.device_count()]))\n"
    )
    imported, flags, configured, devices = _last_json_line(code)
    assert (imported, flags) == (False, os.environ.get("XLA_FLAGS", ""))  # import sets nothing
    assert (configured, devices) == (True, 3)

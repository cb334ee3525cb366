"""Every walkthrough notebook runs top to bottom (nbclient) on a small simulated sweep of
its setting, with a quick MAP fit, and is stored with its outputs stripped."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rational_icl.cli.main import main
from rational_icl.fits import simulate_runs
from tests.specs import SMALL_SWEEP

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
# Small specs per setting, and a gamma that puts the switch to memorizing inside training.
SETTINGS = {
    "categorical": ('setting = "categorical-sequence"\nnum_dims = 4\ncontext_length = 8\n', 3.0),
    "regression": ('setting = "linear-regression"\nnum_dims = 2\ncontext_length = 8\n', 0.03),
    "classification": ('setting = "classification"\nnum_dims = 4\ncontext_length = 8\n', 3.0),
}


def test_every_setting_has_a_notebook():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_outputs_are_stripped(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.parametrize(
    "name",
    ["categorical", "regression", "classification"],
)
def test_notebook_runs(name, tmp_path):
    header, gamma = SETTINGS[name]
    spec = tmp_path / "small.toml"
    spec.write_text(header + SMALL_SWEEP)
    assert main(["data", str(spec), "--out", str(tmp_path / "data")]) == 0
    runs = simulate_runs(tmp_path / "data", tmp_path / "runs", gamma=gamma, seed=1)

    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = (
        f"from pathlib import Path\nRUNS = Path({str(runs)!r})\n"
        'METHOD = "map"\nCHAINS, DRAWS, WARMUP = 2, 50, 0'
    )
    client = NotebookClient(notebook, timeout=300, kernel_name="python3")
    client.execute(cwd=str(tmp_path))
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 8  # the figures drew inline

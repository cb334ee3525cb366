"""`ricl run --plan`: the costs printed, nothing written."""

from __future__ import annotations

import pytest
import torch

from rational_icl.cli.main import main
from tests.specs import SMALL_CATEGORICAL as SPEC


def test_plan_prints_the_costs_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC.replace("max_steps = 1000", "max_steps = 200"))
    job = tmp_path / "job"
    assert main(["run", str(spec), "-o", str(job), "--plan", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(maxsplit=1) for line in out.splitlines()[1:] if " " in line)
    assert lines["runs"].strip() == "4"
    assert lines["member-steps"].strip() == "800"  # 4 runs x 200 steps
    assert "disk: predictions" in out and "disk: fit" in out and "time on cpu" in out
    assert not job.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_plan_on_cuda_without_cuda_is_one_line(tmp_path, capsys):
    assert main(["run", "tiny-categorical", "-o", str(tmp_path), "--plan", "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and len(err.strip().splitlines()) == 1

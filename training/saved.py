"""Record checkpoints saved by a training that already ran (``ricl record``).

A checkpoint folder holds one sub-folder per run, named after the run (``Run.name``, the
stem of its predictions file), with one entry per saved step:

- ``checkpoint-<step>/``: a folder as the HF ``Trainer`` saves it (``model.safetensors``
  or ``pytorch_model.bin``), or as ``save_pretrained`` writes it;
- ``checkpoint-<step>.pt``, ``step-<step>.pt`` (or ``.pth``, ``.bin``): a state dict
  saved with ``torch.save``; ``.safetensors``: one saved with safetensors.

Loading is safe: ``torch.load(..., weights_only=True)``, safetensors, or the HF
``from_pretrained`` of a local folder; nothing runs code from a checkpoint.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rational_icl.data import Run
from rational_icl.errors import RiclError

STEP = re.compile(r"^(?:checkpoint|step)[-_](\d+)(\.pt|\.pth|\.bin|\.safetensors)?$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_factory(text: str) -> Callable[[Run], nn.Module]:
    """``MODULE:FACTORY`` (a dotted module or a ``.py`` file) to the factory function."""
    module_name, _, name = text.rpartition(":")
    if not module_name or not name:
        raise RiclError(f"--model {text!r}: give MODULE:FACTORY, e.g. my_models:build")
    try:
        if module_name.endswith(".py"):
            module = _module_from_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as err:
        raise RiclError(f"--model {text!r}: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise RiclError(f"--model {text!r}: {module_name!r} has no function {name!r}")
    return factory


def saved_steps(folder: Path) -> list[tuple[int, Path]]:
    """The (step, path) of every saved checkpoint in a run's folder, by step."""
    found = []
    for path in folder.iterdir():
        match = STEP.match(path.name)
        if match and (path.is_dir() == (match.group(2) is None)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def load_checkpoint(model: nn.Module, path: Path, device="cpu") -> nn.Module:
    """``model`` with the weights of one saved checkpoint (module docstring), in eval mode."""
    if path.is_dir() and hasattr(model, "from_pretrained") and (path / "config.json").exists():
        try:
            loaded = type(model).from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise RiclError(f"cannot load checkpoint {str(path)!r}: {_first_line(err)}") from None
        return loaded.to(device).eval()
    state = _state_dict(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise RiclError(
            f"checkpoint {str(path)!r} does not fit the factory's model ({_first_line(err)})"
        ) from None
    return model.to(device).eval()


def trainer_losses(path: Path) -> list[tuple[int, float]]:
    """The training losses an HF checkpoint folder logged (``trainer_state.json``)."""
    state_file = path / "trainer_state.json"
    if not path.is_dir() or not state_file.exists():
        return []
    try:
        history = json.loads(state_file.read_text()).get("log_history", [])
    except (OSError, ValueError):
        return []
    return [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e and "step" in e]


def _state_dict(path: Path) -> dict:
    if path.is_dir():
        weights = [path / name for name in WEIGHT_FILES if (path / name).exists()]
        if not weights:
            raise RiclError(
                f"checkpoint folder {str(path)!r} holds none of {', '.join(WEIGHT_FILES)}"
            )
        path = weights[0]
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # comes with transformers

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise RiclError(
            f"{str(path)!r}: reading safetensors needs pip install safetensors"
        ) from None
    # a damaged or foreign file can fail in the unpickler with any exception type
    except Exception as err:
        raise RiclError(f"cannot load checkpoint {str(path)!r}: {_first_line(err)}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training state: {"model": ..., "optimizer": ...}
    if not isinstance(state, dict):
        raise RiclError(f"checkpoint {str(path)!r} is not a state dict")
    return state


def _module_from_file(path: Path):
    if not path.is_file():
        raise ImportError(f"no file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

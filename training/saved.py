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
from rational_icl.formulas import MAX_STEPS

STEP = re.compile(r"^(?:checkpoint|step)[-_](\d+)(\.pt|\.pth|\.bin|\.safetensors)?$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_factory(text: str) -> Callable[[Run], nn.Module]:
    """``MODULE:FACTORY`` (a dotted module or a ``.py`` file) to the factory function,
    wrapped so that a factory that raises or returns no ``nn.Module`` is a one-line
    RiclError (user code: any exception, at import or at the call)."""
    module_name, _, name = text.rpartition(":")
    if not module_name or not name:
        raise RiclError(f"--factory {text!r}: give MODULE:FACTORY, e.g. my_models:build")
    try:
        if module_name.endswith(".py"):
            module = _module_from_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as err:
        raise RiclError(f"--factory {text!r}: cannot import {module_name!r} ({err})") from None
    except Exception as err:  # the module's own code failed: a syntax error, a raise
        raise RiclError(
            f"--factory {text!r}: importing {module_name!r} failed: {_described(err)}"
        ) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise RiclError(f"--factory {text!r}: {module_name!r} has no function {name!r}")
    return _checked_factory(factory, text, name)


def _checked_factory(factory, text: str, name: str) -> Callable[[Run], nn.Module]:
    def build(run: Run) -> nn.Module:
        try:
            model = factory(run)
        except Exception as err:  # user code
            raise RiclError(
                f"--factory {text!r}: {name}(run {run.name!r}) failed: {_described(err)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise RiclError(
                f"--factory {text!r}: {name}(run {run.name!r}) returned "
                f"{type(model).__name__}; allowed: a torch.nn.Module"
            )
        return model

    return build


def saved_steps(folder: Path) -> list[tuple[int, Path]]:
    """The (step, path) of every saved checkpoint in a run's folder, by step; a step past
    ``MAX_STEPS`` (which no file can store) is refused."""
    found = []
    for path in folder.iterdir():
        match = STEP.match(path.name)
        if match and (path.is_dir() == (match.group(2) is None)):
            step = int(match.group(1))
            if not 1 <= step <= MAX_STEPS:
                raise RiclError(
                    f"checkpoint {str(path)!r}: step {step} is out of range; allowed: steps "
                    f"from 1 to {MAX_STEPS}"
                )
            found.append((step, path))
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
            f"checkpoint {str(path)!r} does not fit the factory's model: "
            f"{_misfit(model, state) or _first_line(err)}"
        ) from None
    return model.to(device).eval()


def _misfit(model: nn.Module, state: dict) -> str:
    """Which keys and shapes of ``state`` differ from ``model``'s, in words ('' if none:
    torch's own message then says why)."""
    expected = model.state_dict()
    problems = [
        f"{key} has shape {list(state[key].shape)} in the checkpoint, {list(value.shape)} in "
        "the model"
        for key, value in expected.items()
        if key in state
        and hasattr(state[key], "shape")
        and tuple(state[key].shape) != tuple(value.shape)
    ]
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing:
        problems.append(f"the checkpoint lacks {_some(missing)}")
    if unexpected:
        problems.append(f"the model has no {_some(unexpected)}")
    return "; ".join(problems)


def _some(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more


def trainer_losses(path: Path) -> list[tuple[int, float]]:
    """The training losses an HF checkpoint folder logged (``trainer_state.json``)."""
    state_file = path / "trainer_state.json"
    if not path.is_dir() or not state_file.exists():
        return []
    try:
        history = json.loads(state_file.read_text()).get("log_history", [])
    except (OSError, ValueError, AttributeError):
        return []
    losses = []
    for entry in history if isinstance(history, list) else []:
        if not isinstance(entry, dict) or "loss" not in entry or "step" not in entry:
            continue
        step, loss = entry["step"], entry["loss"]
        # bool is an int in Python, never a step; JSON gives no other integer types
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEPS:
            raise RiclError(
                f"{str(state_file)!r}: log_history step {step!r} is not a training step; "
                f"allowed: integers from 0 to {MAX_STEPS}"
            )
        if isinstance(loss, bool) or not isinstance(loss, int | float):
            raise RiclError(
                f"{str(state_file)!r}: log_history loss {loss!r} at step {step} is not a "
                "number; allowed: numbers"
            )
        losses.append((step, float(loss)))
    return losses


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
        raise RiclError(f"cannot load checkpoint {str(path)!r}: {_load_failure(err)}") from None
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
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(path.stem, None)  # no half-imported module for the next import
        raise
    return module


def _load_failure(err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, without torch's advice to load with
    weights_only=False (which runs the file's code: never to be suggested)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        if detail.startswith("Unsupported global"):
            what = detail.split(" was not", 1)[0].removeprefix("Unsupported global: ")
            return (
                f"it holds a pickled Python object ({what}), not only tensors; save the "
                "model's state_dict() instead"
            )
        return f"not a file torch.save wrote, or damaged ({detail.rstrip('.')})"
    # the first sentence: torch follows it with advice (and a weights_only hint)
    return _first_line(err).split(". ", 1)[0].rstrip(".")


def _described(err: Exception) -> str:
    """``Type: first line`` of an exception of user code."""
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

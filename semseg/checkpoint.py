"""The semseg checkpoint: a documented dict of tensors and plain Python values.

Keys (all optional except ``format``, ``model_name`` and ``model``):

==================  ==========================================================
``format``          ``"semseg-checkpoint"``
``version``         int, 1
``model_name``      name given to :func:`semseg.create_model`
``model_kwargs``    extra keyword arguments of ``create_model`` (plain values)
``model_meta``      ``model.pretrained_cfg`` as a dict (num_classes, class
                    names, palette, mean, std, ignore index)
``model``           state dict of the weights to use for inference (the EMA
                    weights when EMA is on)
``train_model``     state dict of the raw training weights (when EMA is on)
``optimizer``, ``scheduler``, ``scaler``, ``ema``   their state dicts
``epoch``, ``step`` progress counters (``epoch`` = epochs completed)
``rng``             RNG states (python, numpy, torch) for exact resume
``config``          the resolved run config as a plain dict
``best_miou``       best validation mIoU so far; ``metrics`` the last scores
``best_scores``     the report (:func:`semseg.metrics.report`) of the best validation
``class_pixels``    pixels per class of the training set (the report's chart)
==================  ==========================================================

A run's ``best.pt`` leaves out what only resuming needs (``train_model``,
``optimizer``, ``scheduler``, ``scaler``, ``ema``, ``rng``); ``last.pt`` has it all.

Checkpoints are loaded with ``torch.load(weights_only=True)``: a file carrying
a pickled object is refused, never executed. They are written atomically.
"""

from __future__ import annotations

import os
import pickle
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semseg.errors import SemsegError
from semseg.io import atomic_write

if TYPE_CHECKING:  # torch is imported by the functions that read and write: default_model_path needs none
    import torch

# the embedded default model: an inference checkpoint shipped in the package (README, "The default model").
# Here, not in semseg.models: a command that finds its converted graph in the cache never imports the zoo.
DEFAULT_MODEL_PATH = Path(str(resources.files("semseg"))) / "assets" / "default_model.pt"
CHECKPOINT_FORMAT = "semseg-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, then rename)."""
    import torch

    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)


def load_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and one clear error per failure."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SemsegError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise SemsegError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SemsegError(
            f"{path}: refused to load: the file holds pickled Python objects, not only tensors "
            f"and plain values (weights_only=True). Re-save it as a plain state dict. ({_first_line(exc)})"
        ) from None
    except MemoryError:
        raise SemsegError(f"{path}: not enough memory to load this checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises KeyError, IndexError, ... on files that are not its own
        raise SemsegError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type (KeyError: 101 has no useful text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text and not isinstance(exc, (KeyError, IndexError)) else type(exc).__name__


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a semseg checkpoint (see the module docstring for its keys)."""
    state = load_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SemsegError(
            f"{path}: not a semseg checkpoint (no 'format': '{CHECKPOINT_FORMAT}' key); "
            "for a raw state dict use --model NAME --weights FILE"
        )
    for key in ("model_name", "model"):
        if key not in state:
            raise SemsegError(f"{path}: semseg checkpoint lacks the '{key}' entry")
    return state


def default_model_path() -> Path:
    """The embedded default model, or a clear error where none is shipped."""
    if not DEFAULT_MODEL_PATH.is_file():
        raise SemsegError(
            "no model given and no default model is shipped with this semseg "
            f"(looked for {DEFAULT_MODEL_PATH}); pass --checkpoint FILE, "
            "--model NAME --weights FILE --num-classes N, or --onnx FILE"
        )
    return DEFAULT_MODEL_PATH

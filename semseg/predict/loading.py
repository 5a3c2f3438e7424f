"""The model a command names, ready to predict: a cached graph where an earlier run converted its weights,
else the PyTorch model behind the backend asked for.

Imports no torch up to the cache lookup: a run that finds the graph ``auto`` chose
(or the one ``--backend onnxruntime|openvino`` asks for) predicts without PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from semseg.checkpoint import default_model_path
from semseg.predict.backends import cached_choice, check_backend, file_key


def load_for_prediction(
    checkpoint: str | os.PathLike | None = None,
    model_name: str | None = None,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    backend: str = "auto",
    precision: str = "auto",
    device: str = "auto",
) -> tuple[Any, str]:
    """``(what to run, backend)`` for the model a command names (see :func:`semseg.models.load_torch_model`).

    The cache key is the hash of the file the weights come from, so a run that
    finds an earlier conversion of them (and, for ``auto``, its verdict for ONNX
    Runtime) never builds the PyTorch model nor imports the model zoo.
    """
    check_backend(backend)
    source = checkpoint if checkpoint is not None else weights
    if source is None and model_name is None and weights is None and num_classes is None:
        source = default_model_path()
    key = None
    if backend != "torch" and source is not None and Path(source).is_file():
        key = file_key(source, model_name, num_classes)
        cached = cached_choice(key, backend, precision, device)
        if cached is not None:
            return cached
    # imported here: the zoo (torchvision, smp, timm) and torch take seconds to import, and a cached graph
    # never needs them
    from semseg.models.factory import load_torch_model
    from semseg.predict.conversion import resolve_backend

    model = load_torch_model(checkpoint, model_name, weights, num_classes)
    return resolve_backend(model, backend, precision, device, key=key)

"""Prediction backends: which engine runs the model (PyTorch or ONNX Runtime), and how ``auto`` picks one.

- ``torch``: the PyTorch model itself (channels_last, bf16 where native: see
  :class:`~semseg.predict.Predictor`).
- ``onnxruntime``: the model converted to an ONNX graph of any size
  (:func:`semseg.runtime.convert.export_onnx`) and run by ONNX Runtime on the CPU.
- ``auto``: the fastest *lossless* one on this machine. The first time a given
  set of weights is predicted, it is converted, its labels are compared with
  PyTorch fp32 on the street frames shipped in the package (native size, and
  CamVid's 360x480), and both engines are timed on a 360x480 frame,
  interleaved. ONNX Runtime is used only where its labels equal PyTorch fp32's
  on at least :data:`LOSSLESS_AGREEMENT` of the pixels and it ran faster. The
  graph and this verdict are cached, keyed by the weights' hash
  (:mod:`semseg.runtime.cache`), so later runs decide at once. ``auto`` is
  ``torch`` without onnxruntime installed, on a GPU, at an explicit precision
  (``fp32`` promises PyTorch's own numbers, bit for bit), and for models whose
  graph would take one size only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from semseg.errors import SemsegError
from semseg.io import list_images, read_image
from semseg.meta import ModelMeta
from semseg.predict.images import normalize, to_chw
from semseg.runtime.cache import cache_key, entry_paths, file_digest, read_entry, state_dict_digest, write_record
from semseg.runtime.convert import CONVERTER_VERSION, export_onnx, fixed_size_only
from semseg.runtime.onnx import OnnxModel
from semseg.runtime.precision import autocast, resolve_device, resolve_precision

BACKENDS = ("auto", "torch", "onnxruntime")
LOSSLESS_AGREEMENT = 0.999  # labels equal to PyTorch fp32 on this fraction of pixels
TIMING_SIZE = (360, 480)  # CamVid's frame size: where the engines are timed against each other
log = logging.getLogger(__name__)


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def sample_frames() -> list[np.ndarray]:
    """The street frames shipped in the package (validation and test), uint8 ``[H, W, 3]`` at their native size."""
    demo = Path(str(resources.files("semseg"))) / "assets" / "demo"
    return [read_image(path) for split in ("val", "test") for path in list_images(demo / split)]


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise SemsegError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def resolve_backend(
    model: Any, backend: str = "auto", precision: str = "auto", device: str = "auto", key: str | None = None
) -> tuple[Any, str]:
    """``(what to run, its backend's name)`` for ``model`` on ``backend``.

    ``model``: a PyTorch model, or an exported session (which runs as it is:
    ``onnxruntime``). ``key``: the cache key of the model's weights (default:
    the hash of its state dict). Converting, checking and timing happen once per
    key; see the module's docstring for what ``auto`` decides.
    """
    check_backend(backend)
    if not isinstance(model, nn.Module):
        if backend == "torch":
            raise SemsegError("an exported ONNX model runs in ONNX Runtime; backend torch needs a PyTorch model")
        return model, "onnxruntime"
    if backend == "torch":
        return model, "torch"
    reason = fixed_size_only(model)
    if backend == "onnxruntime":
        if not onnxruntime_available():
            raise SemsegError("backend onnxruntime needs ONNX Runtime: pip install 'semseg[onnx]'")
        if reason:
            raise SemsegError(f"backend onnxruntime runs graphs of any size, and this model has none: {reason}; "
                              "export it with semseg export --fixed and predict with --onnx")
    elif not onnxruntime_available() or precision != "auto" or resolve_device(device).type != "cpu" or reason:
        return model, "torch"
    record = onnx_conversion(model, key or model_key(model), precision)
    if backend == "onnxruntime" and record["agreement"] < LOSSLESS_AGREEMENT:
        log.warning("ONNX Runtime's labels equal PyTorch fp32's on %.3f%% of pixels only (auto would not use it)",
                    100 * record["agreement"])
    if backend == "auto" and record["choice"] != "onnxruntime":
        return model, "torch"
    return OnnxModel(record["path"], device="cpu"), "onnxruntime"


def model_key(model: nn.Module) -> str:
    """The cache key of a PyTorch model: the hash of its state dict, its name and metadata."""
    meta = ModelMeta.of(model).to_dict()
    return cache_key(["onnxruntime", CONVERTER_VERSION, state_dict_digest(model), getattr(model, "model_name", None), meta])


def file_key(path: str | os.PathLike, model_name: str | None = None, num_classes: int | None = None) -> str:
    """The cache key of a model read from ``path`` (a checkpoint, or raw weights for ``model_name``): the file's hash."""
    return cache_key(["onnxruntime", CONVERTER_VERSION, file_digest(path), model_name, num_classes])


def cached_choice(key: str, backend: str, precision: str = "auto", device: str = "auto") -> Any | None:
    """The cached ONNX Runtime session for ``key`` where ``backend`` would run it, else None.

    Lets a command skip building the PyTorch model when an earlier run already
    converted these weights and (for ``auto``) found ONNX Runtime lossless and faster.
    """
    check_backend(backend)
    if backend == "torch" or not onnxruntime_available():
        return None
    if backend == "auto" and (precision != "auto" or resolve_device(device).type != "cpu"):
        return None
    record = read_entry(key)
    if record is None or (backend == "auto" and record.get("choice") != "onnxruntime"):
        return None
    return OnnxModel(record["path"], device="cpu")


def onnx_conversion(model: nn.Module, key: str, precision: str = "auto") -> dict[str, Any]:
    """The cache record of ``model`` converted for ONNX Runtime under ``key``: converted, checked and timed if new.

    The record holds ``agreement`` (labels equal to PyTorch fp32, a fraction of
    pixels), ``torch_ms`` and ``onnxruntime_ms`` (median per 360x480 frame),
    ``choice`` (what ``auto`` runs) and ``path`` (the graph).
    """
    record = read_entry(key)
    if record is not None:
        return record
    name = getattr(model, "model_name", None) or type(model).__name__
    log.info("converting %s for ONNX Runtime (once for these weights; cached by their hash)", name)
    graph, _ = entry_paths(key)
    export_onnx(model, graph, TIMING_SIZE, dynamic=True)
    session = OnnxModel(graph, device="cpu")
    meta = ModelMeta.of(model)
    frames = sample_frames()
    frames.append(np.asarray(Image.fromarray(frames[0]).resize(TIMING_SIZE[::-1], Image.BILINEAR)))
    inputs = [normalize(to_chw(frame)[None], meta.mean, meta.std) for frame in frames]
    agreement = label_agreement(model, session, inputs)
    timings = time_engines(model, session, inputs[-1], precision)
    lossless = agreement >= LOSSLESS_AGREEMENT
    choice = "onnxruntime" if lossless and timings["onnxruntime"] < timings["torch"] else "torch"
    log.info("%s: ONNX Runtime labels equal PyTorch fp32's on %.3f%% of pixels; %.1f ms a 360x480 frame against "
             "PyTorch's %.1f ms: auto uses %s", name, 100 * agreement, timings["onnxruntime"], timings["torch"], choice)
    values = {"model_name": name, "agreement": agreement, "lossless": lossless, "torch_ms": timings["torch"],
              "onnxruntime_ms": timings["onnxruntime"], "choice": choice}
    return write_record(key, values)


def label_agreement(model: nn.Module, session: Callable, inputs: list[torch.Tensor]) -> float:
    """Fraction of pixels where ``session``'s argmax equals ``model``'s in fp32 (default memory layout), whole images."""
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    same = pixels = 0
    with torch.inference_mode():
        for x in inputs:
            same += int((session(x).argmax(1) == model(x).argmax(1)).sum())
            pixels += x.shape[0] * x.shape[2] * x.shape[3]
    return same / pixels


def time_engines(
    model: nn.Module, session: Callable, image: torch.Tensor, precision: str = "auto", repeats: int = 3
) -> dict[str, float]:
    """Median milliseconds per call of PyTorch (as the Predictor runs it) and of ``session`` on ``image``, interleaved.

    One warm-up call each, then ``repeats`` rounds alternating the two, so that
    the load of a shared machine falls on both alike.
    """
    device = torch.device("cpu")
    precision = resolve_precision(precision, device)
    layout = torch.contiguous_format if precision == "fp32" else torch.channels_last
    model = model.eval().cpu().to(memory_format=layout)
    torch_input = image.contiguous(memory_format=layout)

    def run_torch() -> None:
        with torch.inference_mode(), autocast(precision, device):
            model(torch_input)

    runs = {"torch": run_torch, "onnxruntime": lambda: session(image)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - start))
    model.to(memory_format=torch.contiguous_format)
    return {name: statistics.median(values) for name, values in times.items()}


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
    # imported here: the zoo (torchvision, smp, timm) takes seconds to import, and a cached graph never needs it
    from semseg.models.factory import default_model_path, load_torch_model

    check_backend(backend)
    source = checkpoint if checkpoint is not None else weights
    if source is None and model_name is None and weights is None and num_classes is None:
        source = default_model_path()
    key = None
    if backend != "torch" and source is not None and Path(source).is_file():
        key = file_key(source, model_name, num_classes)
        cached = cached_choice(key, backend, precision, device)
        if cached is not None:
            return cached, "onnxruntime"
    model = load_torch_model(checkpoint, model_name, weights, num_classes)
    return resolve_backend(model, backend, precision, device, key=key)

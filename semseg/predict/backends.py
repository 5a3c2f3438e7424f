"""Prediction backends: which engine runs the model (PyTorch, ONNX Runtime, OpenVINO), and how ``auto`` picks one.

- ``torch``: the PyTorch model itself (channels_last, bf16 where native: see
  :class:`~semseg.predict.Predictor`).
- ``onnxruntime`` / ``openvino``: the model converted to an ONNX graph of any
  size (:func:`semseg.runtime.convert.export_onnx`), run by ONNX Runtime or by
  OpenVINO (which reads the same file) on the CPU in fp32.
- ``auto``: the fastest *lossless* one on this machine. The first time a given
  set of weights is predicted, it is converted, each installed runtime's
  labels are compared with PyTorch fp32 on the street frames shipped in the
  package (native size, and CamVid's 360x480), and all engines are timed on a
  360x480 frame, taking turns. A runtime is used only where its labels equal
  PyTorch fp32's on at least :data:`LOSSLESS_AGREEMENT` of the pixels and it
  ran fastest. The graph and these measurements are cached, keyed by the
  weights' hash (:mod:`semseg.runtime.cache`), so later runs decide at once.
  ``auto`` is ``torch`` with neither runtime installed, on a GPU, at an
  explicit precision (``fp32`` promises PyTorch's own numbers, bit for bit),
  and for models whose graph would take one size only.
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

from semseg.checkpoint import default_model_path
from semseg.errors import SemsegError
from semseg.io import list_images, read_image
from semseg.meta import ModelMeta
from semseg.predict.images import normalize, to_chw
from semseg.runtime.cache import cache_key, entry_paths, file_digest, read_entry, state_dict_digest, write_record
from semseg.runtime.convert import CONVERTER_VERSION, export_onnx, fixed_size_only
from semseg.runtime.onnx import OnnxModel
from semseg.runtime.precision import autocast, resolve_device, resolve_precision

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
RUNTIMES = ("onnxruntime", "openvino")  # the backends that run the converted graph
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}  # pip install 'semseg[<extra>]' installs each
LOSSLESS_AGREEMENT = 0.999  # labels equal to PyTorch fp32 on this fraction of pixels
TIMING_SIZE = (360, 480)  # CamVid's frame size: where the engines are timed against each other
log = logging.getLogger(__name__)


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime`` (``onnxruntime`` or ``openvino``) is installed."""
    return importlib.util.find_spec(runtime) is not None


def require_runtime(runtime: str) -> None:
    """SemsegError saying which extra installs ``runtime`` (``onnxruntime`` or ``openvino``) where it is missing."""
    if not runtime_available(runtime):
        raise SemsegError(f"backend {runtime} needs it installed: pip install 'semseg[{EXTRAS[runtime]}]'")


def available_runtimes() -> list[str]:
    return [runtime for runtime in RUNTIMES if runtime_available(runtime)]


def open_session(runtime: str, path: str | os.PathLike) -> Any:
    """The graph at ``path`` run by ``runtime`` on the CPU."""
    if runtime == "openvino":
        from semseg.runtime.openvino import OpenVinoModel

        return OpenVinoModel(path)
    return OnnxModel(path, device="cpu")


def open_exported(path: str | os.PathLike, backend: str = "auto", device: str = "auto") -> Any:
    """An exported model file run by a runtime: an OpenVINO IR (``.xml``) by OpenVINO; an ONNX graph by
    ONNX Runtime (``auto``, ``onnxruntime``) or OpenVINO (``openvino``)."""
    check_backend(backend)
    if backend == "torch":
        raise SemsegError(f"{path}: an exported model runs in ONNX Runtime or OpenVINO; --backend torch needs "
                          "--checkpoint or --model")
    is_ir = Path(path).suffix.lower() == ".xml"
    if is_ir and backend == "onnxruntime":
        raise SemsegError(f"{path}: an OpenVINO IR runs in OpenVINO; drop --backend onnxruntime or give the ONNX graph")
    runtime = "openvino" if is_ir or backend == "openvino" else "onnxruntime"
    require_runtime(runtime)
    return open_session(runtime, path) if runtime == "openvino" else OnnxModel(path, device=device)


def auto_choice(record: dict[str, Any]) -> str:
    """What ``auto`` runs, from a cache record: the fastest of PyTorch and the installed lossless runtimes."""
    times = {"torch": record["ms"]["torch"]}
    for runtime in available_runtimes():
        if runtime in record["ms"] and record["agreement"][runtime] >= LOSSLESS_AGREEMENT:
            times[runtime] = record["ms"][runtime]
    return min(times, key=times.get)


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

    ``model``: a PyTorch model, or an exported session (which runs as it is). ``key``: the cache key of the model's weights (default:
    the hash of its state dict). Converting, checking and timing happen once per
    key; see the module's docstring for what ``auto`` decides.
    """
    check_backend(backend)
    if not isinstance(model, nn.Module):
        if backend == "torch":
            raise SemsegError("an exported ONNX model runs in its runtime; backend torch needs a PyTorch model")
        return model, getattr(model, "backend", "onnxruntime")
    if backend == "torch":
        return model, "torch"
    reason = fixed_size_only(model)
    if backend in RUNTIMES:
        require_runtime(backend)
        if reason:
            raise SemsegError(f"backend {backend} runs graphs of any size, and this model has none: {reason}; "
                              "export it with semseg export --fixed and predict with --onnx")
    elif not available_runtimes() or precision != "auto" or resolve_device(device).type != "cpu" or reason:
        return model, "torch"
    record = onnx_conversion(model, key or model_key(model), precision)
    if backend in RUNTIMES:
        if record["agreement"][backend] < LOSSLESS_AGREEMENT:
            log.warning("%s's labels equal PyTorch fp32's on %.3f%% of pixels only (auto would not use it)",
                        backend, 100 * record["agreement"][backend])
        return open_session(backend, record["path"]), backend
    choice = auto_choice(record)
    if choice == "torch":
        return model, "torch"
    return open_session(choice, record["path"]), choice


def model_key(model: nn.Module) -> str:
    """The cache key of a PyTorch model: the hash of its state dict, its name and metadata."""
    meta = ModelMeta.of(model).to_dict()
    return cache_key(["onnx", CONVERTER_VERSION, state_dict_digest(model), getattr(model, "model_name", None), meta])


def file_key(path: str | os.PathLike, model_name: str | None = None, num_classes: int | None = None) -> str:
    """The cache key of a model read from ``path`` (a checkpoint, or raw weights for ``model_name``): the file's hash."""
    return cache_key(["onnx", CONVERTER_VERSION, file_digest(path), model_name, num_classes])


def cached_choice(key: str, backend: str, precision: str = "auto", device: str = "auto") -> tuple[Any, str] | None:
    """``(session, backend)`` from the cache for ``key`` where ``backend`` would run a converted graph, else None.

    Lets a command skip building the PyTorch model when an earlier run already
    converted these weights and (for ``auto``) measured a runtime lossless and fastest.
    """
    check_backend(backend)
    if backend == "torch" or not available_runtimes():
        return None
    if backend == "auto" and (precision != "auto" or resolve_device(device).type != "cpu"):
        return None
    record = read_entry(key)
    if record is None or "ms" not in record or set(available_runtimes()) - set(record["ms"]):
        return None  # not converted, or measured before a runtime was installed: the model is needed
    if backend in RUNTIMES:
        return (open_session(backend, record["path"]), backend) if runtime_available(backend) else None
    choice = auto_choice(record)
    return None if choice == "torch" else (open_session(choice, record["path"]), choice)


def onnx_conversion(model: nn.Module, key: str, precision: str = "auto") -> dict[str, Any]:
    """The cache record of ``model`` converted to an ONNX graph under ``key``: converted, checked and timed if new.

    The record holds ``agreement`` (per installed runtime: the fraction of
    pixels whose label equals PyTorch fp32's), ``ms`` (median milliseconds per
    360x480 frame: ``torch`` and each runtime) and ``path`` (the graph). A record
    measured before a runtime was installed is measured again (the graph is kept).
    """
    runtimes = available_runtimes()
    record = read_entry(key)
    if record is not None and "ms" in record and not set(runtimes) - set(record["ms"]):
        return record
    name = getattr(model, "model_name", None) or type(model).__name__
    graph, _ = entry_paths(key)
    if record is None:
        log.info("converting %s to an ONNX graph for %s (once for these weights; cached by their hash)",
                 name, " and ".join(runtimes))
        export_onnx(model, graph, TIMING_SIZE, dynamic=True)
    sessions = {runtime: open_session(runtime, graph) for runtime in runtimes}
    meta = ModelMeta.of(model)
    frames = sample_frames()
    frames.append(np.asarray(Image.fromarray(frames[0]).resize(TIMING_SIZE[::-1], Image.BILINEAR)))
    inputs = [normalize(to_chw(frame)[None], meta.mean, meta.std) for frame in frames]
    agreement = {runtime: label_agreement(model, session, inputs) for runtime, session in sessions.items()}
    timings = time_engines(model, sessions, inputs[-1], precision)
    values = {"model_name": name, "agreement": agreement, "ms": timings}
    record = write_record(key, values)
    log.info("%s: labels equal to PyTorch fp32 on %s of pixels; ms per 360x480 frame: %s; auto uses %s", name,
             ", ".join(f"{100 * a:.3f}% ({r})" for r, a in agreement.items()),
             ", ".join(f"{ms:.1f} ({r})" for r, ms in timings.items()), auto_choice(record))
    return record


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
    model: nn.Module, sessions: dict[str, Callable], image: torch.Tensor, precision: str = "auto", repeats: int = 3
) -> dict[str, float]:
    """Median milliseconds per call of PyTorch (as the Predictor runs it) and of each of ``sessions`` on ``image``.

    One warm-up call each, then ``repeats`` rounds in which every engine runs
    once in turn, so that the load of a shared machine falls on all alike.
    """
    device = torch.device("cpu")
    precision = resolve_precision(precision, device)
    layout = torch.contiguous_format if precision == "fp32" else torch.channels_last
    model = model.eval().cpu().to(memory_format=layout)
    torch_input = image.contiguous(memory_format=layout)

    def run_torch() -> None:
        with torch.inference_mode(), autocast(precision, device):
            model(torch_input)

    runs: dict[str, Callable[[], Any]] = {"torch": run_torch}
    for name, session in sessions.items():
        runs[name] = lambda session=session: session(image)
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
    # imported here: the zoo (torchvision, smp, timm) takes seconds to import, and a cached graph never needs it
    from semseg.models.factory import load_torch_model

    model = load_torch_model(checkpoint, model_name, weights, num_classes)
    return resolve_backend(model, backend, precision, device, key=key)

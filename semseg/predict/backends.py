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
  360x480 frame, taking turns (:mod:`semseg.predict.conversion`). A runtime is
  used only where its labels equal PyTorch fp32's on at least
  :data:`LOSSLESS_AGREEMENT` of the pixels and it ran fastest. The graph and
  these measurements are cached, keyed by the weights' hash
  (:mod:`semseg.runtime.cache`), so later runs decide at once.
  ``auto`` is ``torch`` with neither runtime installed, on a GPU, at an
  explicit precision (``fp32`` promises PyTorch's own numbers, bit for bit),
  and for models whose graph would take one size only.

This module imports no torch: a run that finds its weights' graph in the cache,
or is given an exported one, opens it here and predicts without PyTorch
(:mod:`semseg.predict.exported`); converting lives in
:mod:`semseg.predict.conversion`, and :mod:`semseg.predict.loading` imports it
only when a PyTorch model is needed.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from semseg.errors import SemsegError
from semseg.runtime.cache import CONVERTER_VERSION, cache_key, file_digest, read_entry
from semseg.runtime.onnx import OnnxModel

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
RUNTIMES = ("onnxruntime", "openvino")  # the backends that run the converted graph
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}  # pip install 'semseg[<extra>]' installs each
LOSSLESS_AGREEMENT = 0.999  # labels equal to PyTorch fp32 on this fraction of pixels
# device files of the accelerators PyTorch can run on (NVIDIA, AMD ROCm, WSL's GPU): where none exists,
# device "auto" is the CPU, known without importing torch
GPU_DEVICE_FILES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


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


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise SemsegError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def file_key(path: str | os.PathLike, model_name: str | None = None, num_classes: int | None = None) -> str:
    """The cache key of a model read from ``path`` (a checkpoint, or raw weights for ``model_name``): the file's hash."""
    return cache_key(["onnx", CONVERTER_VERSION, file_digest(path), model_name, num_classes])


def measured_for_installed(record: dict[str, Any] | None) -> bool:
    """Whether a cache record holds the measurements of every installed runtime (False for a record measured
    before a runtime was installed: its model must be measured again)."""
    return record is not None and "ms" in record and not set(available_runtimes()) - set(record["ms"])


def cached_choice(key: str, backend: str, precision: str = "auto", device: str = "auto") -> tuple[Any, str] | None:
    """``(session, backend)`` from the cache for ``key`` where ``backend`` would run a converted graph, else None.

    Lets a command skip building the PyTorch model when an earlier run already
    converted these weights and (for ``auto``) measured a runtime lossless and fastest.
    """
    check_backend(backend)
    if backend == "torch" or not available_runtimes():
        return None
    if backend == "auto" and (precision != "auto" or not runs_on_cpu(device)):
        return None
    record = read_entry(key)
    if not measured_for_installed(record):
        return None  # not converted, or measured before a runtime was installed: the model is needed
    if backend in RUNTIMES:
        return (open_session(backend, record["path"]), backend) if runtime_available(backend) else None
    choice = auto_choice(record)
    return None if choice == "torch" else (open_session(choice, record["path"]), choice)


def runs_on_cpu(device: str) -> bool:
    """Whether ``device`` (``auto``, ``cpu``, ``cuda``, ...) means the CPU here; imports torch only where a GPU may be."""
    if device == "cpu":
        return True
    if device == "auto" and "torch" not in sys.modules and not any(glob.glob(pattern) for pattern in GPU_DEVICE_FILES):
        return True
    from semseg.runtime.precision import resolve_device

    return resolve_device(device).type == "cpu"

"""Converting a PyTorch model for the runtimes once, checking its labels against PyTorch fp32, timing the engines.

What ``auto`` decides from (:mod:`semseg.predict.backends` says how): the model
is written as an ONNX graph of any size, each installed runtime's labels are
compared with PyTorch fp32's on the street frames shipped in the package, and
PyTorch and the runtimes are timed on a 360x480 frame, taking turns. The graph
and the measurements go to the cache (:mod:`semseg.runtime.cache`) under the
weights' hash. Needs torch; :mod:`~semseg.predict.backends`, which reads the
verdicts, does not.
"""

from __future__ import annotations

import logging
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
from semseg.predict.backends import (
    LOSSLESS_AGREEMENT, RUNTIMES, auto_choice, available_runtimes, check_backend, measured_for_installed, open_session,
    require_runtime, runs_on_cpu,
)
from semseg.predict.images import normalize, to_chw
from semseg.runtime.cache import CONVERTER_VERSION, cache_key, entry_paths, read_entry, state_dict_digest, write_record
from semseg.runtime.convert import export_onnx, fixed_size_only
from semseg.runtime.precision import autocast, resolve_precision

TIMING_SIZE = (360, 480)  # CamVid's frame size: where the engines are timed against each other
log = logging.getLogger(__name__)


def sample_frames() -> list[np.ndarray]:
    """The street frames shipped in the package (validation and test), uint8 ``[H, W, 3]`` at their native size."""
    demo = Path(str(resources.files("semseg"))) / "assets" / "demo"
    return [read_image(path) for split in ("val", "test") for path in list_images(demo / split)]


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
    elif not available_runtimes() or precision != "auto" or not runs_on_cpu(device) or reason:
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


def onnx_conversion(model: nn.Module, key: str, precision: str = "auto") -> dict[str, Any]:
    """The cache record of ``model`` converted to an ONNX graph under ``key``: converted, checked and timed if new.

    The record holds ``agreement`` (per installed runtime: the fraction of
    pixels whose label equals PyTorch fp32's), ``ms`` (median milliseconds per
    360x480 frame: ``torch`` and each runtime) and ``path`` (the graph). A record
    measured before a runtime was installed is measured again (the graph is kept).
    """
    runtimes = available_runtimes()
    record = read_entry(key)
    if measured_for_installed(record):
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
    layout = torch.contiguous_format if precision == "fp32" else torch.channels_last  # as the Predictor's
    precision = resolve_precision(precision, device)
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

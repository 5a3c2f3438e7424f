"""An exported ONNX graph run by ONNX Runtime, usable wherever a model is.

The graph takes ``float[N,3,H,W]`` normalized images and gives logits
``float[N,C,H,W]``; its ``metadata_props`` hold the model's
:class:`~semseg.meta.ModelMeta` as JSON values (plus ``model_name`` and
``dynamic``), written by :func:`semseg.export.export_onnx`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semseg.errors import SemsegError
from semseg.meta import ModelMeta

if TYPE_CHECKING:  # torch is imported where a tensor is given: a process predicting through NumPy never imports it
    from torch import Tensor


def configured_threads() -> int | None:
    """``$OMP_NUM_THREADS`` where set to a positive count: the limit PyTorch obeys, given to the runtimes too
    so that the three compare like for like."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) > 0 else None


def cpu_threads() -> int:
    """The threads a process may compute with: ``$OMP_NUM_THREADS``, else the CPUs it may run on."""
    if (threads := configured_threads()) is not None:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_onnx_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Parse ``metadata_props`` (a name -> JSON string map) into plain values."""
    values: dict[str, Any] = {}
    for key, text in props.items():
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            raise SemsegError(f"ONNX metadata entry {key!r} is not JSON: {text[:80]!r}") from None
    return values


class OnnxModel:
    """An exported model run by ONNX Runtime: a :class:`semseg.runtime.Session`.

    ``model(images float[N,3,h,w]) -> logits float[N,C,h,w]``; ``pretrained_cfg``
    is the :class:`ModelMeta` read from the file (ImageNet mean/std when it has
    none), ``model_name`` the zoo name it was exported from; ``fixed_input_size``
    is ``(H, W)`` for a graph exported without ``dynamic`` (else None), and a
    graph exported for batch 1 is fed one image at a time. ONNX Runtime uses
    ``threads`` threads per call; None: one per physical core, or ``$OMP_NUM_THREADS``
    where set (as PyTorch does). Calls from several threads at once are safe
    (ONNX Runtime's sessions are); :meth:`concurrent` gives a session made for that.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.device = device
        if not self.path.is_file():
            raise SemsegError(f"{self.path}: ONNX file not found")
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.on_cpu = providers[0] == "CPUExecutionProvider"
        options = ort.SessionOptions()
        threads = threads or configured_threads()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception classes (Fail, InvalidGraph, ...)
            raise SemsegError(f"{self.path}: not a readable ONNX model ({str(exc).splitlines()[0]})") from None
        props = read_onnx_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.pretrained_cfg = ModelMeta.from_dict(props)
        self.model_name = props.get("model_name")
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        shape = graph_input.shape if len(graph_input.shape) == 4 else [None] * 4
        spatial = shape[2:]
        self.fixed_input_size = tuple(spatial) if all(isinstance(d, int) for d in spatial) else None
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.dynamic = self.fixed_input_size is None
        # edited or mismatched metadata would name, colour and score the classes wrongly: checked on the
        # graph's output shape where it is fixed, else on every output
        self._meta_classes = props["num_classes"] if isinstance(props.get("num_classes"), int) else None
        out_shape = self.session.get_outputs()[0].shape
        if len(out_shape) == 4 and isinstance(out_shape[1], int):
            self._check_classes(out_shape[1])

    def __call__(self, images: Tensor) -> Tensor:
        import torch

        return torch.from_numpy(self.run(images.detach().cpu().float().numpy()))

    def concurrent(self, streams: int) -> OnnxModel:
        """The same graph for ``streams`` callers at once: the CPU's threads shared out among them, one
        or more each (a session of its own; this one is unchanged). On a GPU: this session itself."""
        if streams <= 1 or not self.on_cpu:
            return self
        return OnnxModel(self.path, self.device, threads=max(1, cpu_threads() // streams))

    def run(self, images: np.ndarray) -> np.ndarray:
        """Normalized ``float32[N,3,h,w]`` -> logits ``float32[N,C,h,w]``, in NumPy."""
        inputs = np.ascontiguousarray(images, dtype=np.float32)
        step = self.fixed_batch or len(inputs)
        outputs = [self.session.run(None, {self.input_name: inputs[i : i + step]})[0] for i in range(0, len(inputs), step)]
        logits = np.concatenate(outputs)
        self._check_classes(logits.shape[1])
        return logits

    def _check_classes(self, channels: int) -> None:
        if self._meta_classes is not None and channels != self._meta_classes:
            raise SemsegError(
                f"{self.path}: its metadata says {self._meta_classes} classes but the graph outputs {channels} "
                "channels; re-export the model with semseg export"
            )

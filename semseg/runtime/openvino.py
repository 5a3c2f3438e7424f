"""An exported model run by OpenVINO on the CPU, usable wherever a model is (a :class:`semseg.runtime.Session`).

OpenVINO reads the ONNX file semseg writes (:func:`semseg.runtime.convert.export_onnx`)
directly, metadata included (its ``metadata_props`` arrive in the model's
``rt_info["framework"]``), and the IR ``semseg export --format openvino`` writes
(``NAME.xml`` + ``NAME.bin``, converted from that graph, the same metadata kept). It is
compiled for the CPU in fp32 (``INFERENCE_PRECISION_HINT=f32``: on CPUs with
bf16 OpenVINO would otherwise compute in bf16, which changes labels), with
``$OMP_NUM_THREADS`` threads where set, as PyTorch and ONNX Runtime use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semseg.errors import SemsegError
from semseg.meta import ModelMeta
from semseg.runtime.onnx import configured_threads, read_onnx_metadata

if TYPE_CHECKING:  # torch is imported where a tensor is given: a process predicting through NumPy never imports it
    from torch import Tensor


class OpenVinoModel:
    """``model(images float[N,3,h,w]) -> logits float[N,C,h,w]`` through OpenVINO's CPU plugin.

    Same attributes as :class:`~semseg.runtime.OnnxModel`: ``pretrained_cfg``,
    ``model_name``, ``fixed_input_size`` (None for a graph of any size), ``path``.
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike) -> None:
        import openvino as ov

        self.path = Path(path)
        if not self.path.is_file():
            raise SemsegError(f"{self.path}: model file not found (an ONNX graph or an OpenVINO IR's .xml)")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise SemsegError(f"{self.path}: not a model OpenVINO can read ({str(exc).splitlines()[0]})") from None
        info = model.get_rt_info()
        framework = info["framework"] if "framework" in info else {}
        props = {key: value.astype(str) for key, value in dict(framework).items()}
        values = read_onnx_metadata(props)
        self.pretrained_cfg = ModelMeta.from_dict(values)
        self.model_name = values.get("model_name")
        shape = model.inputs[0].get_partial_shape()
        spatial = [shape[i] for i in (2, 3)] if shape.rank.get_length() == 4 else []
        static = spatial and all(d.is_static for d in spatial)
        self.fixed_input_size = tuple(d.get_length() for d in spatial) if static else None
        self.dynamic = self.fixed_input_size is None
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads := configured_threads():
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: Tensor) -> Tensor:
        import torch

        return torch.from_numpy(self.run(images.detach().cpu().float().numpy()))

    def concurrent(self, streams: int) -> OpenVinoModel:
        """This model: it runs one call at a time, with all its threads. OpenVINO run from several Python
        threads at once (throughput streams, or a compiled copy per thread; synchronous or asynchronous
        requests) left a later lock of the test process broken (glibc: "the futex facility returned an
        unexpected error code"), so semseg does not do it."""
        return self

    def run(self, images: np.ndarray) -> np.ndarray:
        """Normalized ``float32[N,3,h,w]`` -> logits ``float32[N,C,h,w]``, in NumPy."""
        self.request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})
        return self.request.get_output_tensor(0).data.copy()

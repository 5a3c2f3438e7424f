"""How a model is run: torch devices and precision, sessions of exported graphs (ONNX Runtime, OpenVINO), converting, caching.

Below both :mod:`semseg.predict` and :mod:`semseg.export`. A *session* is any
object that :class:`semseg.predict.Predictor` can run in place of a torch
model; it follows :class:`Session`. :class:`OnnxModel` (ONNX Runtime) and
:class:`~semseg.runtime.openvino.OpenVinoModel` (imported from its module:
OpenVINO is optional) are the ones shipped; a new backend (TensorRT) is one
more module here with a class of the same shape (docs/architecture.md shows how). :mod:`~semseg.runtime.convert`
writes a torch model as an ONNX graph; :mod:`~semseg.runtime.cache` keeps
converted graphs keyed by the weights' hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from semseg.meta import ModelMeta
from semseg.runtime.onnx import OnnxModel

if TYPE_CHECKING:  # a session runs without torch (semseg.predict.exported); only its tensor interface needs it
    from torch import Tensor


class Session(Protocol):
    """An exported model, callable like a torch model in eval mode."""

    pretrained_cfg: ModelMeta  # classes, palette, mean and std, read from the file
    fixed_input_size: tuple[int, int] | None  # (H, W) when the graph takes that size only
    backend: str  # what runs it: "onnxruntime", "openvino"

    def __call__(self, images: Tensor) -> Tensor:
        """Normalized ``float[N,3,h,w]`` (any device) -> logits ``float[N,C,h,w]`` on the CPU."""
        ...

    def run(self, images: np.ndarray) -> np.ndarray:
        """The same in NumPy: normalized ``float32[N,3,h,w]`` -> logits ``float32[N,C,h,w]``."""
        ...

    def concurrent(self, streams: int) -> Session:
        """The same model for ``streams`` threads calling :meth:`run` at once, the CPU's threads shared out
        among them; or this session itself, which then takes one call at a time (where running side by
        side gains nothing, e.g. on a GPU, or is not safe)."""
        ...


__all__ = ["OnnxModel", "Session"]

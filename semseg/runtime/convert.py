"""Converting a torch model into an ONNX graph ``image float[N,3,H,W] -> logits float[N,C,H,W]`` with its metadata.

Below prediction and export: :mod:`semseg.export` adds the parity checks and
the ``semseg export`` command, and prediction's backends
(:mod:`semseg.predict.backends`) convert a model for ONNX Runtime with the same
code. Graphs take any height and width by default; a model that cannot (grid
pooling, as in PSPNet) gets a graph of one size, with a warning saying why.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``), which
exports every curated zoo model, the in-model padding to the stride included;
its graphs run in ONNX Runtime at any size when exported ``dynamic``. A model
it cannot trace at a fixed size goes through ``torch.export`` instead. The
metadata (the model's :class:`~semseg.meta.ModelMeta`, plus ``model_name`` and
``dynamic``) is stored as JSON strings in the graph's ``metadata_props``, so
``semseg predict --onnx`` needs no PyTorch model code.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.io import write_bytes_atomic
from semseg.meta import ModelMeta, Size, as_size
DEFAULT_EXPORT_SIZE = (512, 512)
# Zoo models that cannot be exported, with the reason. Empty: every curated model
# exports and passes the parity check (tests/test_export.py checks them all).
NOT_EXPORTABLE: dict[str, str] = {}
INPUT_NAME, OUTPUT_NAME = "image", "logits"
log = logging.getLogger(__name__)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Size = DEFAULT_EXPORT_SIZE,
    dynamic: bool | None = None,
    opset: int = 17,
) -> Path:
    """Write ``model`` as an ONNX graph ``image float[N,3,H,W] -> logits float[N,C,H,W]`` with its metadata.

    The batch dimension is always dynamic. Height and width: any with
    ``dynamic=True``, ``input_size`` alone with ``False``; ``None`` (the
    default) means any where the model allows it, else ``input_size`` with a
    warning saying why. The file is written atomically. Returns ``path``.
    """
    import onnx

    name = getattr(model, "model_name", None) or type(model).__name__
    if name in NOT_EXPORTABLE:
        raise SemsegError(f"model {name} cannot be exported to ONNX: {NOT_EXPORTABLE[name]}")
    reason = fixed_size_only(model)
    if dynamic and reason:
        raise SemsegError(f"model {name} cannot be exported with --dynamic: {reason}; export it for one --size H W")
    height, width = as_size(input_size, "input size")
    if dynamic is None:
        dynamic = reason is None
        if reason:
            log.warning("model %s is exported for %dx%d inputs only: %s; prediction tiles larger images and pads "
                        "smaller ones to that size", name, height, width, reason)
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    example = torch.randn(1, 3, height, width)
    try:
        graph = _export_torchscript(model, example, dynamic, opset)
    except Exception as exc:  # the exporter raises many types; the user needs the model name and the cause
        if dynamic:
            raise SemsegError(f"model {name} could not be exported to ONNX: {_first_line(exc)}") from exc
        try:  # torch.export sees fixed sizes where TorchScript traced them as values (e.g. PSPNet's pooling)
            graph = _export_dynamo(model, example, opset)
        except Exception as dynamo_exc:
            raise SemsegError(
                f"model {name} could not be exported to ONNX: {_first_line(exc)} (torch.export: {_first_line(dynamo_exc)})"
            ) from dynamo_exc
    onnx.helper.set_model_props(graph, _metadata(model, (height, width), dynamic))
    path = Path(path)
    write_bytes_atomic(path, graph.SerializeToString())
    return path


def fixed_size_only(model: nn.Module) -> str | None:
    """Why ``model`` cannot be exported for any input size, or None.

    Adaptive pooling to a grid of several bins (PSPNet's pyramid pooling) has
    kernel sizes that depend on the input size; ONNX has no operator for it, and
    the exported graph would silently keep the sizes of the example input
    (measured: 94% argmax agreement at another size). Pooling to one bin is a
    plain mean and exports fine.
    """
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size = module.output_size
            bins = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            if any(b not in (1, None) for b in bins):
                grid = "x".join(str(b) for b in bins)
                return f"its {module_name} pools to a fixed {grid} grid, which ONNX can only express for a fixed input size"
    return None


def _export_torchscript(model: nn.Module, example: Tensor, dynamic: bool, opset: int) -> Any:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # "might not generalize" warnings about shape-dependent Python code: the parity check
        # (on another size too, for dynamic graphs) is what tells whether the graph generalizes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
        )
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(model: nn.Module, example: Tensor, opset: int) -> Any:
    """The torch.export-based exporter, for a fixed height and width; needs opset 18 or later.

    The batch stays dynamic where the model allows it (``Dim.AUTO``); a model
    whose code fixes it (UperNet's ConvNeXt norms) gets a batch-1 graph, which
    :class:`OnnxModel` feeds one image at a time.
    """
    batch = torch.export.Dim.AUTO
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto


def _first_line(exc: BaseException) -> str:
    """Exporter messages run to pages (whole graphs, wrapped causes): the root cause's first sentence."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().split("  [Caused by")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def _metadata(model: nn.Module, input_size: Size, dynamic: bool) -> dict[str, str]:
    """``metadata_props``: the model's :class:`ModelMeta` (at the export size) plus ``model_name`` and ``dynamic``."""
    values = {
        **ModelMeta.of(model).to_dict(),
        "input_size": list(input_size),
        "model_name": getattr(model, "model_name", None),
        "dynamic": dynamic,
    }
    return {key: json.dumps(value) for key, value in values.items()}

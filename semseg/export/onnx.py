"""ONNX export: a graph ``image float[N,3,H,W] -> logits float[N,C,H,W]`` carrying the model's metadata, checked.

Graphs take any height and width by default, so that ``semseg predict --onnx``
runs them at each image's size exactly as ``semseg predict`` runs the PyTorch
model; a model that cannot take any size (PSPNet's grid pooling), or a user
who asks for it, gets a graph of one size, which prediction slides over the
image in tiles of that size, padding where the image is smaller.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``), which
exports every curated zoo model, the in-model padding to the stride included;
its graphs run in ONNX Runtime at any size when exported ``dynamic``. A model
it cannot trace at a fixed size goes through ``torch.export`` instead. The
metadata (the model's :class:`~semseg.meta.ModelMeta`, plus ``model_name`` and
``dynamic``) is stored as JSON strings in the graph's ``metadata_props``, so
``semseg predict --onnx`` needs no PyTorch model code. :func:`export_checked`
compares ONNX Runtime's logits with PyTorch's, and the labels of the whole
prediction workflow (:mod:`semseg.export.parity`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.export.parity import (
    PARITY_MIN_AGREEMENT, compare_logits, compare_workflow, fail_unless_parity, parity_inputs, workflow_frames,
)
from semseg.io import write_bytes_atomic
from semseg.meta import ModelMeta
from semseg.predict.functional import Size, as_size
from semseg.runtime.onnx import OnnxModel

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


def check_parity(model: nn.Module, onnx_path: str | os.PathLike, inputs: Sequence[Tensor]) -> dict[str, Any]:
    """PyTorch (fp32) against ONNX Runtime logits on normalized ``inputs``: see :func:`compare_logits`."""
    return compare_logits(model, OnnxModel(onnx_path, device="cpu"), inputs, f"{onnx_path}: ONNX")


def export_checked(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Size = DEFAULT_EXPORT_SIZE,
    dynamic: bool | None = None,
    opset: int = 17,
) -> dict[str, Any]:
    """Export, then check it; a failed check removes the file and raises.

    Two checks: the graph's logits against PyTorch's on :func:`parity_inputs`,
    and the labels of the prediction workflow on the shipped street frames
    (:func:`compare_workflow`). For a graph that takes any size the workflow
    labels must agree with ``semseg predict`` on the PyTorch model; a graph of
    one size must agree with the PyTorch model run through the same tiles, and
    a warning says how far tiling moves its labels from the PyTorch model's.
    Returns the logits report with ``dynamic`` and the workflow agreements.
    """
    path = export_onnx(model, path, input_size, dynamic, opset)
    meta = ModelMeta.of(model)
    session = OnnxModel(path, device="cpu")
    dynamic = session.dynamic
    report = check_parity(model, path, parity_inputs(as_size(input_size, "input size"), meta.mean, meta.std, dynamic))
    fail_unless_parity(report, path, "ONNX Runtime agrees with PyTorch")
    workflow = compare_workflow(model, session, workflow_frames())
    key = "workflow_agreement" if dynamic else "graph_agreement"
    who = "semseg predict --onnx agrees with semseg predict on the PyTorch model"
    if not dynamic:
        who = "semseg predict --onnx agrees with the PyTorch model run in the same tiles"
    fail_unless_parity({**report, "agreement": workflow[key]}, path, who)
    if not dynamic and workflow["workflow_agreement"] < PARITY_MIN_AGREEMENT:
        log.warning("a graph of one size predicts the sample street frames unlike the PyTorch model at native size "
                    "on %.2f%% of pixels (its tiles see less context); export with --dynamic where the model allows it",
                    100 * (1 - workflow["workflow_agreement"]))
    return {**report, **workflow, "dynamic": dynamic}

"""Export a model for deployment, and check that the export predicts like the model.

- ``onnx`` (:mod:`semseg.export.onnx`): an ONNX graph with the model's metadata, run by ONNX Runtime;
- ``openvino`` (:mod:`semseg.export.openvino`): an OpenVINO IR (``NAME.xml`` + ``NAME.bin``), run by OpenVINO;
- ``semseg`` (:mod:`semseg.export.checkpoint`): an inference checkpoint (weights, float16 on request, and metadata).

``onnx`` and ``openvino`` also come in int8 (:mod:`semseg.export.quantize`),
calibrated on labelled images and refused where they lose more than a stated
mIoU.

Every export is compared with the PyTorch model on sample inputs
(:mod:`semseg.export.parity`) before it replaces the output file: it is
written to a temporary file beside it, checked, then renamed over it, so a
failed export or check leaves a file already there as it was.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

from torch import nn

from semseg.errors import SemsegError
from semseg.export.checkpoint import PROVENANCE_KEYS, export_checkpoint, export_checkpoint_checked
from semseg.export.onnx import DEFAULT_EXPORT_SIZE, NOT_EXPORTABLE, check_parity, export_checked, export_onnx, fixed_size_only
from semseg.export.openvino import export_openvino_checked, ir_paths
from semseg.export.parity import PARITY_MIN_AGREEMENT, compare_logits, compare_workflow, parity_inputs, workflow_frames
from semseg.export.quantize import DEFAULT_MAX_DROP, quantize_checked
from semseg.io import remove_stale_temporaries
from semseg.meta import ModelMeta, check_tta_scales
from semseg.predict.functional import Size, as_size

ExportFormat = Literal["onnx", "openvino", "semseg"]
GRAPH_FORMATS = ("onnx", "openvino")  # the formats of a graph (fixed or dynamic size, float32 or int8)


def check_export_options(
    fmt: str, half: bool = False, dynamic: bool | None = None, int8: bool = False, calib: Sequence[str] | None = None,
    labels: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
) -> None:
    """SemsegError for a format semseg does not export, or an option that does not apply to ``fmt``."""
    if fmt not in get_args(ExportFormat):
        raise SemsegError(f"unknown export format {fmt!r}; semseg exports onnx, openvino (an OpenVINO IR) and semseg "
                          "(an inference checkpoint)")
    if half and fmt != "semseg":
        raise SemsegError("--half applies to --format semseg (a graph is exported in float32, or int8 with --int8)")
    if dynamic is not None and fmt not in GRAPH_FORMATS:
        flag = "--dynamic" if dynamic else "--fixed"
        raise SemsegError(f"{flag} applies to --format onnx or openvino (a semseg checkpoint takes any size)")
    if int8 and fmt == "semseg" and (calib or labels is not None):
        raise SemsegError("--format semseg --int8 stores the weights in int8 and needs no calibration: "
                          "leave out --calib and --labels (they calibrate an onnx or openvino int8 graph)")
    if int8 and fmt in GRAPH_FORMATS and (not calib or labels is None):
        raise SemsegError("--int8 needs --calib DIR (images to calibrate on) and --labels DIR (their label maps): "
                          "the int8 model is refused when it loses more than --max-drop mIoU points on them")
    if not int8 and (calib or labels is not None):
        raise SemsegError("--calib and --labels calibrate an int8 export: add --int8")
    if fmt == "openvino" and out is not None:
        ir_paths(out)


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    fmt: ExportFormat = "onnx",
    size: Size | None = None,
    dynamic: bool | None = None,
    opset: int = 17,
    half: bool = False,
    tta_scales: Sequence[float] | None = None,
    provenance: dict[str, Any] | None = None,
    int8: bool = False,
    calib: Sequence[str] | None = None,
    labels: str | os.PathLike | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    gate: bool = True,
    ignore_index: int | None = None,
    logit_offset: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``out`` in format ``fmt`` and check it; returns the parity report plus ``size``.

    ``size``: the export (and check) size, default the model's input size, else
    512x512. ``dynamic`` (onnx): any height and width (True), the export size
only (False), or any where the model allows it (None). ``half`` (semseg): float16
    weights. ``tta_scales``: recorded in the metadata as the recommended TTA. ``logit_offset``: recorded
    in the metadata as the per-class offset the zoo model's forward adds to its logits (one per class;
    :func:`semseg.losses.weights.logit_adjustment` makes one), so the export and its check include it.
    ``provenance``: entries of the training checkpoint an inference checkpoint keeps.
    ``int8`` (onnx, openvino): quantized on the ``calib`` images and gated on
    their ``labels``, scored without ``ignore_index`` (default: the model's)
    (:func:`semseg.export.quantize.quantize_checked`); (semseg) the large weights
    stored in int8, run in float32 after loading, gated by the argmax parity check.
    """
    check_export_options(fmt, half, dynamic, int8, calib, labels, out)
    remove_stale_temporaries(Path(out).parent, Path(out).name)  # of an export killed by SIGKILL
    if tta_scales is not None:
        model.pretrained_cfg = replace(ModelMeta.of(model), tta_scales=check_tta_scales(tta_scales, "--tta-scales"))
    if logit_offset is not None:
        model.pretrained_cfg = replace(ModelMeta.of(model), logit_offset=logit_offset)  # ModelMeta makes it a float tuple
    size = as_size(size, "--size") or ModelMeta.of(model).input_size or DEFAULT_EXPORT_SIZE
    if fmt == "semseg":
        report = export_checkpoint_checked(model, out, size, half, provenance, int8)
    elif int8:
        report = quantize_checked(model, out, fmt, calib or [], labels or "", size, dynamic, opset, max_drop, gate,
                                  ignore_index)
    elif fmt == "openvino":
        report = export_openvino_checked(model, out, size, dynamic, opset)
    else:
        report = export_checked(model, out, size, dynamic, opset)
    return {**report, "size": size}


__all__ = [
    "DEFAULT_EXPORT_SIZE",
    "DEFAULT_MAX_DROP",
    "GRAPH_FORMATS",
    "export_openvino_checked",
    "ir_paths",
    "quantize_checked",
    "ExportFormat",
    "check_export_options",
    "NOT_EXPORTABLE",
    "PARITY_MIN_AGREEMENT",
    "PROVENANCE_KEYS",
    "check_parity",
    "compare_logits",
    "compare_workflow",
    "export_checked",
    "export_checkpoint",
    "export_checkpoint_checked",
    "export_model",
    "export_onnx",
    "fixed_size_only",
    "parity_inputs",
    "workflow_frames",
]

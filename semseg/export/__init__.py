"""Export a model for deployment, and check that the export predicts like the model.

- ``onnx`` (:mod:`semseg.export.onnx`): an ONNX graph with the model's metadata, run by ONNX Runtime;
- ``semseg`` (:mod:`semseg.export.checkpoint`): an inference checkpoint (weights, float16 on request, and metadata).

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
from semseg.export.parity import PARITY_MIN_AGREEMENT, compare_logits, compare_workflow, parity_inputs, workflow_frames
from semseg.io import remove_stale_temporaries
from semseg.meta import ModelMeta, check_tta_scales
from semseg.predict.functional import Size, as_size

ExportFormat = Literal["onnx", "semseg"]


def check_export_options(fmt: str, half: bool = False, dynamic: bool | None = None) -> None:
    """SemsegError for a format semseg does not export, or an option that does not apply to ``fmt``."""
    if fmt not in get_args(ExportFormat):
        raise SemsegError(f"unknown export format {fmt!r}; semseg exports onnx and semseg (an inference checkpoint)")
    if half and fmt != "semseg":
        raise SemsegError("--half applies to --format semseg (an ONNX graph is exported in float32)")
    if dynamic is not None and fmt != "onnx":
        flag = "--dynamic" if dynamic else "--fixed"
        raise SemsegError(f"{flag} applies to --format onnx (a semseg checkpoint takes any size)")


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
) -> dict[str, Any]:
    """Export ``model`` to ``out`` in format ``fmt`` and check it; returns the parity report plus ``size``.

    ``size``: the export (and check) size, default the model's input size, else
    512x512. ``dynamic`` (onnx): any height and width (True), the export size
only (False), or any where the model allows it (None). ``half`` (semseg): float16
    weights. ``tta_scales``: recorded in the metadata as the recommended TTA.
    ``provenance``: entries of the training checkpoint an inference checkpoint keeps.
    """
    check_export_options(fmt, half, dynamic)
    remove_stale_temporaries(Path(out).parent, Path(out).name)  # of an export killed by SIGKILL
    if tta_scales is not None:
        model.pretrained_cfg = replace(ModelMeta.of(model), tta_scales=check_tta_scales(tta_scales, "--tta-scales"))
    size = as_size(size, "--size") or ModelMeta.of(model).input_size or DEFAULT_EXPORT_SIZE
    if fmt == "semseg":
        report = export_checkpoint_checked(model, out, size, half, provenance)
    else:
        report = export_checked(model, out, size, dynamic, opset)
    return {**report, "size": size}


__all__ = [
    "DEFAULT_EXPORT_SIZE",
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

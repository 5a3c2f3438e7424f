"""ONNX export checked: the graph (:mod:`semseg.runtime.convert`) compared with PyTorch, logits and workflow.

:func:`export_checked` compares ONNX Runtime's logits with PyTorch's, and the
labels of the whole prediction workflow (:mod:`semseg.export.parity`); the
graph itself is written by :func:`semseg.runtime.convert.export_onnx`
(re-exported here).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor, nn

from semseg.export.parity import check_graph, compare_logits, export_progress, graph_check_steps
from semseg.io import staged_path
from semseg.meta import Size
from semseg.runtime.convert import (  # noqa: F401  (the graph writer lives below prediction; re-exported here)
    DEFAULT_EXPORT_SIZE, INPUT_NAME, NOT_EXPORTABLE, OUTPUT_NAME, export_onnx, fixed_size_only,
)
from semseg.progress import Progress
from semseg.runtime.onnx import OnnxModel

log = logging.getLogger(__name__)


def check_parity(
    model: nn.Module, onnx_path: str | os.PathLike, inputs: Sequence[Tensor], progress: Progress | None = None
) -> dict[str, Any]:
    """PyTorch (fp32) against ONNX Runtime logits on normalized ``inputs``: see :func:`compare_logits`."""
    return compare_logits(model, OnnxModel(onnx_path, device="cpu"), inputs, f"{onnx_path}: ONNX", progress)


def export_checked(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Size = DEFAULT_EXPORT_SIZE,
    dynamic: bool | None = None,
    opset: int = 17,
) -> dict[str, Any]:
    """Export to a temporary file beside ``path``, check it, then replace ``path``; a failed export or
    check raises and leaves ``path`` as it was.

    Two checks: the graph's logits against PyTorch's on :func:`parity_inputs`,
    and the labels of the prediction workflow on the shipped street frames
    (:func:`compare_workflow`). For a graph that takes any size the workflow
    labels must agree with ``semseg predict`` on the PyTorch model; a graph of
    one size must agree with the PyTorch model run through the same tiles, and
    a warning says how far tiling moves its labels from the PyTorch model's.
    Returns the logits report with ``dynamic`` and the workflow agreements.
    """
    path = Path(path)
    with staged_path(path) as staged, export_progress(graph_check_steps(model, dynamic, 1), log) as progress:
        export_onnx(model, staged, input_size, dynamic, opset)
        progress.update(1, check="graph written")
        return check_graph(model, OnnxModel(staged, device="cpu"), input_size, path, "ONNX Runtime", progress)

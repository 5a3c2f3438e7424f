"""OpenVINO IR export checked: the ONNX graph (:mod:`semseg.runtime.convert`) converted to ``.xml`` + ``.bin``.

OpenVINO's own converter (``openvino.convert_model``) reads the ONNX graph
semseg writes, metadata included (it lands in the IR's ``rt_info["framework"]``,
which :class:`~semseg.runtime.openvino.OpenVinoModel` reads back), so the IR
needs no converter of ours. The weights stay float32 (``compress_to_fp16=False``):
an fp16 IR changes labels, and the parity check would refuse it.

An IR is two files, ``NAME.xml`` (the graph) and ``NAME.bin`` (the weights).
They are written into a temporary folder beside ``NAME.xml``, checked there,
then moved into place, ``.bin`` first: a failed export or check leaves files
already there as they were. (Two renames are not one atomic step: a reader that
opens the pair between them sees the new weights under the old graph.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from semseg.errors import SemsegError
from semseg.export.parity import (
    compare_logits, compare_workflow, export_progress, fail_unless_parity, parity_inputs, workflow_frames,
)
from semseg.meta import ModelMeta, Size, as_size
from semseg.runtime.convert import DEFAULT_EXPORT_SIZE, export_onnx, fixed_size_only

log = logging.getLogger(__name__)


def ir_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.xml, NAME.bin)`` for an IR named ``path``; SemsegError unless it ends in ``.xml``."""
    xml = Path(path)
    if xml.suffix.lower() != ".xml":
        raise SemsegError(f"{xml}: an OpenVINO model is written as NAME.xml (its graph) and NAME.bin (its weights); "
                          "name the .xml file")
    return xml, xml.with_suffix(".bin")


@contextlib.contextmanager
def staged_model(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path for a model file, in a folder beside ``path``: moved to ``path`` when the block ends
    without an exception, removed otherwise. For an IR (``.xml``) its ``.bin`` moves too, first."""
    target = Path(path)
    companions = [ir_paths(target)[1]] if target.suffix.lower() == ".xml" else []
    if target.is_dir():
        raise SemsegError(f"{target}: is a folder; name a file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as folder:
        staged = Path(folder) / target.name
        yield staged
        try:
            for companion in companions:
                os.replace(staged.with_name(companion.name), companion)
            os.replace(staged, target)
        except OSError as exc:
            raise SemsegError(f"{target}: cannot write ({exc.strerror})") from None


def save_ir(ov_model: Any, path: str | os.PathLike) -> None:
    """``openvino.save_model`` with float32 weights (``path`` is the ``.xml``; the ``.bin`` goes beside it)."""
    import openvino as ov

    ov.save_model(ov_model, str(path), compress_to_fp16=False)


def convert_to_ir(onnx_path: str | os.PathLike) -> Any:
    """The ``openvino.Model`` of a semseg ONNX graph (metadata carried over by OpenVINO's converter)."""
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def export_openvino_checked(
    model: nn.Module, path: str | os.PathLike, input_size: Size = DEFAULT_EXPORT_SIZE, dynamic: bool | None = None,
    opset: int = 17,
) -> dict[str, Any]:
    """Write ``model`` as an OpenVINO IR (``path`` = ``NAME.xml``) after checking it against PyTorch.

    The checks are those of the ONNX export (:func:`semseg.export.onnx.export_checked`),
    run through OpenVINO: logits on :func:`parity_inputs` and, for a graph of any
    size, the labels of ``semseg predict`` on the shipped street frames. Returns
    the report of both, with ``dynamic``.
    """
    from semseg.runtime.openvino import OpenVinoModel

    meta = ModelMeta.of(model)
    ir_paths(path)
    frames = workflow_frames()
    likely_dynamic = dynamic if dynamic is not None else fixed_size_only(model) is None
    batches = len(parity_inputs((8, 8), meta.mean, meta.std, likely_dynamic))
    with staged_model(path) as staged, export_progress(2 + batches + len(frames), log) as progress:
        onnx_path = staged.with_suffix(".onnx")
        export_onnx(model, onnx_path, input_size, dynamic, opset)
        progress.update(1, check="graph written")
        save_ir(convert_to_ir(onnx_path), staged)
        onnx_path.unlink()
        progress.update(1, check="IR written")
        session = OpenVinoModel(staged)
        inputs = parity_inputs(as_size(input_size, "input size"), meta.mean, meta.std, session.dynamic)
        report = compare_logits(model, session, inputs, f"{path}: OpenVINO", progress)
        fail_unless_parity(report, Path(path), "OpenVINO agrees with PyTorch")
        workflow = compare_workflow(model, session, frames, progress)
        key = "workflow_agreement" if session.dynamic else "graph_agreement"
        fail_unless_parity({**report, "agreement": workflow[key]}, Path(path),
                           "semseg predict on the OpenVINO model agrees with semseg predict on the PyTorch model")
        dynamic = session.dynamic
    return {**report, **workflow, "dynamic": dynamic}

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
from semseg.export.parity import check_graph, export_progress, graph_check_steps
from semseg.meta import Size
from semseg.runtime.convert import DEFAULT_EXPORT_SIZE, export_onnx

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

    The checks are those of the ONNX export (:func:`semseg.export.parity.check_graph`),
    run through OpenVINO. Returns their report, with ``dynamic``.
    """
    from semseg.runtime.openvino import OpenVinoModel

    ir_paths(path)
    with staged_model(path) as staged, export_progress(graph_check_steps(model, dynamic, 2), log) as progress:
        onnx_path = staged.with_suffix(".onnx")
        export_onnx(model, onnx_path, input_size, dynamic, opset)
        progress.update(1, check="graph written")
        save_ir(convert_to_ir(onnx_path), staged)
        onnx_path.unlink()
        progress.update(1, check="IR written")
        return check_graph(model, OpenVinoModel(staged), input_size, Path(path), "OpenVINO", progress)

"""int8 post-training quantization with an accuracy gate: ``semseg export --int8 --calib DIR --labels DIR``.

The model is first exported in float32 and checked like any export (ONNX
Runtime or OpenVINO against PyTorch), then quantized by NNCF, OpenVINO's
quantization library, which takes both an OpenVINO model and an ONNX graph
(``nncf.quantize``: activations calibrated on the calibration images, 8-bit
weights and activations, fast bias correction). semseg writes no quantizer of
its own; what it adds is the gate:

Both graphs predict the calibration images (whole images at native size, no
TTA: how deployments are timed) and are scored against the labels. Where the
int8 mIoU is more than ``max_drop`` points below the float32 mIoU the export
fails and writes nothing, unless the gate is turned off; either way the report
gives both mIoUs, their label agreement and both speeds, taken in turns image
by image on this machine. The calibration folder doubles as the accuracy
folder: the gate measures what the quantizer was fitted to, so a held-out
labelled folder is the honest choice where the user has one.

int8 pays off on CPUs with VNNI (AVX-512 VNNI or AVX-VNNI); on AVX2-only CPUs
it can be slower than float32, depthwise convolutions especially, which is why
the speed is measured and printed, never assumed.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from torch import nn

from semseg.errors import SemsegError
from semseg.export.onnx import export_checked
from semseg.export.openvino import export_openvino_checked, save_ir, staged_model
from semseg.io import read_image
from semseg.meta import ModelMeta, Size
from semseg.predict.backends import open_session, require_runtime
from semseg.predict.benchmark import compare_predictors, ground_truths
from semseg.predict.files import resolve_sources
from semseg.predict.images import normalize, to_chw
from semseg.predict.predictor import Predictor
from semseg.runtime.convert import INPUT_NAME

DEFAULT_MAX_DROP = 1.0  # mIoU points
CALIBRATION_IMAGES = 300  # NNCF's default subset size
log = logging.getLogger(__name__)


def quantize_checked(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str,
    calib: Sequence[str],
    labels: str | os.PathLike,
    input_size: Size,
    dynamic: bool | None = None,
    opset: int = 17,
    max_drop: float = DEFAULT_MAX_DROP,
    gate: bool = True,
    ignore_index: int | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
) -> dict[str, Any]:
    """Export ``model`` in int8 to ``path`` (``fmt`` ``onnx`` or ``openvino``), gated on the mIoU it loses.

    ``calib``: images, folders or globs (as ``semseg predict`` takes them) used to
    calibrate and to score; ``labels``: their ground-truth label maps, matched by
    name. Returns the float32 export's parity report plus ``fp32`` and ``int8``
    (each ``miou``, ``ms_per_image``, ``images_per_s``, ``agreement`` with
    float32), ``miou_drop`` in points, ``calibration_images`` (the first
    ``calibration_images`` of them) and ``scored_images`` (all of them). SemsegError,
    with nothing written, when the drop exceeds ``max_drop`` and ``gate`` is on.
    """
    if fmt not in ("onnx", "openvino"):
        raise SemsegError(f"--int8 applies to --format onnx or openvino, not {fmt}")
    if importlib.util.find_spec("nncf") is None:
        raise SemsegError(f"--int8 --format {fmt} needs nncf: pip install 'semseg[openvino]'")
    runtime = "openvino" if fmt == "openvino" else "onnxruntime"
    require_runtime(runtime)
    if not max_drop >= 0:
        raise SemsegError(f"--max-drop must be 0 or more mIoU points, got {max_drop}")
    if calibration_images < 1:
        raise SemsegError(f"int8 calibration needs at least one image, got calibration_images={calibration_images}")
    import nncf

    files = resolve_sources(calib)
    truths = ground_truths(files, labels)
    meta = ModelMeta.of(model)
    suffix = ".xml" if fmt == "openvino" else ".onnx"
    # the float32 graph in a temporary folder; the int8 one written straight into the staged output, which
    # replaces ``path`` only when the gate passes
    with tempfile.TemporaryDirectory(prefix="semseg-int8-") as folder, staged_model(path) as staged:
        fp32_path = Path(folder) / f"fp32{suffix}"
        check = export_openvino_checked if fmt == "openvino" else export_checked
        report = check(model, fp32_path, input_size, dynamic, opset)
        fp32 = open_session(runtime, fp32_path)
        chosen = files[:calibration_images]
        log.info("quantizing to int8 with NNCF on %d calibration images", len(chosen))
        # decoded lazily, image by image (NNCF reads the set more than once): memory stays one image
        dataset = nncf.Dataset(chosen, lambda image: _calibration_input(image, meta, fp32.fixed_input_size, fmt))
        _write_int8(fmt, fp32_path, staged, dataset, len(chosen))
        int8 = open_session(runtime, staged)
        measured = compare_predictors({"fp32": Predictor(fp32, tta=False), "int8": Predictor(int8, tta=False)},
                                      files, truths, meta, ignore_index, reference="fp32", label="int8 against float32")
        if math.isnan(measured["fp32"]["miou"]):
            raise SemsegError(f"{labels}: no labelled pixel in the label maps of the --calib images (all are the ignore "
                              "index?), so the int8 model's accuracy cannot be checked; nothing written")
        drop = 100 * (measured["fp32"]["miou"] - measured["int8"]["miou"])
        result = {**report, **measured, "miou_drop": drop, "calibration_images": len(chosen),
                  "scored_images": len(files)}
        if drop > max_drop and gate:
            raise SemsegError(
                f"{path}: the int8 model scores {100 * measured['int8']['miou']:.2f} mIoU on the {len(files)} labelled "
                f"images against {100 * measured['fp32']['miou']:.2f} in float32, a drop of {drop:.2f} points, more "
                f"than --max-drop {max_drop:g}; nothing written (pass --no-gate to write it anyway)"
            )
    return result


def _calibration_input(path: Path, meta: ModelMeta, fixed_size: tuple[int, int] | None, fmt: str) -> Any:
    """What the graph is fed for one image: ``float32[1,3,H,W]``, normalized, at native size or the graph's
    fixed size (NNCF passes an ONNX graph a dict of its inputs, an OpenVINO model the array)."""
    rgb = read_image(path)
    if fixed_size is not None and rgb.shape[:2] != tuple(fixed_size):
        rgb = np.asarray(Image.fromarray(rgb).resize((fixed_size[1], fixed_size[0]), Image.BILINEAR))
    array = normalize(to_chw(rgb)[None], meta.mean, meta.std).numpy()
    return {INPUT_NAME: array} if fmt == "onnx" else array


def _write_int8(fmt: str, fp32_path: Path, int8_path: Path, dataset: Any, size: int) -> None:
    import nncf

    if fmt == "openvino":
        import openvino as ov

        save_ir(nncf.quantize(ov.Core().read_model(str(fp32_path)), dataset, subset_size=size), int8_path)
        return
    import onnx

    onnx.save(nncf.quantize(onnx.load(str(fp32_path)), dataset, subset_size=size), str(int8_path))

"""Parity checks: an export's logits against the PyTorch model's on sample inputs.

The inputs are normalized batches of random noise, flat grey, gradients, a
checkerboard and a street frame shipped in the package (and, for a graph that
takes any size, an odd size). An argmax agreement below
:data:`PARITY_MIN_AGREEMENT` fails the export and removes its file.

The logits of a graph are not all a user sees: :func:`compare_workflow` runs
the street frames shipped in the package, at their native size, through
:class:`~semseg.predict.Predictor` with its defaults (what ``semseg predict``
does) on the export and on the PyTorch model in fp32, and compares the labels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.meta import ModelMeta, Size, as_size
from semseg.predict.conversion import sample_frames as workflow_frames  # the shipped street frames, native size
from semseg.predict.images import normalize
from semseg.predict.predictor import Predictor
from semseg.progress import Progress
from semseg.runtime.convert import fixed_size_only

PARITY_MIN_AGREEMENT = 0.999
log = logging.getLogger(__name__)


def parity_inputs(input_size: Size, mean: Sequence[float], std: Sequence[float], dynamic: bool = False) -> list[Tensor]:
    """Normalized sample batches ``[N, 3, H, W]``: random noise, flat grey, gradients, a checkerboard and a street frame.

    With ``dynamic`` an odd-sized batch checks that the graph really takes other sizes.
    """
    height, width = input_size
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (2, 3, height, width), generator=generator, dtype=torch.uint8)
    grey = torch.full((1, 3, height, width), 128, dtype=torch.uint8)
    ramp_y = torch.linspace(0, 255, height).view(height, 1).expand(height, width)
    ramp_x = torch.linspace(0, 255, width).view(1, width).expand(height, width)
    gradient = torch.stack([ramp_y, ramp_x, 255 - ramp_x]).round().to(torch.uint8)[None]
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    checker = ((((yy // 16) + (xx // 16)) % 2) * 255).to(torch.uint8).expand(3, height, width)[None]
    batches = [noise, grey, gradient, checker, _street_frame(input_size)]
    if dynamic:
        odd = (max(8, height * 3 // 4 + 1), max(8, width * 5 // 4 + 3))
        batches.append(torch.randint(0, 256, (1, 3, *odd), generator=generator, dtype=torch.uint8))
    return [normalize(batch, mean, std) for batch in batches]


def _street_frame(size: Size) -> Tensor:
    """A CamVid frame shipped in the package, resized to ``size``: uint8 ``[1, 3, H, W]``."""
    rgb = Image.fromarray(workflow_frames()[0]).resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)[None]


def export_progress(steps: int, logger: Any) -> Progress:
    """The progress display of an export: one step per file written and per batch or frame checked."""
    return Progress(steps, "export", unit="step", logger=logger)


def compare_logits(
    model: nn.Module, candidate: Any, inputs: Sequence[Tensor], label: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Logits of ``candidate`` (a callable) against ``model``'s fp32 logits on normalized ``inputs`` ``[N, 3, H, W]``.

    Returns ``max_abs_diff`` (largest logit difference), ``agreement`` (fraction
    of pixels with the same argmax), ``pixels`` and ``batches``. ``progress``
    advances one step per batch.
    """
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    max_diff, same, pixels = 0.0, 0, 0
    for batch in inputs:
        with torch.inference_mode():
            expected = model(batch).float()
            got = candidate(batch).float()
        if got.shape != expected.shape:
            raise SemsegError(f"{label} output shape {list(got.shape)} differs from PyTorch's {list(expected.shape)}")
        max_diff = max(max_diff, float((got - expected).abs().max()))
        same += int((got.argmax(1) == expected.argmax(1)).sum())
        pixels += expected.shape[0] * expected.shape[2] * expected.shape[3]
        if progress is not None:
            progress.update(1, check="logits")
    return {"max_abs_diff": max_diff, "agreement": same / pixels, "pixels": pixels, "batches": len(inputs)}


def fail_unless_parity(report: dict[str, Any], path: Path, who_agrees: str) -> None:
    """Raise when the argmax agreement of ``report`` is below the parity threshold.

    The export was written to a temporary file (:func:`semseg.io.staged_path`),
    which the error removes: ``path`` keeps what it held before.
    """
    if report["agreement"] < PARITY_MIN_AGREEMENT:
        raise SemsegError(
            f"{path}: parity check failed: {who_agrees} on {100 * report['agreement']:.3f}% of pixels "
            f"(needs {100 * PARITY_MIN_AGREEMENT:.1f}%), max logit difference {report['max_abs_diff']:.3g}; "
            "nothing written (a file already there is left as it was)"
        )


class _AtFixedSize:
    """A PyTorch model presented as a graph that takes ``size`` only, so that a Predictor tiles and pads for it."""

    def __init__(self, model: nn.Module, size: Size) -> None:
        self.model, self.fixed_input_size, self.pretrained_cfg = model, tuple(size), ModelMeta.of(model)

    def __call__(self, images: Tensor) -> Tensor:
        return self.model(images)


def compare_workflow(
    model: nn.Module, session: Any, frames: Sequence[np.ndarray], progress: Progress | None = None
) -> dict[str, Any]:
    """Labels of ``Predictor(session)`` against ``Predictor(model, precision="fp32")`` on ``frames``, both with defaults.

    Returns ``workflow_agreement`` (fraction of equal labels), and for a graph
    of one fixed size also ``graph_agreement``: against the PyTorch model run
    through the same tiles and padding, which isolates the graph from the
    effect of tiling (the one that must reach :data:`PARITY_MIN_AGREEMENT`).
    ``progress`` advances one step per frame.
    """
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    exported = Predictor(session, device="cpu")
    plain = Predictor(model, precision="fp32", device="cpu")
    fixed = getattr(session, "fixed_input_size", None)
    tiled = Predictor(_AtFixedSize(model, fixed), device="cpu") if fixed else None
    same = same_tiled = pixels = 0
    for frame in frames:
        labels = exported(frame)
        same += int((labels == plain(frame)).sum())
        if tiled is not None:
            same_tiled += int((labels == tiled(frame)).sum())
        pixels += labels.size
        if progress is not None:
            progress.update(1, check="workflow")
    report = {"workflow_agreement": same / pixels, "workflow_frames": len(frames)}
    if tiled is not None:
        report["graph_agreement"] = same_tiled / pixels
    return report


def graph_check_steps(model: nn.Module, dynamic: bool | None, files_written: int) -> int:
    """Progress steps of a graph export: the files written, then each parity batch and workflow frame."""
    meta = ModelMeta.of(model)
    likely_dynamic = dynamic if dynamic is not None else fixed_size_only(model) is None
    return files_written + len(parity_inputs((8, 8), meta.mean, meta.std, likely_dynamic)) + len(workflow_frames())


def check_graph(
    model: nn.Module, session: Any, input_size: Size, path: Path, runtime: str, progress: Progress | None = None
) -> dict[str, Any]:
    """The checks of every graph export, ``session`` (a staged graph in ``runtime``) against PyTorch fp32.

    Its logits on :func:`parity_inputs`, then the labels of ``semseg predict
    --onnx`` on the shipped frames (:func:`compare_workflow`): for a graph of
    any size against ``semseg predict`` on the PyTorch model, for a graph of
    one size against the PyTorch model in the same tiles (with a warning saying
    how far tiling moves its labels from the PyTorch model's). Either below
    :data:`PARITY_MIN_AGREEMENT` raises (:func:`fail_unless_parity`). Returns
    the logits report with ``dynamic`` and the workflow agreements.
    """
    meta = ModelMeta.of(model)
    dynamic = session.fixed_input_size is None
    inputs = parity_inputs(as_size(input_size, "input size"), meta.mean, meta.std, dynamic)
    report = compare_logits(model, session, inputs, f"{path}: {runtime}", progress)
    fail_unless_parity(report, path, f"{runtime} agrees with PyTorch")
    workflow = compare_workflow(model, session, workflow_frames(), progress)
    if dynamic:
        fail_unless_parity({**report, "agreement": workflow["workflow_agreement"]}, path,
                           "semseg predict --onnx agrees with semseg predict on the PyTorch model")
    else:
        fail_unless_parity({**report, "agreement": workflow["graph_agreement"]}, path,
                           "semseg predict --onnx agrees with the PyTorch model run in the same tiles")
        if workflow["workflow_agreement"] < PARITY_MIN_AGREEMENT:
            log.warning("a graph of one size predicts the sample street frames unlike the PyTorch model at native "
                        "size on %.2f%% of pixels (its tiles see less context); export with --dynamic where the model "
                        "allows it", 100 * (1 - workflow["workflow_agreement"]))
    return {**report, **workflow, "dynamic": dynamic}

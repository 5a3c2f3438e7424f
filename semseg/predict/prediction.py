"""What a prediction gives (:class:`Prediction`), how it was made (:func:`describe_tta`), and the whole-image
size limit every predictor keeps.

Torch-free: shared by :class:`~semseg.predict.Predictor` and the NumPy path of
:mod:`semseg.predict.exported`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from semseg.errors import SemsegError
from semseg.meta import ModelMeta
from semseg.reports.viz import generate_palette

# the most pixels whole-image prediction (whole mode, size, TTA) handles, in the image and in the model's
# input; larger images go through slide mode's bands (docs/safety.md gives the memory this bounds)
WHOLE_MAX_PIXELS = 1 << 23


def output_palette(meta: ModelMeta) -> list[list[int]]:
    """The colours of label PNGs and overlays: the model's palette, else one for every id a label map can hold."""
    return meta.palette or generate_palette(meta.num_classes or 256)


def check_mean_std(mean: Sequence[float], std: Sequence[float]) -> None:
    """SemsegError unless ``mean`` and ``std`` are 3 values each, ``std`` positive."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise SemsegError(f"mean and std need 3 values each (std > 0), got mean={list(mean)} std={list(std)}")


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise SemsegError(f"batch size must be at least 1, got {batch_size}")


def tta_on(tta: bool | None, model: Any) -> bool:
    """Whether TTA runs: as asked, or (``tta`` None) as the model's metadata recommends, where its graph
    can take other sizes."""
    if tta is not None:
        return tta
    return ModelMeta.of(model).tta_scales is not None and getattr(model, "fixed_input_size", None) is None


def label_dtype(num_classes: int) -> type:
    """The dtype of label maps: uint8 up to 256 classes (what a label PNG holds), else int32."""
    return np.uint8 if num_classes <= 256 else np.int32


@dataclass
class Prediction:
    """One image's results at its original size."""

    labels: np.ndarray  # [H, W] class ids (uint8 up to 256 classes, else int32)
    confidence: np.ndarray | None = None  # [H, W] float32 max softmax probability
    probs: np.ndarray | None = None  # [C, H, W] float32 softmax probabilities


def describe_tta(predictor: Any, asked: bool | None) -> str:
    """How the images were predicted, and why: "no TTA", or the scales and whose choice they were."""
    if not predictor.tta:
        return "no TTA"
    views = ", ".join(f"{s:g}" for s in predictor.scales) + (" + flip" if predictor.flip else "")
    return f"TTA at scales {views}" + (" (the model's recommendation; --no-tta to turn it off)" if asked is None else "")

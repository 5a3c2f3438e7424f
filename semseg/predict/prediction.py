"""What a prediction gives (:class:`Prediction`), how it was made (:func:`describe_tta`), and the whole-image
size limit every predictor keeps.

Torch-free: shared by :class:`~semseg.predict.Predictor` and the NumPy path of
:mod:`semseg.predict.exported`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# the most pixels whole-image prediction (whole mode, size, TTA) handles, in the image and in the model's
# input; larger images go through slide mode's bands (docs/safety.md gives the memory this bounds)
WHOLE_MAX_PIXELS = 1 << 23


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

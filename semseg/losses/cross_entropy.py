"""Cross-entropy: ``torch.nn.functional.cross_entropy``, made safe for an all-ignored batch.

Same value and gradient as ``F.cross_entropy(logits, target, weight, ignore_index,
label_smoothing)`` with its "mean" reduction, the sum over valid pixels divided by
the sum of their class weights. Written as that sum over a clamped denominator
because torch's own mean is 0/0 = NaN when every pixel is ignored (a crop of pure
void), which would stop a training run (tests/test_losses.py shows it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from semseg.losses.base import ClassWeightedLoss
from semseg.losses.functional import number, pixel_weights, safe_ratio


class CrossEntropyLoss(ClassWeightedLoss):
    """Pixel-wise cross-entropy with optional class weights and label smoothing (Szegedy et al., 2016)."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(num_classes, ignore_index, class_weights)
        self.label_smoothing = number(label_smoothing, "label_smoothing", 0.0, 1.0)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        total = F.cross_entropy(
            logits,
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        # torch's per-pixel values already carry the class weight: divide by their sum only
        return safe_ratio(total, pixel_weights(target, valid, self.class_weights).sum())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, label_smoothing={self.label_smoothing}"

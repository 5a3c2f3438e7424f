"""Soft multiclass Dice loss on softmax probabilities (Milletari et al., V-Net, 3DV 2016).

Per class c, over all valid pixels of the batch (p = softmax probability, y = one-hot target):

    dice_c = (2 * sum(p_c * y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth)
    loss   = mean over the classes present in the batch's target of (1 - dice_c)

Ignored pixels count in no sum. Averaging over the classes *present in the target*
(Lovász-softmax's ``classes="present"``) keeps the loss on a 0..1 scale whatever the
batch holds. Written by hand because smp 0.6.0's ``DiceLoss`` computes the same
dice_c but zeroes absent classes and then divides by all C classes, so a batch
holding 2 of 11 classes can never score above 2/11 and the weight of "ce+dice" would
drift with the batch contents (tests/test_losses.py shows the two differ by exactly
C / #present). Class weights are not used: Dice already gives each class equal say.
"""

from __future__ import annotations

import torch

from semseg.losses.base import SegLoss
from semseg.losses.functional import number, safe_ratio


class DiceLoss(SegLoss):
    """1 - mean soft Dice over the classes present in the batch."""

    def __init__(self, num_classes: int, ignore_index: int = 255, *, smooth: float = 0.0) -> None:
        super().__init__(num_classes, ignore_index)
        self.smooth = number(smooth, "smooth", 0.0)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=1) * valid.unsqueeze(1)  # ignored pixels: 0, and zero gradient
        classes = torch.arange(self.num_classes, device=logits.device).view(1, -1, 1, 1)
        one_hot = target.unsqueeze(1) == classes  # bool[N,C,H,W]; all False at ignored pixels
        # summed with torch's pairwise sums, accurate over millions of pixels; counts exact as int64
        intersection = (probs * one_hot).sum(dim=(0, 2, 3))
        target_sum = one_hot.sum(dim=(0, 2, 3))
        pred_sum = probs.sum(dim=(0, 2, 3))
        dice = safe_ratio(2 * intersection + self.smooth, pred_sum + target_sum + self.smooth)
        present = target_sum > 0
        return safe_ratio(((1 - dice) * present).sum(), present.sum().float())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, smooth={self.smooth}"

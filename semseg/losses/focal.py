"""Focal loss, multiclass softmax form (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    FL = -alpha_t * (1 - p_t)^gamma * log(p_t),   p_t = softmax(logits)[target]

averaged over valid pixels as ``F.cross_entropy`` averages: divided by the sum of
``alpha_t`` (the pixel count without alpha). So gamma = 0 gives exactly
cross-entropy with ``weight=alpha``. (Lin et al. divide by the number of anchors;
with alpha that differs by the per-batch factor mean(alpha_t).)

Written by hand: smp 0.6.0's ``FocalLoss(mode="multiclass")`` is a one-vs-rest
*sigmoid* focal loss per channel averaged over classes, not the softmax form above,
so with gamma = 0 it does not reduce to cross-entropy (tests/test_losses.py shows it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from semseg.errors import SemsegError
from semseg.losses.base import ClassWeightedLoss
from semseg.losses.functional import class_vector, number, pixel_nll, pixel_weights, weighted_mean

# (1 - p)^gamma has an infinite derivative at p = 1 when gamma < 1: clamp 1 - p this far from 0
_MIN_MISS = 1e-12


class FocalLoss(ClassWeightedLoss):
    """Softmax focal loss; ``alpha`` are per-class weights and default to ``class_weights``."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        *,
        gamma: float = 2.0,
        alpha: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        if alpha is not None and class_weights is not None:
            raise SemsegError("loss option 'alpha' of focal: give the per-class weights once, as alpha or as class_weights, not both")
        # alpha is focal's name for class weights: one buffer, self.class_weights, holds either
        super().__init__(num_classes, ignore_index, class_vector(alpha, num_classes, "alpha") if alpha is not None else class_weights)
        self.gamma = number(gamma, "gamma", 0.0)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        nll = pixel_nll(logits, target, self.ignore_index)  # -log p_t
        miss = (-torch.expm1(-nll)).clamp_min(_MIN_MISS)  # 1 - p_t, accurate near p_t = 1
        return weighted_mean(nll * miss.pow(self.gamma), pixel_weights(target, valid, self.class_weights))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"

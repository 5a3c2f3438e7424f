"""OHEM cross-entropy: cross-entropy over the hard pixels of the batch only.

Online hard example mining (Shrivastava et al., CVPR 2016) applied to pixels as in
the Cityscapes recipes of PSPNet/ICNet (Zhao et al., 2017) and mmsegmentation's
``OHEMPixelSampler``: keep the valid pixels whose true-class probability is below
``thresh``; if fewer than ``min_kept`` (per batch) are that hard, keep the
``min_kept`` pixels of lowest true-class probability instead (ties at the cut are
all kept). The loss is the class-weighted mean cross-entropy over the kept pixels,
the same as ``F.cross_entropy`` with the other pixels ignored. smp has no OHEM loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from semseg.losses.base import ClassWeightedLoss
from semseg.losses.functional import number, pixel_nll, pixel_weights, weighted_mean


class OhemCrossEntropyLoss(ClassWeightedLoss):
    """Cross-entropy over pixels whose true-class probability is < ``thresh``, at least ``min_kept`` of them."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        *,
        thresh: float = 0.7,
        min_kept: int = 100_000,
    ) -> None:
        super().__init__(num_classes, ignore_index, class_weights)
        self.thresh = number(thresh, "thresh", 0.0, 1.0)
        self.min_kept = number(min_kept, "min_kept", 0, integer=True)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        nll = pixel_nll(logits, target, self.ignore_index)
        kept = self.hard_pixels(torch.exp(-nll.detach()), valid)
        return weighted_mean(nll, pixel_weights(target, valid, self.class_weights) * kept)

    def hard_pixels(self, true_prob: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``bool[N,H,W]``: valid pixels below ``thresh``, or the ``min_kept`` least confident ones."""
        hard = valid & (true_prob < self.thresh)
        wanted = min(self.min_kept, int(valid.sum()))
        if int(hard.sum()) >= wanted:
            return hard
        # kthvalue, not a full sort, over all pixels (no boolean-index copy): ignored ones
        # score 2, above every probability, and wanted <= the valid count
        cut = torch.where(valid, true_prob, 2.0).flatten().kthvalue(wanted).values
        return valid & (true_prob <= cut)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, thresh={self.thresh}, min_kept={self.min_kept}"

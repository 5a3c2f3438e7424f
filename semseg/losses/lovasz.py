"""Lovász-softmax loss (Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss", CVPR 2018).

A convex surrogate of the Jaccard loss 1 - IoU: per class c, the pixel errors
``|y_c - p_c|`` are sorted in decreasing order and dotted with the gradient of the
Lovász extension of the Jaccard loss (Algorithm 1 of the paper, ``lovasz_grad`` in
the authors' code). As in the authors' ``lovasz_softmax(classes="present",
per_image=False)``: the whole batch is one set of pixels, ignored pixels are
removed, and the loss is the mean over the classes present in the target.

Written by hand, with the authors' algorithm, because smp 0.6.0's ``LovaszLoss``
(their code) sorts the classes one by one in a Python loop and, on a batch where
every pixel is ignored, returns an empty ``[0, C]`` tensor instead of a scalar 0
(tests/test_losses.py shows it). Here every class is sorted in one batched sort of
integer keys, and the counts are cumulated as integers so they stay exact past 2^24 pixels.
tests/test_losses.py checks values and gradients against an independent
re-statement of the authors' ``lovasz_softmax_flat``.
"""

from __future__ import annotations

import torch

from semseg.losses.base import SegLoss
from semseg.losses.functional import safe_ratio


def lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing order.

    ``fg_sorted: bool[C,P]``, per class the ground truth in that order -> ``float32[C,P]``.
    Counts are cumulated as int32 (exact for any batch below 2^31 pixels; float32 would
    stop counting at 2^24 = 16.7M, a batch of 8 Cityscapes frames).
    """
    seen = torch.arange(1, fg_sorted.shape[1] + 1, dtype=torch.int32, device=fg_sorted.device)
    # the authors' intersection = gts - cumsum(fg), union = gts + cumsum(1 - fg) = intersection + seen
    intersection = fg_sorted.sum(dim=1, keepdim=True, dtype=torch.int32) - fg_sorted.cumsum(dim=1, dtype=torch.int32)
    jaccard = seen / (intersection + seen).float()  # = 1 - intersection / union
    return jaccard.diff(dim=1, prepend=jaccard.new_zeros(len(jaccard), 1))


class LovaszSoftmaxLoss(SegLoss):
    """Lovász-softmax over the whole batch, averaged over the classes present in the target."""

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keep = valid.flatten()
        probs = logits.softmax(dim=1).transpose(0, 1).reshape(self.num_classes, -1)[:, keep]  # [C, P]
        classes = torch.arange(self.num_classes, device=logits.device).unsqueeze(1)
        fg = target.flatten()[keep].unsqueeze(0) == classes  # [C, P]
        errors = torch.where(fg, 1.0 - probs, probs)  # |fg - p|
        # errors >= 0, so their float32 bit patterns order like the values, and torch
        # sorts int32 keys (radix) about twice as fast as float32 ones on CPU
        order = errors.detach().view(torch.int32).argsort(dim=1, descending=True)
        per_class = torch.linalg.vecdot(errors.gather(1, order), lovasz_grad(fg.gather(1, order)))
        present = fg.any(dim=1)
        return safe_ratio((per_class * present).sum(), present.sum().float())

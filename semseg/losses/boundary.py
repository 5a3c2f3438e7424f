"""PIDNet's boundary losses (Xu, Xiong & Bhattacharyya, 2023, "PIDNet: A Real-time Semantic Segmentation
Network Inspired by PID Controllers", CVPR 2023: its loss function).

A model with a boundary head returns ``"boundary": float[N,1,H,W]`` logits
from :meth:`SegModel.forward_aux`; the trainer then adds
:func:`boundary_loss`, the two boundary terms of the paper's total loss
``0.4 * l0 + 20 * l1 + 1 * l2 + 1 * l3``:

- ``l1``, the boundary head's weighted binary cross-entropy against the
  boundaries of the label map. The paper balances the two classes: boundary
  pixels weigh the fraction of non-boundary pixels and the others the fraction
  of boundary pixels, summed and divided by the pixel count.
- ``l3``, the boundary-awareness loss: the run's own segmentation loss on the
  main logits, on the pixels where the boundary head's sigmoid exceeds 0.8
  (the others are set to ``ignore_index``). Which pixels count is not
  differentiated; only the main logits get its gradient.

(``l0``, the P-branch head, is the ``"aux"`` output, weighted by
``train.aux_weight``; ``l2`` is the run's loss on ``"out"``.)

The boundary map: the authors run Canny on the label map and dilate the edges
with a 4x4 kernel, a band about 4 pixels wide along every change of class.
Here a pixel is a boundary pixel when a labelled pixel of another class lies
within ``radius`` pixels of it (a (2r+1)-square window, max- and min-pooling
the labels); radius 2 gives the same 4-pixel band without OpenCV and on the
batch's device. Unlike Canny on the raw label map, ``ignore_index`` pixels make
no boundary (void is not a class) and are left out of the cross-entropy.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from semseg.losses.base import float32_math
from semseg.losses.functional import safe_ratio

BCE_WEIGHT = 20.0  # the paper's lambda_1
BAS_WEIGHT = 1.0  # the paper's lambda_3
THRESHOLD = 0.8  # the paper's t: a pixel is "boundary" to the boundary-awareness loss above this probability
RADIUS = 2


def boundary_map(target: Tensor, ignore_index: int = 255, radius: int = RADIUS) -> Tensor:
    """``bool[N,H,W]``: labelled pixels with a labelled pixel of another class within ``radius`` (Chebyshev distance)."""
    valid = target != ignore_index
    labels = target.float()  # max_pool2d takes floating point; class ids are exact in float32
    window = 2 * radius + 1
    highest = F.max_pool2d(torch.where(valid, labels, -1.0)[:, None], window, stride=1, padding=radius)
    lowest = -F.max_pool2d(torch.where(valid, -labels, -float(2**24))[:, None], window, stride=1, padding=radius)
    return valid & (highest[:, 0] > lowest[:, 0])


def weighted_boundary_bce(boundary_logits: Tensor, edges: Tensor, valid: Tensor) -> Tensor:
    """Class-balanced binary cross-entropy, ``sum(w * bce) / #valid``, 0 without valid pixels.

    ``boundary_logits: float[N,1,H,W]``; ``edges``, ``valid``: ``bool[N,H,W]``. A
    boundary pixel weighs ``#non-boundary / #valid``, a non-boundary pixel
    ``#boundary / #valid``; ignored pixels weigh 0.
    """
    logits = boundary_logits[:, 0].float()
    positive = (edges & valid).float()
    negative = (~edges & valid).float()
    count = valid.sum().float()
    weights = safe_ratio(positive * negative.sum() + negative * positive.sum(), count)
    bce = F.binary_cross_entropy_with_logits(logits, positive, reduction="none")
    return safe_ratio((weights * bce).sum(), count)


def boundary_loss(boundary_logits: Tensor, logits: Tensor, target: Tensor,
                  criterion: Callable[[Tensor, Tensor], Tensor], ignore_index: int = 255,
                  bce_weight: float = BCE_WEIGHT, bas_weight: float = BAS_WEIGHT, threshold: float = THRESHOLD,
                  radius: int = RADIUS) -> Tensor:
    """``bce_weight * l1 + bas_weight * l3`` (see the module docstring); a float32 scalar.

    ``boundary_logits: float[N,1,H,W]``, ``logits: float[N,C,H,W]`` (the main
    output), ``target: int[N,H,W]``; ``criterion(logits, target)`` is the run's
    segmentation loss, which must honour ``ignore_index``.
    """
    with float32_math(logits.device.type):
        valid = target != ignore_index
        bce = weighted_boundary_bce(boundary_logits, boundary_map(target, ignore_index, radius), valid)
        marked = torch.sigmoid(boundary_logits[:, 0].detach().float()) > threshold
        aware = criterion(logits.float(), torch.where(marked, target, torch.full_like(target, ignore_index)))
    return bce_weight * bce + bas_weight * aware

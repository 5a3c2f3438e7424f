"""Boundary IoU (Cheng et al., CVPR 2021, "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation").

For a class ``c`` of one image, ``G`` is the ground-truth mask (``target == c``)
and ``P`` the predicted one. ``G_d`` is the part of ``G`` within distance ``d``
of ``G``'s contour: ``G`` minus ``G`` eroded ``d`` times by a 3x3 square (the
chessboard distance, the authors' ``cv2.erode`` with ``iterations=d``). The
image border is a contour too: outside the image counts as background, as the
authors' one-pixel zero padding makes it. ``P_d`` likewise. Then

    boundary IoU_c = |G_d ∩ P_d| / |G_d ∪ P_d|

with ``d = max(1, round(dilation_ratio * sqrt(H² + W²)))``, 2% of the image
diagonal by default, as in the paper.

Semantic segmentation reads it like the confusion matrix (docs/metrics.md):
intersections and unions are **summed over the dataset** per class before the
ratio, pixels whose ground truth is the ignore index count in neither (they
still bound ``G``: a class region that meets an ignored one has a contour
there), a class whose band union is empty over the whole dataset is NaN and
left out of the mean. Perfect predictions score 1 (100 %); a prediction a
few pixels off loses a large share of a band only ``d`` pixels wide, where
IoU over whole regions barely moves.

All classes' bands come from one pass over a label map: a pixel of class ``c``
is outside the eroded mask iff its (2d+1)x(2d+1) square leaves the image or
holds another label, and that is a row test then a column test, each read
from prefix sums of "the label changes here", linear in the pixels whatever
``d`` is. Written here because neither torch nor torchvision has a binary
erosion, and OpenCV's (the authors') loops over classes and iterations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from semseg.errors import SemsegError
from semseg.meta import check_ignore_index, check_num_classes
from semseg.metrics.counting import LabelMap, as_label_tensor

DEFAULT_DILATION_RATIO = 0.02


def boundary_width(height: int, width: int, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> int:
    """``d`` of an image: ``dilation_ratio`` of its diagonal, rounded, at least 1 pixel."""
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def _uniform_windows(labels: np.ndarray, d: int, ok: np.ndarray | None) -> np.ndarray:
    """Per row of ``labels`` [H, W]: whether ``[x - d, x + d]`` lies inside the row, holds one label and only ``ok`` pixels."""
    height, width = labels.shape
    inside = np.zeros((height, width), dtype=bool)
    if width < 2 * d + 1:
        return inside
    # bad[k] (k >= 1): the label changes between k-1 and k, or pixel k or k-1 is not ok; the window of x is
    # uniform and ok iff bad sums to 0 over k in (x - d, x + d], read from prefix sums with a leading zero
    bad = labels[:, 1:] != labels[:, :-1]
    if ok is not None:
        bad |= ~ok[:, 1:]
        bad |= ~ok[:, :-1]
    prefix = np.zeros((height, width + 1), dtype=np.int32)
    np.cumsum(bad, axis=1, dtype=np.int32, out=prefix[:, 2:])
    inside[:, d:width - d] = prefix[:, 2 * d + 1:] == prefix[:, 1:width - 2 * d + 1]
    return inside


def contour_band(labels: np.ndarray, d: int) -> np.ndarray:
    """Pixels within chessboard distance ``d`` of another label or of the image border: bool [H, W] of int [H, W].

    For every class ``c`` at once, ``band & (labels == c)`` is the mask ``labels == c``
    minus its erosion by a (2d+1)x(2d+1) square: the ``G_d`` of the paper.
    """
    rows = _uniform_windows(labels, d, None)
    # the column pass on transposed copies: NumPy's cumsum runs fastest along contiguous rows
    interior = _uniform_windows(np.ascontiguousarray(labels.T), d, np.ascontiguousarray(rows.T)).T
    return ~interior


class BoundaryIoU:
    """Per-class boundary-band intersections and unions, accumulated over a dataset like :class:`ConfusionMatrix`.

    ``intersection`` and ``union`` are int64 [C]; ``num_images`` counts the label maps seen.
    ``dilation_ratio``: ``d`` as a fraction of each image's diagonal (0.02 in the paper).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index, num_classes)
        if isinstance(dilation_ratio, bool) or not isinstance(dilation_ratio, (int, float)) or not 0 < dilation_ratio <= 1:
            raise SemsegError(f"boundary IoU dilation_ratio must lie in (0, 1] (a fraction of the image diagonal), got {dilation_ratio!r}")
        self.dilation_ratio = float(dilation_ratio)
        self.intersection = np.zeros(num_classes, dtype=np.int64)
        self.union = np.zeros(num_classes, dtype=np.int64)
        self.num_images = 0

    def __repr__(self) -> str:
        return (f"BoundaryIoU(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"dilation_ratio={self.dilation_ratio}, num_images={self.num_images})")

    def update(self, pred: LabelMap, target: LabelMap) -> None:
        """Add a label map [H, W] or a batch [N, H, W] of class ids (tensors on any device, or NumPy arrays).

        Counted on the CPU. A target value that is neither a class nor the
        ignore index is a SemsegError; a prediction outside 0..C-1 matches no
        class (the confusion matrix beside this one names such values).
        """
        pred_t, target_t = as_label_tensor(pred, "prediction"), as_label_tensor(target, "target")
        if pred_t.shape != target_t.shape:
            raise SemsegError(f"prediction shape {tuple(pred_t.shape)} differs from target shape {tuple(target_t.shape)}")
        if pred_t.ndim not in (2, 3):
            raise SemsegError(f"label maps must be [H, W] or [N, H, W], got shape {tuple(pred_t.shape)}")
        preds, targets = pred_t.cpu().numpy(), target_t.cpu().numpy()
        if preds.ndim == 2:
            preds, targets = preds[None], targets[None]
        for pred_map, target_map in zip(preds, targets):
            self._update_one(pred_map, target_map)
            self.num_images += 1

    def _update_one(self, pred: np.ndarray, target: np.ndarray) -> None:
        if not pred.size:
            return
        d = boundary_width(*pred.shape, self.dilation_ratio)
        valid = target != self.ignore_index
        outside = valid & ((target < 0) | (target >= self.num_classes))
        if outside.any():
            raise SemsegError(f"target holds values {sorted(set(np.unique(target[outside]).tolist()))[:10]} that are "
                              f"neither a class id (0..{self.num_classes - 1}) nor the ignore index {self.ignore_index}")
        gt_band = contour_band(target, d) & valid
        pred_band = contour_band(pred, d) & valid & (pred >= 0) & (pred < self.num_classes)
        both = gt_band & pred_band & (pred == target)
        count = self.num_classes
        gt_pixels = np.bincount(target[gt_band], minlength=count)[:count]
        pred_pixels = np.bincount(pred[pred_band], minlength=count)[:count]
        intersection = np.bincount(target[both], minlength=count)[:count]
        self.intersection += intersection
        self.union += gt_pixels + pred_pixels - intersection

    def compute(self) -> dict[str, Any]:
        """``{"boundary_iou": float64 [C] (NaN where the union is empty), "mboundary_iou": mean of the defined ones}``."""
        per_class = np.full(self.num_classes, np.nan)
        np.divide(self.intersection, self.union, out=per_class, where=self.union > 0)
        defined = per_class[~np.isnan(per_class)]
        return {"boundary_iou": per_class, "mboundary_iou": float(defined.mean()) if defined.size else math.nan}

    def reset(self) -> None:
        self.intersection[:] = 0
        self.union[:] = 0
        self.num_images = 0

    def merge(self, other: BoundaryIoU) -> BoundaryIoU:
        """Add ``other``'s counts (same classes, ignore index and ratio); returns self."""
        if (other.num_classes, other.ignore_index, other.dilation_ratio) != (self.num_classes, self.ignore_index, self.dilation_ratio):
            raise SemsegError(f"cannot merge {other!r} into {self!r}: classes, ignore index or dilation ratio differ")
        self.intersection += other.intersection
        self.union += other.union
        self.num_images += other.num_images
        return self

    def all_reduce(self) -> None:
        """Sum the counts over torch.distributed ranks; no-op when not initialized."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        on_cuda = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
        packed = torch.from_numpy(np.concatenate([self.intersection, self.union, [self.num_images]])).to(device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        summed = packed.cpu().numpy()
        c = self.num_classes
        self.intersection, self.union, self.num_images = summed[:c].copy(), summed[c:2 * c].copy(), int(summed[-1])

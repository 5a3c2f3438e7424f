"""The accumulator of the metric contract: :class:`ConfusionMatrix`, summed over a dataset (and over DDP ranks).

``matrix[g, p]`` counts pixels whose ground truth is class ``g`` and whose
prediction is class ``p``; pixels whose ground truth is the ignore index are
not counted. Scores come from the matrix alone (:mod:`semseg.metrics.scores`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from semseg.errors import SemsegError
from semseg.meta import check_ignore_index, check_num_classes
from semseg.metrics.counting import LabelMap, Scratch, as_label_tensor, count_pairs
from semseg.metrics.scores import compute_scores


class ConfusionMatrix:
    """Counts of (ground truth, prediction) pixel pairs, accumulated over a dataset.

    ``matrix`` is int64 [C, C] (rows = ground truth, columns = prediction);
    ``num_images`` counts the label maps seen.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index, num_classes)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.num_images = 0
        self._scratch: list[Scratch] = []  # buffers reused across updates, one set per counting thread

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"num_images={self.num_images}, pixels={int(self.matrix.sum())})"
        )

    def update(self, pred: LabelMap, target: LabelMap) -> None:
        """Add a label map [H, W] or a batch [N, H, W] of class ids.

        ``pred`` and ``target`` are torch tensors (any device) or NumPy arrays
        of any integer dtype, with the same shape. A value outside the contract
        raises :class:`LabelValueError` and nothing of the update is counted.
        On the CPU a large input is counted in parts on up to
        ``torch.get_num_threads()`` threads (docs/metrics.md says why).
        """
        pred_t, target_t = as_label_tensor(pred, "prediction"), as_label_tensor(target, "target")
        if pred_t.shape != target_t.shape:
            raise SemsegError(f"prediction shape {tuple(pred_t.shape)} differs from target shape {tuple(target_t.shape)}")
        if pred_t.ndim not in (2, 3):
            raise SemsegError(
                f"label maps must be [H, W] or [N, H, W], got shape {tuple(pred_t.shape)} "
                "(pass class ids, e.g. logits.argmax(1), not logits)"
            )
        if pred_t.device != target_t.device:  # count where the data already is, on the accelerator
            device = pred_t.device if pred_t.device.type != "cpu" else target_t.device
            pred_t, target_t = pred_t.to(device), target_t.to(device)
        if pred_t.numel():
            self.matrix += count_pairs(pred_t, target_t, self.num_classes, self.ignore_index, self._scratch)
        self.num_images += 1 if pred_t.ndim == 2 else int(pred_t.shape[0])

    def compute(self) -> dict[str, Any]:
        """The scores of :func:`compute_scores` for the matrix so far."""
        return compute_scores(self.matrix)

    def reset(self) -> None:
        self.matrix[:] = 0
        self.num_images = 0

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts to this matrix (e.g. from another worker); returns self."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise SemsegError(
                f"cannot merge a confusion matrix of {other.num_classes} classes (ignore {other.ignore_index}) "
                f"into one of {self.num_classes} classes (ignore {self.ignore_index})"
            )
        self.matrix += other.matrix
        self.num_images += other.num_images
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def all_reduce(self) -> None:
        """Sum the matrix and image count over torch.distributed ranks; no-op when not initialized."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        # NCCL reduces CUDA tensors only; gloo (and mixed "cpu:gloo,cuda:nccl" groups) take CPU tensors.
        on_cuda = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
        packed = torch.from_numpy(np.append(self.matrix.ravel(), self.num_images)).to(device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        summed = packed.cpu().numpy()
        self.matrix = summed[:-1].reshape(self.num_classes, self.num_classes).copy()
        self.num_images = int(summed[-1])

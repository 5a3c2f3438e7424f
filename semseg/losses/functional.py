"""The math the losses share: per-pixel terms, masking ignored pixels, weighted means, option checks.

The tensors are float32 ``logits[N,C,H,W]``, a long ``target[N,H,W]`` and the
``valid[N,H,W]`` mask of non-ignored pixels. Ignored pixels are masked with
``torch.where``, torch's ``ignore_index`` or a multiplication by zero on finite
values, so their logits get exactly zero gradient.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from semseg.errors import SemsegError


def pixel_nll(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``-log softmax(logits)[target]`` per pixel, ``float[N,H,W]``: torch's fused unweighted
    cross-entropy, 0 with zero gradient at ignored pixels."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")


def pixel_weights(target: torch.Tensor, valid: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    """Weight of each pixel, ``float[N,H,W]``: its class's weight (1 without weights), 0 if ignored."""
    if class_weights is None:
        return valid.float()
    return class_weights[torch.where(valid, target, 0)] * valid  # class 0 stands in for ignored, then zeroed


def safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` for a denominator >= 0 that is 0 when nothing counts: then 0, not NaN."""
    return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w * v) / sum(w)``; 0 when every weight is 0 (e.g. all pixels ignored)."""
    return safe_ratio((values * weights).sum(), weights.sum())


def class_vector(values: Sequence[float] | torch.Tensor | np.ndarray | None, num_classes: int, name: str) -> torch.Tensor | None:
    """Per-class weights as ``float32[C]`` (None stays None): right length, finite, >= 0, not all 0."""
    if values is None:
        return None
    try:
        vector = torch.as_tensor(np.asarray(values, dtype=np.float64) if not isinstance(values, torch.Tensor) else values)
    except (TypeError, ValueError) as err:
        raise SemsegError(f"loss option '{name}': expected {num_classes} numbers, got {values!r}") from err
    vector = vector.detach().to("cpu", torch.float32)
    if vector.dim() != 1 or vector.numel() != num_classes:
        raise SemsegError(f"loss option '{name}': expected {num_classes} per-class values, got shape {list(vector.shape)}")
    if not torch.isfinite(vector).all() or (vector < 0).any() or vector.sum() == 0:
        raise SemsegError(f"loss option '{name}': values must be finite, >= 0 and not all 0, got {vector.tolist()}")
    return vector


def number(value: object, name: str, low: float, high: float = float("inf"), *, integer: bool = False) -> float:
    """A scalar option checked against ``low <= value <= high``; returned as int when ``integer``."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        raise SemsegError(f"loss option '{name}': expected {'an integer' if integer else 'a number'} in [{low}, {high}], got {value!r}")
    return int(value) if integer else float(value)

"""What every loss shares: the input contract, checked once, and float32 math outside autocast.

A loss takes ``logits: float[N,C,H,W]`` and ``target: int[N,H,W]`` whose values are
class ids ``0..C-1`` or ``ignore_index``, and returns a float32 scalar. Bad inputs
raise :class:`SemsegError` before any math runs, so a wrong mask never surfaces as
a CUDA assert or a deep torch traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ContextManager

import torch
from torch import nn

from semseg.errors import SemsegError
from semseg.losses.functional import class_vector


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__


def check_inputs(logits: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Validate the pair; return ``valid: bool[N,H,W]``, the pixels that are not ignored."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 4:
        raise SemsegError(f"loss: expected float logits [N,C,H,W], got a {_describe(logits)}")
    if logits.shape[1] != num_classes:
        raise SemsegError(f"loss: the logits have {logits.shape[1]} channels but the loss was built for {num_classes} classes")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise SemsegError(f"loss: expected an integer target [N,H,W], got a {_describe(target)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise SemsegError(f"loss: target shape {list(target.shape)} does not match the logits {list(logits.shape)}: expected {list(expected)}")
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bad.any():
        values = torch.unique(target[bad]).tolist()
        shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
        raise SemsegError(
            f"loss: the target holds values [{shown}] that are neither a class id (0..{num_classes - 1}) "
            f"nor the ignore index {ignore_index}"
        )
    return valid


def float32_math(device_type: str) -> ContextManager:
    """Autocast switched off: sums over a million pixels, sorts and cumsums stay float32."""
    is_available = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))
    if is_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class SegLoss(nn.Module):
    """Base of every loss: ``forward`` checks the inputs and runs :meth:`compute` in float32.

    Subclasses implement ``compute(logits, target, valid)`` with ``logits: float32[N,C,H,W]``,
    ``target: long[N,H,W]`` (ignored pixels still hold ``ignore_index``) and ``valid: bool[N,H,W]``.
    Ignored pixels must receive exactly zero gradient, and a batch without a valid pixel
    must give 0. ``uses_class_weights`` tells :func:`create_loss` whether ``class_weights`` matter.
    """

    uses_class_weights = False

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits: float[N,C,H,W]``, ``target: int[N,H,W]`` -> float32 scalar."""
        valid = check_inputs(logits, target, self.num_classes, self.ignore_index)
        with float32_math(logits.device.type):
            return self.compute(logits.float(), target.long(), valid)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"


class ClassWeightedLoss(SegLoss):
    """A loss with per-class weights, kept in the buffer ``class_weights: float32[C]`` (or None)."""

    uses_class_weights = True

    def __init__(self, num_classes: int, ignore_index: int = 255, class_weights: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__(num_classes, ignore_index)
        # a buffer, so that .to(device) moves it with the loss; not persistent: it is not model state
        self.register_buffer("class_weights", class_vector(class_weights, num_classes, "class_weights"), persistent=False)

    def extra_repr(self) -> str:
        weights = None if self.class_weights is None else [round(w, 4) for w in self.class_weights.tolist()]
        return f"{super().extra_repr()}, class_weights={weights}"

"""Prediction math on tensors: running a model on a whole image, resizing scores back, test-time augmentation.

Each function takes a ``model`` callable (``float[N,3,h,w] -> logits[N,C,h,w]``)
and reads no configuration stored on it. Scores (logits or probabilities) are
resized, never class ids: the argmax comes after.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from semseg.errors import SemsegError
from semseg.meta import Size, as_size, check_tta_scales

ModelFn = Callable[[Tensor], Tensor]
DEFAULT_TTA_SCALES = (0.75, 1.0, 1.25)


def resize_back(scores: Tensor, size: Size) -> Tensor:
    """Resize logits or probabilities ``[N, C, h, w]`` bilinearly to ``size`` -> ``[N, C, H, W]``.

    Scores are resized, never class ids: the argmax comes after.
    """
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores, size=tuple(size), mode="bilinear", align_corners=False)


def resize_images(images: Tensor, size: Size) -> Tensor:
    """Resize normalized images ``[N, 3, h, w]`` to ``size`` (bilinear, antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    # imported here: torchvision's package import takes seconds, which whole-image prediction at native size
    # (no --size, no TTA) never needs
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, list(size), antialias=True)


def predict_whole(model: ModelFn, images: Tensor, size: Size | None = None) -> Tensor:
    """Logits ``[N, C, H, W]`` for normalized ``images [N, 3, H, W]``, optionally run at ``size``.

    The model pads to its stride and crops back itself; when ``size`` is given
    the logits are resized back to ``H, W`` before anyone takes an argmax.
    """
    height, width = images.shape[-2:]
    inputs = images if size is None else resize_images(images, size)
    return resize_back(model(inputs).float(), (height, width))


def run_padded(model: ModelFn, images: Tensor, size: Size) -> Tensor:
    """Logits ``[N, C, h, w]`` of normalized ``images [N, 3, h, w]`` (h, w <= ``size``) from a model that takes ``size`` only.

    The images are zero-padded on the bottom and right to ``size`` (zero is the
    mean colour once normalized: the padding models apply to reach their
    stride), and the logits are cropped back. Used to run fixed-size graphs at
    the image's native resolution instead of resizing the image.
    """
    height, width = images.shape[-2:]
    if (height, width) == tuple(size):
        return model(images)
    if height > size[0] or width > size[1]:
        raise SemsegError(f"a {height}x{width} input does not fit the model's fixed {size[0]}x{size[1]} size")
    padded = F.pad(images, (0, size[1] - width, 0, size[0] - height))
    return model(padded)[..., :height, :width]


def tta(
    predict_probs: Callable[[Tensor], Tensor],
    images: Tensor,
    scales: Sequence[float] = DEFAULT_TTA_SCALES,
    flip: bool = True,
    base_size: Size | None = None,
) -> Tensor:
    """Test-time augmentation: mean softmax probabilities ``[N, C, H, W]`` over scales and mirroring.

    ``predict_probs`` maps normalized images ``[N, 3, h, w]`` to probabilities
    ``[N, C, h, w]``. Each scale multiplies ``base_size`` (default: the image
    size); every result is resized back to ``H, W`` before averaging.
    """
    check_tta_scales(scales, "tta scales")
    height, width = images.shape[-2:]
    base_h, base_w = base_size or (height, width)
    total, count = None, 0
    for scale in scales:
        scaled = resize_images(images, (max(1, round(base_h * scale)), max(1, round(base_w * scale))))
        views = [(scaled, False)] + ([(scaled.flip(-1), True)] if flip else [])
        for view, mirrored in views:
            probs = predict_probs(view).float()
            probs = resize_back(probs.flip(-1) if mirrored else probs, (height, width))
            total = probs if total is None else total + probs
            count += 1
    return total / count

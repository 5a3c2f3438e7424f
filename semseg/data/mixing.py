"""ClassMix between the samples of a training batch (Olsson et al., WACV 2021, "ClassMix: Segmentation-Based
Data Augmentation for Semi-Supervised Learning"), with the batch's own label maps as the masks.

A sample picked for mixing gets, from another sample of the batch, the pixels of a random half of the
classes present there (rounded up), image and label alike: objects move to other scenes and other
neighbours, with their true outlines. Written here because torchvision's ``transforms.v2`` CutMix and
MixUp mix whole images under one soft class label (classification): they take no label map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def class_mix(images: Tensor, masks: Tensor, probability: float, ignore_index: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``images: float[N,3,H,W]``, ``masks: int[N,H,W]`` -> the mixed batch (new tensors; the inputs are kept).

    Each sample, with ``probability``, gets pasted onto it the pixels of ``ceil(k / 2)`` of the ``k`` classes
    present in its partner, another sample of the batch drawn at random (never itself); the classes are drawn
    from the partner's labels before any pasting. ``ignore_index`` pixels are never pasted, so a pasted class
    brings exactly its labelled pixels. A batch of one sample comes back unchanged. The draws use ``generator``
    (torch's global generator by default, which the trainer seeds per epoch: resume stays exact).
    """
    count = images.shape[0]
    if count < 2 or probability <= 0:
        return images, masks
    device = masks.device
    picked = torch.rand(count, generator=generator) < probability
    partners = (torch.arange(count) + torch.randint(1, count, (count,), generator=generator)) % count
    mixed_images, mixed_masks = images.clone(), masks.clone()
    for index in picked.nonzero().flatten().tolist():
        partner = int(partners[index])
        present = masks[partner].unique()
        present = present[present != ignore_index].cpu()
        if present.numel() == 0:
            continue
        order = torch.randperm(present.numel(), generator=generator)
        chosen = present[order[: math.ceil(present.numel() / 2)]].to(device)
        paste = torch.isin(masks[partner], chosen)
        mixed_masks[index] = torch.where(paste, masks[partner], masks[index])
        mixed_images[index] = torch.where(paste, images[partner], images[index])
    return mixed_images, mixed_masks

"""Joint augmentation presets on torchvision.transforms.v2.

Every transform takes and returns ``(image, mask)``: a uint8 ``tv_tensors.Image``
[3, H, W] and an int64 ``tv_tensors.Mask`` [H, W]. torchvision dispatches on the
type, so geometric transforms move image and mask together, colour transforms
touch the image only, and a Mask is always resized with nearest neighbours and
padded with the value given for ``tv_tensors.Mask`` (tests/test_data_transforms.py
checks both). Masks are never interpolated.

The presets end with a float32 normalized image [3, h, w] and an int64 mask [h, w]
as plain tensors.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from semseg.config import DataConfig

# data.blur's range of sigma (pixels) is DAFormer's; the kernel covers +-3 sigma of its top
BLUR_SIGMA = (0.15, 1.15)
BLUR_KERNEL = 9
# mmsegmentation re-draws a crop up to this many times when cat_max_ratio < 1
CAT_MAX_TRIES = 10


class RandomScale(v2.Transform):
    """Resize by a random factor drawn uniformly from ``scale_range``.

    The factor applies to the image size, or, with ``base_size`` (height, width),
    to the largest size that fits the image into ``base_size`` keeping its aspect
    ratio (mmsegmentation's ``RandomResize(scale, ratio_range, keep_ratio=True)``).
    torchvision's ScaleJitter does the latter but needs a fixed target size, so
    it cannot scale relative to each image's own size.
    """

    def __init__(self, scale_range: Sequence[float], base_size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.base_size = base_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = F.get_size(next(x for x in flat_inputs if isinstance(x, (tv_tensors.Image, tv_tensors.Mask))))
        low, high = self.scale_range
        scale = low + float(torch.rand(())) * (high - low)
        if self.base_size is not None:
            scale *= min(self.base_size[0] / height, self.base_size[1] / width)
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        # torch's uint8 antialiased resize fails an internal assert on 1x1 outputs (found by
        # the property test); a 1x2 output is as useless for training and works
        return {"size": [size[0], max(2, size[1])] if size == [1, 1] else size}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # F.resize dispatches a Mask to resize_mask, which uses nearest neighbours whatever we pass
        return F.resize(inpt, size=params["size"], antialias=True)


class CatMaxRatioCrop(v2.RandomCrop):
    """``v2.RandomCrop`` (padded when the input is smaller) that re-draws a crop in which
    one class covers more than ``cat_max_ratio`` of the labelled pixels, up to
    ``CAT_MAX_TRIES`` draws, as mmsegmentation's ``RandomCrop(cat_max_ratio=...)``.
    """

    def __init__(self, size: Sequence[int], cat_max_ratio: float, ignore_index: int) -> None:
        super().__init__(size, pad_if_needed=True, fill={tv_tensors.Mask: ignore_index, "others": 0})
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        if self.cat_max_ratio >= 1 or not masks:
            return params
        for _ in range(CAT_MAX_TRIES - 1):
            if self._mixed_enough(masks[0], params):
                break
            params = super().make_params(flat_inputs)
        return params

    def _mixed_enough(self, mask: torch.Tensor, params: dict[str, Any]) -> bool:
        """True when the crop has two classes or more and none covers more than cat_max_ratio."""
        pad_left, pad_top = params["padding"][0], params["padding"][1]
        # top/left are in padded coordinates; the padding holds only ignore pixels
        top, left = max(0, params["top"] - pad_top), max(0, params["left"] - pad_left)
        bottom = params["top"] - pad_top + params["height"]
        right = params["left"] - pad_left + params["width"]
        window = mask[..., top:bottom, left:right]
        # bincount: a tenth of the time of torch.unique(return_counts=True) on a CamVid crop
        counts = torch.bincount(window.flatten())
        if self.ignore_index < len(counts):
            counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and bool(counts.max() < self.cat_max_ratio * counts.sum())


class RandomHue(v2.Transform):
    """``v2.ColorJitter(hue=hue)``: shift the hue by a factor drawn from [-hue, hue] (of the colour circle).

    A uint8 image on the CPU goes through torchvision's PIL hue kernel instead of
    its tensor kernel: the same operation (an HSV round trip), several times faster
    on uint8 frames, where the tensor kernel was the slowest step of the training
    preset (BENCHMARKS.md, "Data pipeline"). Other images use the tensor kernel.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, hue: float) -> None:
        super().__init__()
        self.hue = hue

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"factor": float(torch.empty(()).uniform_(-self.hue, self.hue))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if inpt.dtype != torch.uint8 or inpt.device.type != "cpu" or inpt.ndim != 3:
            return F.adjust_hue(inpt, params["factor"])
        shifted = F.adjust_hue(F.to_pil_image(inpt), params["factor"])
        return tv_tensors.wrap(F.pil_to_tensor(shifted), like=inpt)


def photometric_distortion(brightness: float, contrast: float, saturation: float, hue: float) -> v2.Transform:
    """mmsegmentation's PhotoMetricDistortion with torchvision ops: brightness, contrast and saturation
    (a factor in [1 - v, 1 + v]) and hue (a shift in [-hue, hue] of the colour circle), each with
    probability 1/2; a range of 0 leaves that step out. The defaults live in one place, ``DataConfig``
    (mmsegmentation's values).

    v2.RandomPhotometricDistort would be the one-liner, but it also permutes the colour
    channels, which turns a blue sky red: a change of meaning for scene classes.
    """
    steps = [
        v2.ColorJitter(brightness=brightness) if brightness else None,
        v2.ColorJitter(contrast=contrast) if contrast else None,
        v2.ColorJitter(saturation=saturation) if saturation else None,
        RandomHue(hue) if hue else None,
    ]
    applied = [v2.RandomApply([step], p=0.5) for step in steps if step is not None]
    return v2.Compose(applied) if applied else v2.Identity()


def _to_normalized_tensors(cfg: DataConfig) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(cfg.mean, cfg.std),
        v2.ToPureTensor(),
    ]


def train_transform(cfg: DataConfig) -> Callable:
    """Training preset: random scale, crop of ``crop_size`` (padded with ``ignore_index`` in the
    mask, 0 in the image), optional hflip and photometric distortion, normalization.

    ``(Image uint8 [3, H, W], Mask int64 [H, W])`` -> ``(float32 [3, h, w], int64 [h, w])``, (h, w) = crop_size.
    """
    steps: list[v2.Transform] = [
        RandomScale(cfg.scale_range, cfg.base_size),
        CatMaxRatioCrop(cfg.crop_size, cfg.cat_max_ratio, cfg.ignore_index),
    ]
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if cfg.photometric:
        steps.append(photometric_distortion(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    if cfg.blur:
        # v2.GaussianBlur blurs images only: masks pass through unchanged
        steps.append(v2.RandomApply([v2.GaussianBlur(BLUR_KERNEL, sigma=BLUR_SIGMA)], p=cfg.blur))
    return v2.Compose(steps + _to_normalized_tensors(cfg))


def eval_transform(cfg: DataConfig) -> Callable:
    """Evaluation preset: resize to ``base_size`` when set (mask: nearest), normalize; no crop.

    ``(Image uint8 [3, H, W], Mask int64 [H, W])`` -> ``(float32 [3, h, w], int64 [h, w])``.
    """
    steps: list[v2.Transform] = []
    if cfg.base_size is not None:
        steps.append(v2.Resize(list(cfg.base_size), antialias=True))
    return v2.Compose(steps + _to_normalized_tensors(cfg))

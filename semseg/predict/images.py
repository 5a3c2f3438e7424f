"""Images in: any image-like value as uint8 RGB, and normalization exactly as torchvision's recipe does it."""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from semseg.errors import SemsegError
from semseg.io import read_image

ImageLike = str | os.PathLike | Image.Image | np.ndarray


def load_rgb(image: ImageLike) -> np.ndarray:
    """An image path, PIL image or uint8 array as uint8 ``[H, W, 3]`` (the exact bytes PIL decodes)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise SemsegError(f"an image array must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        return image
    raise SemsegError(f"cannot predict on a {type(image).__name__}: pass a path, a PIL image or a uint8 [H, W, 3] array")


def to_chw(rgb: np.ndarray) -> Tensor:
    """uint8 ``[H, W, 3]`` -> uint8 ``[3, H, W]`` (a view, no copy)."""
    with warnings.catch_warnings():
        # PIL's decoded arrays are read-only; prediction only reads them, and a copy of a 48 MP image costs 144 MB
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(rgb).permute(2, 0, 1)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``[..., 3, H, W]`` -> normalized float32.

    Divides by 255 like torchvision's ToTensor (v2's ``to_dtype(scale=True)``
    multiplies by 1/255, which differs in the last bit) and then subtracts the
    mean and divides by the std per channel, the two float32 operations of
    torchvision's Normalize in its order, so fp32 prediction matches the plain
    recipe bit for bit (tests/test_predict.py compares them). Written here rather
    than called: importing torchvision costs a prediction process seconds of
    start-up (its package imports its models and ops), and a process running an
    exported graph needs nothing else from it.
    """
    scaled = images.to(torch.float32).div(255)
    # the constants on the images' device: a GPU Predictor normalizes on the GPU
    constant = {"dtype": torch.float32, "device": scaled.device}
    shape = (3, 1, 1)
    return scaled.sub_(torch.as_tensor(mean, **constant).view(shape)).div_(torch.as_tensor(std, **constant).view(shape))

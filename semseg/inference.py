"""Prediction: pure functions (``predict_whole``, ``slide_window``, ``tta``, ``resize_back``) and the Predictor.

The functions take a ``model`` callable (``float[N,3,h,w] -> logits[N,C,h,w]``)
and read no configuration stored on it. :class:`Predictor` puts them together:
it reads an image, normalizes it with the model's mean and std, runs one of the
modes below and returns a label map at the image's original size.

- ``whole``: the image at its size (or resized to ``size``); the model pads to
  its stride and crops back. Logits are resized back bilinearly before the
  argmax, never the class ids.
- ``slide``: overlapping ``crop`` tiles every ``stride`` pixels, run in batches,
  their softmax probabilities blended with uniform or Gaussian weights. Rows
  are finished band by band, so memory grows with ``C * crop_h * W``, not with
  ``C * H * W``: a 6000x8000 image fits in well under 2 GiB.
- ``tta``: any of the two at several scales and mirrored, softmax probabilities
  averaged.

``precision="fp32"`` is the plain recipe (PIL, ToTensor, Normalize, model,
argmax) to the last bit; ``auto`` adds channels_last and, where the hardware
computes bf16 natively, bf16 autocast.
"""

from __future__ import annotations

import glob
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from semseg.engine.precision import autocast, resolve_device, resolve_precision
from semseg.errors import SemsegError
from semseg.io import read_image
from semseg.meta import ModelMeta, check_tta_scales
from semseg.models.factory import load_torch_model

Size = tuple[int, int]
ModelFn = Callable[[Tensor], Tensor]
ImageLike = str | os.PathLike | Image.Image | np.ndarray

MODES = ("whole", "slide")
DEFAULT_TTA_SCALES = (0.75, 1.0, 1.25)
BLENDS = ("uniform", "gaussian")


# ------------------------------------------------------------------ pure functions
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
    return TF.resize(images, list(size), antialias=True)


def predict_whole(model: ModelFn, images: Tensor, size: Size | None = None) -> Tensor:
    """Logits ``[N, C, H, W]`` for normalized ``images [N, 3, H, W]``, optionally run at ``size``.

    The model pads to its stride and crops back itself; when ``size`` is given
    the logits are resized back to ``H, W`` before anyone takes an argmax.
    """
    height, width = images.shape[-2:]
    inputs = images if size is None else resize_images(images, size)
    return resize_back(model(inputs).float(), (height, width))


def tile_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of ``crop``-long tiles every ``stride`` covering ``length``; the last one ends at the edge."""
    crop = min(crop, length)
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [min(i * stride, length - crop) for i in range(count)]


def tile_grid(size: Size, crop: Size, stride: Size) -> list[tuple[int, int, int, int]]:
    """Tiles ``(y1, y2, x1, x2)`` in row order; all the same size (the crop, clipped to the image)."""
    height, width = size
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    return [
        (y, y + crop_h, x, x + crop_w)
        for y in tile_starts(height, crop_h, stride[0])
        for x in tile_starts(width, crop_w, stride[1])
    ]


def blend_weights(size: Size, kind: str = "uniform") -> Tensor:
    """Per-pixel weight ``[h, w]`` of one tile: ones, or a Gaussian centred on the tile (sigma = size / 8).

    The Gaussian (as in nnU-Net) trusts tile centres, where the network saw the
    most context, over tile borders. It is clamped above zero so that an image
    border covered only by tile borders still gets a prediction.
    """
    if kind == "uniform":
        return torch.ones(size)
    if kind != "gaussian":
        raise SemsegError(f"unknown blend {kind!r}; use one of {', '.join(BLENDS)}")
    axes = []
    for length in size:
        centre, sigma = (length - 1) / 2, length / 8
        axes.append(torch.exp(-((torch.arange(length) - centre) ** 2) / (2 * sigma**2)))
    return torch.outer(axes[0], axes[1]).clamp_min(1e-4)


def slide_window_bands(
    model: ModelFn,
    image: Tensor,
    crop: Size,
    stride: Size,
    num_classes: int | None = None,
    batch_size: int = 4,
    weights: str = "uniform",
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """Blended probabilities of ``image [3, H, W]``, yielded as finished row bands ``(top, probs[C, h, W])``.

    Tiles are visited row by row; once every tile overlapping a row is done the
    row is final and leaves the accumulator. The accumulator holds ``crop_h``
    rows and bands are at most ``BAND_ROWS`` high, so memory does not grow with
    ``H``. ``preprocess`` (e.g. uint8 -> normalized float on the model's device)
    is applied per batch of tiles, so a huge image can stay uint8.
    """
    _check_window(crop, stride)
    height, width = image.shape[-2:]
    tiles = tile_grid((height, width), crop, stride)
    tile_h, tile_w = tiles[0][1] - tiles[0][0], tiles[0][3] - tiles[0][2]
    band = None
    for first in range(0, len(tiles), batch_size):
        batch = tiles[first : first + batch_size]
        inputs = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in batch])
        if preprocess is not None:
            inputs = preprocess(inputs)
        probs = model(inputs).float().softmax(1)
        if band is None:
            channels = _check_classes(probs.shape[1], num_classes)
            band = _BandAccumulator(channels, tile_h, width, blend_weights((tile_h, tile_w), weights), probs.device)
        for (y1, _, x1, x2), tile_probs in zip(batch, probs):
            if y1 > band.top:  # a new row of tiles: the rows above it are final
                yield from band.release(y1 - band.top)
            band.add(tile_probs, x1, x2)
    yield from band.release(band.rows)


# rows of probabilities handed out at a time by slide_window_bands (bounds the temporaries)
BAND_ROWS = 64


class _BandAccumulator:
    """Weighted sums of tile probabilities over ``rows`` image rows starting at ``top``: ``[C, rows, W]``."""

    def __init__(self, channels: int, rows: int, width: int, tile_weight: Tensor, device: torch.device) -> None:
        self.top, self.rows = 0, rows
        self.sums = torch.zeros(channels, rows, width, device=device)
        self.weights = torch.zeros(rows, width, device=device)
        self.tile_weight = tile_weight.to(device)

    def add(self, probs: Tensor, x1: int, x2: int) -> None:
        self.sums[:, :, x1:x2] += probs * self.tile_weight
        self.weights[:, x1:x2] += self.tile_weight

    def release(self, count: int) -> Iterator[tuple[int, Tensor]]:
        """Yield the first ``count`` rows as probabilities, then shift the rest up in place."""
        for start in range(0, count, BAND_ROWS):
            stop = min(start + BAND_ROWS, count)
            yield self.top + start, self.sums[:, start:stop] / self.weights[start:stop]
        # copy in chunks of `count` rows: source and target chunks never overlap, and no second buffer is needed
        for start in range(0, self.rows - count, count):
            stop = min(start + count, self.rows - count)
            self.sums[:, start:stop] = self.sums[:, start + count : stop + count]
            self.weights[start:stop] = self.weights[start + count : stop + count]
        self.sums[:, self.rows - count :] = 0
        self.weights[self.rows - count :] = 0
        self.top += count


def slide_window(
    model: ModelFn,
    image: Tensor,
    crop: Size,
    stride: Size,
    num_classes: int | None = None,
    batch_size: int = 4,
    weights: str = "uniform",
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Blended softmax probabilities ``[C, H, W]`` of ``image [3, H, W]`` from overlapping tiles.

    See :func:`slide_window_bands`; this one gathers the bands into one tensor
    (use the bands directly to stay within bounded memory on huge images).
    """
    bands = [band for _, band in slide_window_bands(model, image, crop, stride, num_classes, batch_size, weights, preprocess)]
    return torch.cat(bands, 1)


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


def _check_classes(channels: int, num_classes: int | None) -> int:
    if num_classes is not None and channels != num_classes:
        raise SemsegError(f"the model gives {channels} output channels but {num_classes} classes were expected")
    return channels


def _pair(value: int | Sequence[int] | None, name: str) -> Size | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise SemsegError(f"{name} must be two positive integers (height width), got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_window(crop: Size, stride: Size) -> None:
    crop, stride = _pair(crop, "crop"), _pair(stride, "stride")
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise SemsegError(f"stride {stride} is larger than crop {crop}: tiles would leave gaps; use stride <= crop")


# ------------------------------------------------------------------ images in
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
    multiplies by 1/255, which differs in the last bit) and then uses the very
    Normalize of torchvision, so fp32 prediction matches the plain recipe exactly.
    """
    return TF.normalize(images.to(torch.float32).div(255), list(mean), list(std))


# ------------------------------------------------------------------ the predictor
@dataclass
class Prediction:
    """One image's results at its original size."""

    labels: np.ndarray  # [H, W] class ids (uint8 up to 256 classes, else int32)
    confidence: np.ndarray | None = None  # [H, W] float32 max softmax probability
    probs: np.ndarray | None = None  # [C, H, W] float32 softmax probabilities


def default_batch_size(device: torch.device) -> int:
    """Images (whole mode) or tiles (slide mode) per forward pass when the user names none.

    One on the CPU: there a batch of 4 CamVid frames ran slower per frame than single
    frames (deeplabv3_resnet50 2.4 s against 2.1 s per frame in NCHW; LR-ASPP 61-79 ms
    against 49-79 ms with channels_last), since one frame's activations already fill
    the caches and both cores. Four on an accelerator, which needs the parallel work.
    """
    return 1 if device.type == "cpu" else 4


class Predictor:
    """Predict label maps at the original image size.

    >>> predictor = Predictor.from_checkpoint("runs/camvid/best.pt", mode="slide", crop=(512, 512))
    >>> labels = predictor("street.png")           # np.ndarray [H, W]
    >>> probs = predictor.predict_proba("street.png")  # float32 [C, H, W]

    ``model``: a semseg model (or any ``nn.Module`` or callable giving logits
    ``[N, C, h, w]`` for ``[N, 3, h, w]``, such as :class:`semseg.export.OnnxModel`).
    ``mean``/``std`` default to the model's ``pretrained_cfg`` (ImageNet's without one).
    ``precision``: ``auto`` (channels_last, plus bf16 autocast where bf16 is
    native), ``fp32`` (the plain recipe, bit for bit), ``bf16``.
    A ``torch.nn.Module`` is put in eval mode and moved to ``device`` in place.
    """

    def __init__(
        self,
        model: nn.Module | ModelFn,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        mode: str = "whole",
        size: Size | None = None,
        crop: Size | None = None,
        stride: Size | None = None,
        blend: str = "uniform",
        tta: bool | None = None,
        scales: Sequence[float] | None = None,
        flip: bool = True,
        precision: str = "auto",
        device: str = "auto",
        batch_size: int | None = None,
    ) -> None:
        from semseg.viz import generate_palette

        self.meta = ModelMeta.of(model)
        # without a known class count, colour every id a uint8 label map can hold
        self.palette = self.meta.palette or generate_palette(self.meta.num_classes or 256)
        self.mean = list(mean if mean is not None else self.meta.mean)
        self.std = list(std if std is not None else self.meta.std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise SemsegError(f"mean and std need 3 values each (std > 0), got mean={self.mean} std={self.std}")
        if mode not in MODES:
            raise SemsegError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if blend not in BLENDS:
            raise SemsegError(f"unknown blend {blend!r}; use one of {', '.join(BLENDS)}")
        if batch_size is not None and batch_size < 1:
            raise SemsegError(f"batch size must be at least 1, got {batch_size}")
        self.mode, self.blend = mode, blend
        self.size = _pair(size, "size")
        recommended = self.meta.tta_scales
        if tta is None:  # the model's recommendation, where its graph can take other sizes
            tta = recommended is not None and getattr(model, "fixed_input_size", None) is None
        scales = scales if scales is not None else (recommended or DEFAULT_TTA_SCALES)
        self.tta, self.scales, self.flip = tta, tuple(float(s) for s in scales), flip
        if tta:
            check_tta_scales(self.scales, "tta scales")
        self._setup_window(crop, stride, model)
        self.model = model
        self._setup_compute(model, precision, device)
        self.batch_size = batch_size or default_batch_size(self.device)

    # -------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> "Predictor":
        """A predictor for a semseg checkpoint (see :func:`semseg.models.load_model`)."""
        from semseg.models import load_model

        return cls(load_model(path), **kwargs)

    def _setup_window(self, crop: Size | None, stride: Size | None, model: Any) -> None:
        fixed = getattr(model, "fixed_input_size", None)  # an ONNX graph exported for one size
        self.crop = _pair(crop, "crop")
        if self.mode == "slide":
            self.crop = self.crop or fixed or self.meta.input_size
            if self.crop is None:
                raise SemsegError("slide mode needs a crop size (--crop H W); the model names no input size")
            self.stride = _pair(stride, "stride") or tuple(c - c // 3 for c in self.crop)
            _check_window(self.crop, self.stride)
        else:
            self.stride = _pair(stride, "stride")
            self.size = self.size or fixed
        if fixed and self.tta:
            raise SemsegError(f"this ONNX model only takes {fixed[0]}x{fixed[1]} inputs; TTA needs one exported with --dynamic")
        if fixed and self.mode == "slide" and tuple(self.crop) != tuple(fixed):
            raise SemsegError(f"this ONNX model only takes {fixed[0]}x{fixed[1]} inputs; use --crop {fixed[0]} {fixed[1]}")

    def _setup_compute(self, model: Any, precision: str, device: str) -> None:
        if isinstance(model, nn.Module):
            self.device = resolve_device(device)
            self.precision = resolve_precision(precision, self.device)
            # channels_last speeds up oneDNN/cuDNN convolutions but sums in another order:
            # the explicit fp32 setting keeps the default layout to match the plain recipe bit for bit.
            self.channels_last = precision != "fp32"
            model.eval().to(self.device)
            model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        else:  # a callable such as an ONNX Runtime session: it runs its own fp32 graph
            if precision not in ("auto", "fp32"):
                raise SemsegError(f"precision {precision!r} applies to PyTorch models only; an ONNX model runs as exported")
            self.device, self.precision, self.channels_last = torch.device("cpu"), "fp32", False

    # -------------------------------------------------------------- compute
    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[N, C, h, w]`` (float32, on the device) for normalized images ``[N, 3, h, w]``."""
        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.precision, self.device):
            return self.model(images).float()

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 ``[N, 3, h, w]`` -> normalized float32 on the device (uploaded as uint8: 4x less to copy)."""
        return normalize(images.to(self.device), self.mean, self.std)

    def _scores(self, images: Tensor) -> tuple[Tensor, bool]:
        """Scores ``[N, C, H, W]`` of uint8 ``images``, and whether they are logits (else probabilities)."""
        inputs = self.preprocess(images)
        if self.mode == "whole" and not self.tta:
            return predict_whole(self.forward, inputs, self.size), True
        if self.mode == "whole":
            probs = lambda x: self.forward(x).softmax(1)  # noqa: E731
        else:
            probs = lambda x: torch.stack([self._slide(image) for image in x])  # noqa: E731
        if self.tta:
            return tta(probs, inputs, self.scales, self.flip, self.size), False
        height, width = inputs.shape[-2:]  # slide at --size, then back
        return resize_back(probs(resize_images(inputs, self.size or (height, width))), (height, width)), False

    def _slide(self, image: Tensor) -> Tensor:
        return slide_window(self.forward, image, self.crop, self.stride, self.meta.num_classes, self.batch_size, self.blend)

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        confidence: bool = False,
        probs: bool | Callable[[tuple[int, int, int]], np.ndarray] = False,
    ) -> list[Prediction]:
        """Predict uint8 ``[H, W, 3]`` images (batched when they share a size).

        ``probs``: True for in-memory probabilities, or a function giving the
        ``[C, H, W]`` float32 array to fill (e.g. a ``.npy`` memory map).
        """
        if self.mode == "slide" and not self.tta and self.size is None:
            return [self._predict_bands(image, confidence, probs) for image in images]
        results = []
        for group in same_size_groups(images, self.batch_size):
            scores, are_logits = self._scores(torch.stack([to_chw(image) for image in group]))
            for score in scores:
                sink = _Sink(score.shape[0], score.shape[1:], confidence, probs)
                sink.write(0, score, are_logits)
                results.append(sink.result())
        return results

    def _predict_bands(self, image: np.ndarray, confidence: bool, probs: Any) -> Prediction:
        """Slide mode at full resolution: row bands go straight into the outputs (bounded memory)."""
        chw = to_chw(image)
        sink = None
        bands = slide_window_bands(
            self.forward, chw, self.crop, self.stride, self.meta.num_classes, self.batch_size, self.blend, self.preprocess
        )
        for top, band in bands:
            sink = sink or _Sink(band.shape[0], chw.shape[1:], confidence, probs)
            sink.write(top, band, False)
        return sink.result()

    def predict(self, image: ImageLike, confidence: bool = False, probs: bool = False) -> Prediction:
        """Labels (and on request confidence and probabilities) of one image at its original size."""
        return self.predict_batch([load_rgb(image)], confidence, probs)[0]

    def __call__(self, image: ImageLike) -> np.ndarray:
        """Label map ``[H, W]`` at the original size (uint8 for up to 256 classes, else int32)."""
        return self.predict(image).labels

    def predict_proba(self, image: ImageLike) -> np.ndarray:
        """Softmax probabilities, float32 ``[C, H, W]`` at the original size."""
        return self.predict(image, probs=True).probs


def same_size_groups(images: Sequence[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive images of one size, at most ``batch_size`` at a time (order kept)."""
    group: list[np.ndarray] = []
    for image in images:
        if group and (image.shape != group[0].shape or len(group) == batch_size):
            yield group
            group = []
        group.append(image)
    if group:
        yield group


class _Sink:
    """Fills an image's outputs from score bands ``[C, h, W]`` (logits or probabilities)."""

    def __init__(self, channels: int, size: Sequence[int], confidence: bool, probs: Any) -> None:
        height, width = int(size[0]), int(size[1])
        self.labels = np.empty((height, width), np.uint8 if channels <= 256 else np.int32)
        self.confidence = np.empty((height, width), np.float32) if confidence else None
        if callable(probs):
            self.probs = probs((channels, height, width))
        else:
            self.probs = np.empty((channels, height, width), np.float32) if probs else None

    def write(self, top: int, scores: Tensor, are_logits: bool) -> None:
        rows = slice(top, top + scores.shape[1])
        # max(0) gives argmax's indices (the first of equal values) ~2x faster than argmax(0) on CPU;
        # taken on the logits themselves, as the plain recipe does (softmax can round two apart into a tie)
        best, labels = scores.max(0)
        self.labels[rows] = labels.cpu().numpy()
        if self.confidence is None and self.probs is None:
            return
        probs = scores.softmax(0) if are_logits else scores
        if self.confidence is not None:
            self.confidence[rows] = (probs.amax(0) if are_logits else best).cpu().numpy()
        if self.probs is not None:
            self.probs[:, rows] = probs.cpu().numpy()

    def result(self) -> Prediction:
        return Prediction(self.labels, self.confidence, self.probs)


# ------------------------------------------------------------------ semseg predict
def resolve_sources(sources: Sequence[str]) -> list[Path]:
    """Image files named by ``sources``: files, folders (their images) and glob patterns, in order."""
    from semseg.io import IMAGE_EXTENSIONS, list_images

    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise SemsegError(f"{source}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif path.is_file():
            found = [path]
        elif any(char in source for char in "*?["):
            found = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise SemsegError(f"{source}: no image matches this pattern")
        else:
            raise SemsegError(f"{source}: no such file or folder")
        files += [f for f in found if f not in files]
    stems: dict[str, Path] = {}
    for file in files:
        if stems.setdefault(file.stem, file) != file:
            raise SemsegError(f"{stems[file.stem]} and {file} would both write {file.stem}.png; predict them into different --out folders")
    return files


class ImageFiles(torch.utils.data.Dataset):
    """Decodes images (in DataLoader workers); a file that cannot be read gives its error instead."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, read_image(self.paths[index]), None
        except SemsegError as exc:
            return index, None, str(exc)


def _keep(item: Any) -> Any:
    return item


def write_outputs(out_dir: Path, stem: str, rgb: np.ndarray, prediction: Prediction, palette: list[list[int]]) -> None:
    """``labels/<stem>.png`` (palette PNG, indices = ids), ``overlays/``, and ``confidence/`` when computed."""
    from semseg.io import encode_image_png, write_bytes_atomic, write_label_png
    from semseg.viz import overlay

    write_label_png(out_dir / "labels" / f"{stem}.png", prediction.labels, palette)
    write_bytes_atomic(out_dir / "overlays" / f"{stem}.png", encode_image_png(overlay(rgb, prediction.labels, palette)))
    if prediction.confidence is not None:
        confidence = np.rint(prediction.confidence * 255).astype(np.uint8)
        write_bytes_atomic(out_dir / "confidence" / f"{stem}.png", encode_image_png(confidence))


class _NpyFile:
    """A ``.npy`` memory map filled in place, renamed over ``path`` once complete (never half-written)."""

    def __init__(self, path: Path) -> None:
        self.path, self.array = path, None
        self.tmp = path.with_name(f".{path.name}.tmp")

    def __call__(self, shape: tuple[int, int, int]) -> np.ndarray:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32, shape=shape)
        return self.array

    def commit(self) -> None:
        self.array.flush()
        self.array = None
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    out_dir: str | os.PathLike,
    confidence: bool = False,
    probs: bool = False,
    workers: int = 1,
) -> list[Path]:
    """Predict every file into ``out_dir``; returns the files that could not be read (reported, skipped)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    loader = torch.utils.data.DataLoader(
        ImageFiles(files), batch_size=None, collate_fn=_keep, num_workers=min(workers, max(len(files) - 1, 0))
    )
    failed: list[Path] = []
    pending: list[tuple[Path, np.ndarray]] = []
    # probabilities go one image at a time, straight into their .npy memory map
    batch_size = 1 if probs else predictor.batch_size
    with tqdm(total=len(files), unit="img", disable=not sys.stderr.isatty()) as bar:
        for index, rgb, error in loader:
            if error is not None:
                tqdm.write(f"semseg: skipped {error}", file=sys.stderr)
                failed.append(files[index])
                bar.update(1)
                continue
            if pending and (rgb.shape != pending[0][1].shape or len(pending) == batch_size):
                _predict_pending(predictor, pending, out_dir, confidence, probs, bar)
            pending.append((files[index], rgb))
        _predict_pending(predictor, pending, out_dir, confidence, probs, bar)
    return failed


def _predict_pending(
    predictor: Predictor, pending: list[tuple[Path, np.ndarray]], out_dir: Path, confidence: bool, probs: bool, bar: Any
) -> None:
    if not pending:
        return
    npy = _NpyFile(out_dir / "probs" / f"{pending[0][0].stem}.npy") if probs else None
    try:
        predictions = predictor.predict_batch([rgb for _, rgb in pending], confidence, npy or False)
    except BaseException:
        if npy is not None:
            npy.discard()
        raise
    if npy is not None:
        npy.commit()
    for (path, rgb), prediction in zip(pending, predictions):
        write_outputs(out_dir, path.stem, rgb, prediction, predictor.palette)
    bar.update(len(pending))
    pending.clear()


def describe_tta(predictor: Predictor, asked: bool | None) -> str:
    """How the images were predicted, and why: "no TTA", or the scales and whose choice they were."""
    if not predictor.tta:
        return "no TTA"
    views = ", ".join(f"{s:g}" for s in predictor.scales) + (" + flip" if predictor.flip else "")
    return f"TTA at scales {views}" + (" (the model's recommendation; --no-tta to turn it off)" if asked is None else "")


def run_predict(args: Any) -> int:
    """``semseg predict SOURCE... --out DIR``; returns 1 when some image could not be read, else 0."""
    files = resolve_sources(args.sources)
    if args.onnx is not None:
        if args.checkpoint or args.model:
            raise SemsegError("--onnx FILE runs an exported model; it does not combine with --checkpoint or --model")
        from semseg.export import OnnxModel

        model: Any = OnnxModel(args.onnx, device=args.device)
    else:
        model = load_torch_model(args.checkpoint, args.model, args.weights, args.num_classes)
    predictor = Predictor(
        model,
        mode=args.mode,
        size=args.size,
        crop=args.crop,
        stride=args.stride,
        blend=args.blend,
        tta=args.tta,
        scales=args.scales,
        flip=not args.no_flip,
        precision=args.precision,
        device=args.device,
        batch_size=args.batch_size,
    )
    failed = predict_files(predictor, files, args.out, args.confidence, args.probs, args.workers)
    done = len(files) - len(failed)
    print(f"predicted {done} of {len(files)} images into {args.out} ({args.mode} mode, {predictor.precision}, "
          f"{describe_tta(predictor, args.tta)})")
    if failed:
        print(f"semseg: {len(failed)} image(s) could not be read: {', '.join(str(f) for f in failed)}", file=sys.stderr)
        return 1
    return 0

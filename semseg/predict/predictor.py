"""The Predictor: a model (torch or an exported session) and one of the prediction modes, image in, labels out.

It reads an image, normalizes it with the model's mean and std, runs one of
the modes below and returns a label map at the image's original size.

- ``whole``: the image at its size (or resized to ``size``); the model pads to
  its stride and crops back. Logits are resized back bilinearly before the
  argmax, never the class ids.
- ``slide``: overlapping ``crop`` tiles every ``stride`` pixels, run in batches,
  their softmax probabilities blended (:mod:`semseg.predict.tiling`); bounded
  memory, so a 6000x8000 image fits in well under 2 GiB.
- ``tta``: any of the two at several scales and mirrored, softmax probabilities
  averaged.

A graph exported for one size (``fixed_input_size``) runs at the image's
native resolution: in whole mode it slides tiles of its size over the image,
each zero-padded to that size where the image is smaller; it never resizes the
image unless ``size`` asks for it.

Memory plan. Whole mode, ``size`` and TTA hold score maps ``[C, H, W]`` of the
whole image and run the model on the whole (resized) image, so their memory
grows with the image and the model. An image larger than ``max_whole_pixels``
(:data:`WHOLE_MAX_PIXELS`, 8.4 MP), or whose largest model input (the image or
``size``, times the largest TTA scale squared) is larger, is predicted in slide
mode at full resolution instead, without TTA: bands, bounded memory
(:meth:`Predictor.needs_slide` says when and why; ``semseg predict`` logs it).

``precision="fp32"`` is the plain recipe (PIL, ToTensor, Normalize, model,
argmax) to the last bit; ``auto`` adds channels_last and, where the hardware
computes bf16 natively, bf16 autocast.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.meta import ModelMeta, check_tta_scales
from semseg.predict.functional import (
    DEFAULT_TTA_SCALES, ModelFn, Size, as_size, predict_whole, resize_back, resize_images, run_padded, tta,
)
from semseg.predict.conversion import resolve_backend
from semseg.predict.images import ImageLike, load_rgb, normalize, to_chw
from semseg.predict.prediction import (
    WHOLE_MAX_PIXELS, Prediction, check_batch_size, check_mean_std, label_dtype, output_palette, tta_on,
)
from semseg.predict.tiling import BLENDS, check_window, slide_window, slide_window_bands
from semseg.runtime.precision import autocast, resolve_device, resolve_precision

MODES = ("whole", "slide")
# tiles of that automatic slide mode when the predictor has none (--crop) and the model names no input size
AUTO_SLIDE_CROP = (512, 512)


def default_batch_size(device: torch.device) -> int:
    """Images (whole mode) or tiles (slide mode) per forward pass when the user names none.

    One on the CPU, where one frame's activations already fill the caches and the
    cores, so that batches of frames ran no faster per frame (BENCHMARKS.md,
    "Prediction"). Four on an accelerator, which needs the parallel work.
    """
    return 1 if device.type == "cpu" else 4


class Predictor:
    """Predict label maps at the original image size.

    >>> predictor = Predictor.from_checkpoint("runs/camvid/best.pt", mode="slide", crop=(512, 512))
    >>> labels = predictor("street.png")           # np.ndarray [H, W]
    >>> probs = predictor.predict_proba("street.png")  # float32 [C, H, W]

    ``model``: a semseg model (or any ``nn.Module`` or callable giving logits
    ``[N, C, h, w]`` for ``[N, 3, h, w]``, such as :class:`semseg.runtime.OnnxModel`).
    ``mean``/``std`` default to the model's ``pretrained_cfg`` (ImageNet's without one).
    ``precision``: ``auto`` (channels_last, plus bf16 autocast where bf16 is
    native), ``fp32`` (the plain recipe, bit for bit), ``bf16``.
    ``backend``: ``torch``, ``onnxruntime`` or ``openvino`` (the model converted,
    cached by its weights' hash) or ``auto`` (the fastest of those whose labels
    equal PyTorch fp32's on 99.9% of pixels; see :mod:`semseg.predict.backends`);
    None runs ``model`` as given. ``self.backend`` says which runs.
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
        backend: str | None = None,
        max_whole_pixels: int = WHOLE_MAX_PIXELS,
    ) -> None:
        if backend is not None:
            model, self.backend = resolve_backend(model, backend, precision, device)
        else:
            self.backend = "torch" if isinstance(model, nn.Module) else getattr(model, "backend", "onnxruntime")
        self.meta = ModelMeta.of(model)
        # without a known class count, colour every id a uint8 label map can hold
        self.palette = output_palette(self.meta)
        self.mean = list(mean if mean is not None else self.meta.mean)
        self.std = list(std if std is not None else self.meta.std)
        check_mean_std(self.mean, self.std)
        if mode not in MODES:
            raise SemsegError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if blend not in BLENDS:
            raise SemsegError(f"unknown blend {blend!r}; use one of {', '.join(BLENDS)}")
        check_batch_size(batch_size)
        if max_whole_pixels < 1:
            raise SemsegError(f"max_whole_pixels must be at least 1, got {max_whole_pixels}")
        self.max_whole_pixels = max_whole_pixels
        self.mode, self.blend = mode, blend
        self.size = as_size(size, "size")
        recommended = self.meta.tta_scales
        tta = tta_on(tta, model)
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
        # imported here: the model zoo (torchvision, smp, timm) takes seconds to import, and
        # prediction through an exported session never needs it
        from semseg.models.factory import load_model

        return cls(load_model(path), **kwargs)

    def _setup_window(self, crop: Size | None, stride: Size | None, model: Any) -> None:
        fixed = getattr(model, "fixed_input_size", None)  # an ONNX graph exported for one size
        self.fixed = as_size(fixed, "the model's fixed input size")
        self.crop = as_size(crop, "crop")
        self.stride = as_size(stride, "stride")
        # a fixed-size graph runs at the image's native resolution: in tiles of its size, each padded to
        # it where the image is smaller; resizing the image would change the labels (it did on 10-30% of pixels)
        self.windowed = self.mode == "slide" or (self.fixed is not None and self.size is None)
        if self.windowed:
            self.crop = self.crop or self.fixed or self.meta.input_size
            if self.crop is None:
                raise SemsegError("slide mode needs a crop size (--crop H W); the model names no input size")
            self.stride = self.stride or tuple(c - c // 3 for c in self.crop)
            check_window(self.crop, self.stride)
        if self.fixed is not None:
            height, width = self.fixed
            if self.tta:
                raise SemsegError(f"this ONNX model only takes {height}x{width} inputs; TTA needs one exported with --dynamic")
            if self.size is not None and self.size != self.fixed:
                raise SemsegError(f"this ONNX model only takes {height}x{width} inputs; use --size {height} {width}, "
                                  "or leave --size out to predict at native resolution")
            if self.windowed and (self.crop[0] > height or self.crop[1] > width):
                raise SemsegError(f"this ONNX model only takes {height}x{width} inputs; use a --crop of at most {height} {width}")
        # the tiles of the slide mode that images too large for whole-image prediction go through
        self.slide_crop = self.crop or self.fixed or self.meta.input_size or AUTO_SLIDE_CROP
        self.slide_stride = (self.crop and self.stride) or tuple(c - c // 3 for c in self.slide_crop)
        check_window(self.slide_crop, self.slide_stride)

    @property
    def _bands(self) -> bool:
        """Whether the chosen mode is slide mode's bounded bands (windowed, at full resolution, no TTA)."""
        return self.windowed and not self.tta and self.size is None

    def needs_slide(self, shape: Sequence[int]) -> str | None:
        """Why an image of ``shape`` (H, W, ...) goes through slide mode's bands instead of the chosen mode, or None.

        Whole mode, ``size`` and TTA hold ``[C, H, W]`` score maps and run the
        model on the whole (resized) image; above ``max_whole_pixels`` in the
        image or in the model's largest input, the bands keep memory bounded.
        """
        height, width = int(shape[0]), int(shape[1])
        if self._bands:
            return None
        model_h, model_w = self.size or (height, width)
        largest = model_h * model_w * (max(self.scales) ** 2 if self.tta else 1.0)
        limit = self.max_whole_pixels
        if height * width <= limit and largest <= limit:
            return None
        dropped = [what for what, used in (("TTA", self.tta), ("the size setting", self.size is not None)) if used]
        crop = f"{self.slide_crop[0]}x{self.slide_crop[1]}"
        return (
            f"{width}x{height} image is above the {limit / 1e6:.1f} MP that whole-image prediction handles: "
            f"predicted in slide mode with {crop} tiles" + (f", without {' and '.join(dropped)}" if dropped else "")
        )

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
            if self.fixed is not None:
                return run_padded(self.model, images, self.fixed).float()
            return self.model(images).float()

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 ``[N, 3, h, w]`` -> normalized float32 on the device (uploaded as uint8: 4x less to copy)."""
        return normalize(images.to(self.device), self.mean, self.std)

    def _scores(self, images: Tensor) -> tuple[Tensor, bool]:
        """Scores ``[N, C, H, W]`` of uint8 ``images``, and whether they are logits (else probabilities)."""
        inputs = self.preprocess(images)
        if not self.windowed and not self.tta:
            return predict_whole(self.forward, inputs, self.size), True
        if self.windowed:
            probs = lambda x: torch.stack([self._slide(image) for image in x])  # noqa: E731
        else:
            probs = lambda x: self.forward(x).softmax(1)  # noqa: E731
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
        results: list[Prediction] = []
        whole: list[tuple[int, np.ndarray]] = []
        for index, image in enumerate(images):
            if self._bands or self.needs_slide(image.shape):
                results.append(self._predict_bands(image, confidence, probs))
            else:
                results.append(None)  # type: ignore[arg-type]  # filled below
                whole.append((index, image))
        for group in same_size_groups(whole, self.batch_size):
            scores, are_logits = self._scores(torch.stack([to_chw(image) for _, image in group]))
            for (index, _), score in zip(group, scores):
                sink = _Sink(score.shape[0], score.shape[1:], confidence, probs)
                sink.write(0, score, are_logits)
                results[index] = sink.result()
        return results

    def _predict_bands(self, image: np.ndarray, confidence: bool, probs: Any) -> Prediction:
        """Slide mode at full resolution: row bands go straight into the outputs (bounded memory)."""
        chw = to_chw(image)
        sink = None
        bands = slide_window_bands(
            self.forward, chw, self.slide_crop, self.slide_stride, self.meta.num_classes, self.batch_size, self.blend,
            self.preprocess,
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


def same_size_groups(
    images: Sequence[tuple[int, np.ndarray]], batch_size: int
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Consecutive (index, image) pairs of one image size, at most ``batch_size`` at a time (order kept)."""
    group: list[tuple[int, np.ndarray]] = []
    for image in images:
        if group and (image[1].shape != group[0][1].shape or len(group) == batch_size):
            yield group
            group = []
        group.append(image)
    if group:
        yield group


class _Sink:
    """Fills an image's outputs from score bands ``[C, h, W]`` (logits or probabilities)."""

    def __init__(self, channels: int, size: Sequence[int], confidence: bool, probs: Any) -> None:
        height, width = int(size[0]), int(size[1])
        self.labels = np.empty((height, width), label_dtype(channels))
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

"""Sliding-window prediction: overlapping tiles, blended, finished row band by row band.

Tiles of ``crop`` pixels every ``stride`` pixels cover the image; their softmax
probabilities are blended with uniform or Gaussian weights. Rows are finished
band by band, so memory grows with ``C * crop_h * W``, not with ``C * H * W``.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from semseg.errors import SemsegError
from semseg.predict.functional import ModelFn, Size, as_size

BLENDS = ("uniform", "gaussian")


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
    check_window(crop, stride)
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


def _check_classes(channels: int, num_classes: int | None) -> int:
    if num_classes is not None and channels != num_classes:
        raise SemsegError(f"the model gives {channels} output channels but {num_classes} classes were expected")
    return channels


def check_window(crop: Size, stride: Size) -> None:
    """SemsegError unless ``crop`` and ``stride`` are positive pairs with ``stride <= crop`` (no gaps)."""
    crop, stride = as_size(crop, "crop"), as_size(stride, "stride")
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise SemsegError(f"stride {stride} is larger than crop {crop}: tiles would leave gaps; use stride <= crop")

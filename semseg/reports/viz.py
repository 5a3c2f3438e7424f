"""Pictures of label maps: palettes, colorize, overlays, a legend, and the image | truth | prediction panel.

All functions take and return uint8 numpy arrays (``[H, W, 3]`` RGB), so their
results go straight to :func:`semseg.io.encode_image_png`. Large images are
blended in row bands to keep memory near the size of the output.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semseg.data.formats import default_palette
from semseg.errors import SemsegError

Palette = Sequence[Sequence[int]]
BAND_ROWS = 512  # rows blended at a time by overlay()


def generate_palette(n: int) -> list[list[int]]:
    """``n`` distinct RGB colours (Pascal VOC's colour map: the first 21 are VOC's class colours)."""
    if n < 0:
        raise SemsegError(f"a palette needs a non-negative number of colours, got {n}")
    return default_palette(n)


def _lookup_table(labels: np.ndarray, palette: Palette, ignore_index: int | None, ignore_color: Sequence[int]) -> np.ndarray:
    """uint8 ``[K, 3]`` colour per id for every id in ``labels``; unknown ids are an error."""
    table = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if table.size and (table.min() < 0 or table.max() > 255):
        raise SemsegError("palette colours must be RGB triples in 0..255")
    top = int(labels.max()) if labels.size else 0
    if labels.size and labels.min() < 0:
        raise SemsegError(f"label map holds negative id {int(labels.min())}")
    size = max(top + 1, len(table), (ignore_index + 1) if ignore_index is not None and ignore_index >= 0 else 0)
    lut = np.zeros((size, 3), np.uint8)
    lut[: len(table)] = table
    unknown = np.setdiff1d(np.unique(labels), np.arange(len(table)))
    if ignore_index is not None:
        unknown = unknown[unknown != ignore_index]
        if ignore_index >= 0:
            lut[ignore_index] = ignore_color
    if unknown.size:
        raise SemsegError(f"label ids {unknown[:10].tolist()} have no colour: the palette has {len(table)} colours")
    return lut


def colorize(
    labels: np.ndarray, palette: Palette, ignore_index: int | None = 255, ignore_color: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """Colour label map ``[H, W]`` -> uint8 ``[H, W, 3]``; ``ignore_index`` pixels get ``ignore_color``."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise SemsegError(f"a label map must be 2-D [H, W], got shape {list(labels.shape)}")
    return _lookup_table(labels, palette, ignore_index, ignore_color)[labels]


def overlay(
    image: np.ndarray, labels: np.ndarray, palette: Palette, alpha: float = 0.5, ignore_index: int | None = 255
) -> np.ndarray:
    """Blend class colours over ``image [H, W, 3]``: ``(1 - alpha) * image + alpha * colour``.

    ``ignore_index`` pixels keep the image. Blended in bands of rows in 16-bit
    integers, so a 48-megapixel overlay costs little more than its output.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SemsegError(f"overlay needs a uint8 [H, W, 3] image, got {image.dtype} {list(image.shape)}")
    if labels.shape != image.shape[:2]:
        raise SemsegError(f"label map {list(labels.shape)} and image {list(image.shape[:2])} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise SemsegError(f"alpha must lie in [0, 1], got {alpha}")
    lut = _lookup_table(labels, palette, ignore_index, (0, 0, 0)).astype(np.uint16)
    weight = np.uint16(round(alpha * 256))
    out = np.empty_like(image)
    for top in range(0, image.shape[0], BAND_ROWS):
        rows = slice(top, top + BAND_ROWS)
        band, ids = image[rows].astype(np.uint16), labels[rows]
        blended = (band * (256 - weight) + lut[ids] * weight + 128) >> 8
        if ignore_index is not None:
            keep = ids == ignore_index
            blended[keep] = band[keep]
        out[rows] = blended
    return out


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def legend(class_names: Sequence[str], palette: Palette, swatch: int = 16, columns: int = 1) -> np.ndarray:
    """A uint8 ``[h, w, 3]`` picture listing each class's colour swatch and name (white background)."""
    if len(palette) < len(class_names):
        raise SemsegError(f"{len(class_names)} class names but only {len(palette)} palette colours")
    font, pad = _font(), 4
    rows = max(1, -(-len(class_names) // columns))
    text_w = max([int(font.getlength(str(name))) for name in class_names] + [1])
    cell_w, cell_h = swatch + 2 * pad + text_w + 2 * pad, swatch + pad
    canvas = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(class_names):
        x, y = pad + (i // rows) * cell_w, pad + (i % rows) * cell_h
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(c) for c in palette[i]), outline="black")
        draw.text((x + swatch + pad, y + swatch // 2), str(name), fill="black", font=font, anchor="lm")
    return np.asarray(canvas)


def with_legend(picture: np.ndarray, class_names: Sequence[str], palette: Palette, labels: np.ndarray | None = None) -> np.ndarray:
    """``picture`` (uint8 [H, W, 3], e.g. an overlay) with a legend to its right: the classes present in
    ``labels`` (all of ``class_names`` without it), in class order."""
    shown = range(len(class_names)) if labels is None else [int(c) for c in np.unique(labels) if 0 <= c < len(class_names)]
    key = legend([class_names[c] for c in shown], [palette[c] for c in shown], columns=1 + (len(shown) > 16))
    height = max(picture.shape[0], key.shape[0])
    canvas = np.full((height, picture.shape[1] + key.shape[1], 3), 255, np.uint8)
    canvas[: picture.shape[0], : picture.shape[1]] = picture
    canvas[: key.shape[0], picture.shape[1]:] = key
    return canvas


def _titled(picture: np.ndarray, title: str, height: int = 20) -> np.ndarray:
    canvas = Image.new("RGB", (picture.shape[1], picture.shape[0] + height), "white")
    canvas.paste(Image.fromarray(picture), (0, height))
    ImageDraw.Draw(canvas).text((4, height // 2), title, fill="black", font=_font(), anchor="lm")
    return np.asarray(canvas)


def panel(
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    palette: Palette,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Image | ground truth | prediction side by side, with a legend of the classes present below.

    ``image`` uint8 ``[H, W, 3]``; ``truth`` and ``prediction`` ``[H, W]`` ids.
    Ignored truth pixels are black. Returns uint8 ``[h, w, 3]``.
    """
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    if not (truth.shape == prediction.shape == np.asarray(image).shape[:2]):
        raise SemsegError(
            f"panel needs image, truth and prediction of one size, got {list(np.asarray(image).shape[:2])}, "
            f"{list(truth.shape)} and {list(prediction.shape)}"
        )
    gap = np.full((image.shape[0] + 20, 4, 3), 255, np.uint8)
    row = np.concatenate(
        [
            _titled(np.asarray(image, np.uint8), "image"),
            gap,
            _titled(colorize(truth, palette, ignore_index), "ground truth"),
            gap,
            _titled(colorize(prediction, palette, ignore_index), "prediction"),
        ],
        axis=1,
    )
    present = sorted((set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist())) - {ignore_index})
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(max(present, default=-1) + 1)]
    shown = [i for i in present if i < len(names)]
    if not shown:
        return row
    key = legend([names[i] for i in shown], [palette[i] for i in shown], columns=max(1, -(-len(shown) // 8)))
    width = max(row.shape[1], key.shape[1])
    figure = np.full((row.shape[0] + key.shape[0], width, 3), 255, np.uint8)
    figure[: row.shape[0], : row.shape[1]] = row
    figure[row.shape[0] :, : key.shape[1]] = key
    return figure

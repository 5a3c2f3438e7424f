"""The validation gallery: which frames to show (a spread and the worst by IoU) and the picture of them.

Each row is image | ground truth | prediction | error map, scaled down to
``tile_width``; under the rows, a legend of the classes shown and of the error
map's colours. :class:`FramePicker` chooses the frames while an evaluation
streams through the dataset, keeping only the predictions it may show, so the
memory stays at ``2 * count`` label maps whatever the dataset's size.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from semseg.errors import SemsegError
from semseg.metrics import compute_scores
from semseg.reports.viz import _font, colorize, legend

Palette = Sequence[Sequence[int]]
CORRECT, WRONG, IGNORED = (225, 225, 225), (220, 20, 60), (0, 0, 0)
ERROR_KEY = {"correct": CORRECT, "wrong": WRONG, "ignored (void)": IGNORED}


def frame_iou(matrix: np.ndarray) -> float:
    """The mIoU of one frame's confusion matrix (classes in its ground truth or its prediction); NaN when empty."""
    return compute_scores(matrix)["miou"]


@dataclass
class Frame:
    """A frame chosen for the gallery: ``kind`` is "spread" or "worst"; ``prediction`` [H, W] class ids."""

    kind: str
    index: int
    iou: float
    prediction: np.ndarray


class FramePicker:
    """Choose ``count`` frames spread evenly over ``total`` and the ``count`` worst by frame IoU.

    Call :meth:`offer` for every evaluated frame, in any order; :meth:`frames`
    returns the spread (in dataset order) then the worst (worst first), without
    repeats (a spread frame that is also among the worst is shown once, as
    spread, and the next worst takes its place when there is one).
    """

    def __init__(self, total: int, count: int) -> None:
        if count < 0:
            raise SemsegError(f"the gallery needs a non-negative number of frames, got {count}")
        self.count = count
        shown = min(count, total)  # a set smaller than ``count``: every frame, once
        self.spread = [int(total * (k + 0.5) / shown) for k in range(shown)]
        self._spread_frames: dict[int, Frame] = {}
        self._worst: list[tuple[float, int, np.ndarray]] = []  # max-heap on IoU via negation: (-iou, -index, pred)

    def offer(self, index: int, iou: float, prediction: np.ndarray) -> None:
        """Consider frame ``index`` with frame IoU ``iou`` (NaN: nothing labelled, never among the worst)."""
        if not self.count:
            return
        if index in self.spread:
            self._spread_frames[index] = Frame("spread", index, iou, np.array(prediction, copy=True))
        if math.isnan(iou):
            return
        # the lowest IoUs, count + len(spread) of them: enough to fill the worst rows once spread frames are removed;
        # heap top = the highest IoU kept, replaced by any lower one (ties: the earlier frame)
        key = (-iou, -index)
        if len(self._worst) < self.count + len(self.spread):
            heapq.heappush(self._worst, (*key, np.array(prediction, copy=True)))
        elif key > self._worst[0][:2]:
            heapq.heapreplace(self._worst, (*key, np.array(prediction, copy=True)))

    def candidates(self) -> list[tuple[int, float, np.ndarray]]:
        """``(index, iou, prediction)`` of every frame kept so far: what another picker needs to :meth:`merge`
        this one's choice (under DDP each rank picks from its share and rank 0 merges them)."""
        kept = {frame.index: (frame.index, frame.iou, frame.prediction) for frame in self._spread_frames.values()}
        for neg_iou, neg_index, prediction in self._worst:
            kept.setdefault(-neg_index, (-neg_index, -neg_iou, prediction))
        return sorted(kept.values(), key=lambda item: item[0])

    def merge(self, candidates: list[tuple[int, float, np.ndarray]]) -> None:
        """Offer another picker's :meth:`candidates`: the frames chosen are those one picker offered every
        frame would choose."""
        for index, iou, prediction in candidates:
            self.offer(index, iou, prediction)

    def frames(self) -> list[Frame]:
        spread = [self._spread_frames[i] for i in self.spread if i in self._spread_frames]
        shown = {frame.index for frame in spread}
        ranked = sorted(self._worst, key=lambda item: (-item[0], -item[1]))  # lowest IoU first
        worst = [Frame("worst", -neg_index, -neg_iou, pred) for neg_iou, neg_index, pred in ranked
                 if -neg_index not in shown][: self.count]
        return spread + worst


def error_map(truth: np.ndarray, prediction: np.ndarray, ignore_index: int) -> np.ndarray:
    """uint8 [H, W, 3]: correct pixels light grey, wrong ones red, ignored ground truth black."""
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise SemsegError(f"error map needs truth and prediction of one size, got {list(truth.shape)} and {list(prediction.shape)}")
    out = np.empty(truth.shape + (3,), np.uint8)
    out[...] = WRONG
    out[truth == prediction] = CORRECT
    out[truth == ignore_index] = IGNORED
    return out


@dataclass
class GalleryRow:
    """One row: ``title`` (e.g. "worst 1: frame.png, IoU 31.2%"), the image (uint8 [H, W, 3], or None
    when only label maps are at hand, as in ``semseg score``), ground truth and prediction [H, W]."""

    title: str
    image: np.ndarray | None
    truth: np.ndarray
    prediction: np.ndarray


def _scaled(picture: np.ndarray, width: int, labels: bool) -> Image.Image:
    image = Image.fromarray(picture)
    if picture.shape[1] <= width:
        return image
    height = max(1, round(picture.shape[0] * width / picture.shape[1]))
    # label pictures keep their exact colours (nearest); photos are filtered (box: cheap and alias-free)
    return image.resize((width, height), Image.Resampling.NEAREST if labels else Image.Resampling.BOX)


def gallery(
    rows: Sequence[GalleryRow],
    class_names: Sequence[str],
    palette: Palette,
    ignore_index: int = 255,
    tile_width: int = 320,
) -> np.ndarray:
    """The gallery picture, uint8 [h, w, 3]: a column header, then per row its title and its tiles
    (image | ground truth | prediction | error map), then the legend of the classes shown and the error key."""
    if not rows:
        raise SemsegError("the gallery needs at least one frame")
    if len(palette) < len(class_names):
        raise SemsegError(f"{len(class_names)} class names but only {len(palette)} palette colours")
    font, gap, title_h = _font(13), 4, 18
    with_image = any(row.image is not None for row in rows)
    headers = (["image"] if with_image else []) + ["ground truth", "prediction", "error map"]
    strips, present = [], set()
    for row in rows:
        truth, prediction = np.asarray(row.truth), np.asarray(row.prediction)
        if truth.shape != prediction.shape or (row.image is not None and row.image.shape[:2] != truth.shape):
            raise SemsegError(f"gallery row {row.title!r}: image, truth and prediction differ in size")
        present |= set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist())
        tiles = [] if not with_image else [
            _scaled(row.image if row.image is not None else np.full(truth.shape + (3,), 255, np.uint8), tile_width, False)
        ]
        tiles += [
            _scaled(colorize(truth, palette, ignore_index), tile_width, True),
            _scaled(colorize(prediction, palette, ignore_index), tile_width, True),
            _scaled(error_map(truth, prediction, ignore_index), tile_width, True),
        ]
        strips.append((row.title, tiles))
    width = max(sum(t.width for t in tiles) + gap * (len(tiles) - 1) for _, tiles in strips)
    tile_w = max(t.width for _, tiles in strips for t in tiles)
    height = title_h + sum(title_h + max(t.height for t in tiles) + gap for _, tiles in strips)
    shown = [i for i in sorted(present - {ignore_index}) if i < len(class_names)]
    key = legend([class_names[i] for i in shown] + list(ERROR_KEY), [palette[i] for i in shown] + list(ERROR_KEY.values()),
                 columns=max(1, -(-(len(shown) + len(ERROR_KEY)) // 8)))
    canvas = Image.new("RGB", (max(width, key.shape[1]), height + key.shape[0]), "white")
    draw = ImageDraw.Draw(canvas)
    for k, header in enumerate(headers):
        draw.text((k * (tile_w + gap) + 2, title_h // 2), header, fill="black", font=font, anchor="lm")
    y = title_h
    for title, tiles in strips:
        draw.text((2, y + title_h // 2), title, fill="black", font=font, anchor="lm")
        y += title_h
        for k, tile in enumerate(tiles):
            canvas.paste(tile, (k * (tile_w + gap), y))
        y += max(t.height for t in tiles) + gap
    canvas.paste(Image.fromarray(key), (0, y))
    return np.asarray(canvas)

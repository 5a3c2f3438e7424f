"""Scoring folders of label PNGs: predictions matched to ground truths by name stem, counted file by file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from semseg.errors import SemsegError
from semseg.io import list_images, read_label_map, write_text_atomic
from semseg.metrics.boundary import BoundaryIoU
from semseg.metrics.confusion import ConfusionMatrix
from semseg.metrics.counting import LabelValueError
from semseg.metrics.reporting import check_class_names, report, report_json
from semseg.progress import Progress

log = logging.getLogger(__name__)


def _index_by_stem(folder: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in by_stem:
            raise SemsegError(f"{path}: same name stem as {by_stem[path.stem].name}; keep one of the two")
        by_stem[path.stem] = path
    return by_stem


def pair_label_files(pred_dir: str | Path, gt_dir: str | Path, allow_missing: bool = False) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) files matched by name stem, in ground-truth name order.

    A ground truth without a prediction is an error, or skipped with a logged warning
    when ``allow_missing``; predictions without a ground truth are left out
    with a logged warning (scoring a subset of predicted images is common).
    """
    gts, preds = _index_by_stem(Path(gt_dir)), _index_by_stem(Path(pred_dir))
    if not gts:
        raise SemsegError(f"{gt_dir}: no label images found")
    missing = [gts[stem] for stem in gts if stem not in preds]
    if missing and not allow_missing:
        raise SemsegError(
            f"{missing[0]}: ground truth has no prediction in {pred_dir} ({len(missing)} such files; "
            "allow_missing / --allow-missing skips them)"
        )
    extra = [preds[stem] for stem in preds if stem not in gts]
    pairs = [(preds[stem], gts[stem]) for stem in gts if stem in preds]
    if not pairs:
        raise SemsegError(f"{pred_dir}: no prediction matches a ground truth in {gt_dir}")
    if missing:
        log.warning("skipped %d ground truths without a prediction, e.g. %s", len(missing), missing[0])
    if extra:
        log.warning("%d predictions have no ground truth and are not scored, e.g. %s", len(extra), extra[0])
    return pairs


def score_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    allow_missing: bool = False,
    boundary: BoundaryIoU | None = None,
) -> ConfusionMatrix:
    """Accumulate label PNGs of ``pred_dir`` against those of ``gt_dir``, matched by name stem.

    Label maps are read as their values (8/16-bit; palette PNGs as indices).
    Every bad input raises :class:`SemsegError` naming the file. ``boundary``,
    when given, accumulates the same pairs.
    """
    cm = ConfusionMatrix(num_classes, ignore_index)
    pairs = pair_label_files(pred_dir, gt_dir, allow_missing)
    with Progress(len(pairs), "score", unit="img", logger=log) as bar:
        for pred_path, gt_path in pairs:
            _count_pair(cm, boundary, pred_path, gt_path)
            bar.update(1)
    return cm


def _count_pair(cm: ConfusionMatrix, boundary: BoundaryIoU | None, pred_path: Path, gt_path: Path) -> None:
    """Count one prediction against its ground truth; a bad file raises naming it."""
    pred, gt = read_label_map(pred_path), read_label_map(gt_path)
    if pred.shape != gt.shape:
        raise SemsegError(
            f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) but its ground truth "
            f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}"
        )
    try:
        cm.update(pred, gt)
    except LabelValueError as exc:
        raise SemsegError(f"{pred_path if exc.source == 'prediction' else gt_path}: {exc}") from None
    if boundary is not None:
        boundary.update(pred, gt)


def score(
    pred_dir: str | Path,
    gt_dir: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
    json_path: str | Path | None = None,
    allow_missing: bool = False,
    boundary_ratio: float | None = None,
) -> dict[str, Any]:
    """``semseg score``: the :func:`report` of the label PNGs of ``pred_dir`` against ``gt_dir``, also written to ``json_path``.

    ``boundary_ratio``: also boundary IoU, with ``d`` this fraction of each image's diagonal (0.02 in the paper).
    """
    names = check_class_names(class_names, num_classes)  # before reading any file
    boundary = BoundaryIoU(num_classes, ignore_index, boundary_ratio) if boundary_ratio is not None else None
    scores = report(score_folders(pred_dir, gt_dir, num_classes, ignore_index, allow_missing, boundary), names, boundary)
    if json_path is not None:
        write_text_atomic(json_path, report_json(scores))
    return scores

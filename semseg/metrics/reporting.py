"""The scores of a :class:`ConfusionMatrix` as a JSON-ready report, as JSON text, and as a printable table."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from semseg.errors import SemsegError
from semseg.metrics.boundary import BoundaryIoU
from semseg.metrics.confusion import ConfusionMatrix
from semseg.metrics.scores import CLASS_KEYS, MEAN_KEYS


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def default_class_names(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def check_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The names to report under: ``class_0``... when None; else exactly C unique names."""
    if class_names is None:
        return default_class_names(num_classes)
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise SemsegError(f"class names: got {len(names)} names for {num_classes} classes")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SemsegError(f"class names must be unique; repeated: {', '.join(duplicates)}")
    return names


def report(cm: ConfusionMatrix, class_names: Sequence[str] | None = None,
           boundary: BoundaryIoU | None = None) -> dict[str, Any]:
    """The JSON-ready scores of ``cm``: the means, ``num_images``, ``per_class`` and the matrix.

    Keys, in order: miou, mean_acc, mdice, pixel_acc, fwiou, num_images,
    per_class ({name: {iou, acc, precision, dice, gt_pixels, pred_pixels}} in
    class order), confusion_matrix (rows = ground truth). NaN becomes None.
    With ``boundary`` (counted over the same images), ``mboundary_iou`` and
    ``boundary_dilation_ratio`` follow ``fwiou`` and every class gets ``boundary_iou``.
    """
    names = check_class_names(class_names, cm.num_classes)
    scores = cm.compute()
    result: dict[str, Any] = {key: _json_float(scores[key]) for key in MEAN_KEYS}
    boundary_scores = boundary.compute() if boundary is not None else None
    if boundary_scores is not None:
        result["mboundary_iou"] = _json_float(boundary_scores["mboundary_iou"])
        result["boundary_dilation_ratio"] = boundary.dilation_ratio
    result["num_images"] = cm.num_images
    result["per_class"] = {
        name: {
            **{key: _json_float(scores[key][c]) for key in CLASS_KEYS},
            "gt_pixels": int(scores["gt_pixels"][c]),
            "pred_pixels": int(scores["pred_pixels"][c]),
            **({"boundary_iou": _json_float(boundary_scores["boundary_iou"][c])} if boundary_scores is not None else {}),
        }
        for c, name in enumerate(names)
    }
    result["confusion_matrix"] = cm.matrix.tolist()
    return result


def report_json(report: dict[str, Any]) -> str:
    """A :func:`report` dict as indented JSON, with one line per confusion-matrix row."""
    placeholder = '"confusion_matrix": "ROWS"'
    text = json.dumps({**report, "confusion_matrix": "ROWS"}, indent=2, allow_nan=False)
    rows = ",\n    ".join(json.dumps(row) for row in report["confusion_matrix"])
    return text.replace(placeholder, f'"confusion_matrix": [\n    {rows}\n  ]') + "\n"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# A class predicted on at least this many times its labelled pixels (or at most its inverse) is named under
# the table: how class weights that are too strong show on unseen images (CamVid's rare classes predicted on
# 3-5x their pixels) while their IoU alone looks merely low.
PIXEL_RATIO_FLAG = 2.0


def pixel_ratio(row: dict[str, Any]) -> float | None:
    """A per-class row's predicted pixels over its ground-truth pixels; None when it has no ground truth."""
    return row["pred_pixels"] / row["gt_pixels"] if row["gt_pixels"] else None


def pixel_ratio_flagged(ratio: float | None) -> bool:
    """Whether a :func:`pixel_ratio` is at least :data:`PIXEL_RATIO_FLAG` or at most its inverse."""
    return ratio is not None and (ratio >= PIXEL_RATIO_FLAG or ratio <= 1 / PIXEL_RATIO_FLAG)


def pixel_ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def pixel_ratio_flags(ratios: dict[str, float | None]) -> list[str]:
    """Lines naming the classes predicted on >= PIXEL_RATIO_FLAG times (or <= its inverse) their GT pixels,
    ``ratios`` mapping class names to :func:`pixel_ratio`; no line when none is flagged."""
    flagged = {name: r for name, r in ratios.items() if pixel_ratio_flagged(r)}
    over = [f"{name} {pixel_ratio_text(r)}" for name, r in flagged.items() if r >= PIXEL_RATIO_FLAG]
    under = [f"{name} {pixel_ratio_text(r)}" for name, r in flagged.items() if r < PIXEL_RATIO_FLAG]
    lines = []
    if over:
        lines.append(f"over-predicted (pred/GT pixels >= {PIXEL_RATIO_FLAG:g}x): {', '.join(over)}")
    if under:
        lines.append(f"under-predicted (pred/GT pixels <= {1 / PIXEL_RATIO_FLAG:g}x): {', '.join(under)}")
    return lines


def format_report(report: dict[str, Any]) -> str:
    """A per-class table (percentages, 2 decimals; pixel counts and their ratio) followed by the means.

    Classes predicted on at least :data:`PIXEL_RATIO_FLAG` times their ground-truth pixels, or at most its
    inverse, are named under the table.
    """
    per_class = report["per_class"]
    ratios = {name: pixel_ratio(row) for name, row in per_class.items()}
    keys = CLASS_KEYS + (("boundary_iou",) if "mboundary_iou" in report else ())
    titles = {"iou": "IoU", "acc": "acc", "precision": "prec", "dice": "dice", "boundary_iou": "bIoU"}
    width = max([len("class"), *(len(name) for name in per_class)])
    columns = " ".join(f"{titles[key]:>7}" for key in keys)
    header = f"{'class':<{width}}  {columns}  {'GT pixels':>13} {'pred pixels':>13} {'pred/GT':>8}"
    lines = [header, "-" * len(header)]
    for name, row in per_class.items():
        scores = " ".join(f"{_percent(row[key]):>7}" for key in keys)
        lines.append(f"{name:<{width}}  {scores}  {row['gt_pixels']:>13,} {row['pred_pixels']:>13,} "
                     f"{pixel_ratio_text(ratios[name]):>8}")
    lines.append("-" * len(header))
    lines.extend(pixel_ratio_flags(ratios))
    if any(row[key] is None for row in per_class.values() for key in keys):
        lines.append("-: undefined (the class has no ground-truth pixels, or no pixels at all); left out of the means")
    boundary = ""
    if "mboundary_iou" in report:
        boundary = f"mBoundaryIoU {_percent(report['mboundary_iou'])} (d = {report['boundary_dilation_ratio']:g} x diagonal)   "
    lines.append(
        f"mIoU {_percent(report['miou'])}   mean acc {_percent(report['mean_acc'])}   "
        f"mDice {_percent(report['mdice'])}   pixel acc {_percent(report['pixel_acc'])}   "
        f"fwIoU {_percent(report['fwiou'])}   {boundary}({_plural(report['num_images'], 'image')})"
    )
    return "\n".join(lines)

"""Scores of a confusion matrix: pure functions of the counts (docs/metrics.md states the contract)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MEAN_KEYS = ("miou", "mean_acc", "mdice", "pixel_acc", "fwiou")
CLASS_KEYS = ("iou", "acc", "precision", "dice")
# a prediction in which one class holds at least this share of the pixels has collapsed (collapse_warning)
COLLAPSE_SHARE = 0.99


def compute_scores(matrix: np.ndarray) -> dict[str, Any]:
    """Scores of a confusion matrix int [C, C] (rows = ground truth).

    Returns the means ``miou, mean_acc, mdice, pixel_acc, fwiou`` (floats in
    0..1, NaN when nothing defines them), per-class float64 [C] arrays ``iou,
    acc, precision, dice`` (NaN where the denominator is 0) and int64 [C]
    arrays ``gt_pixels, pred_pixels``.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(counts)
    gt, predicted = counts.sum(axis=1), counts.sum(axis=0)
    total = int(gt.sum())
    iou = _ratio(tp, gt + predicted - tp)
    fwiou = float(np.sum(gt[gt > 0] * iou[gt > 0]) / total) if total else math.nan
    return {
        "miou": _mean(iou),
        "mean_acc": _mean(_ratio(tp, gt)),
        "mdice": _mean(_ratio(2 * tp, gt + predicted)),
        "pixel_acc": float(tp.sum() / total) if total else math.nan,
        "fwiou": fwiou,
        "iou": iou,
        "acc": _ratio(tp, gt),
        "precision": _ratio(tp, predicted),
        "dice": _ratio(2 * tp, gt + predicted),
        "gt_pixels": gt,
        "pred_pixels": predicted,
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _mean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def collapse_warning(
    pred_pixels: np.ndarray, class_names: Sequence[str], gt_pixels: np.ndarray | None = None, what: str = "images"
) -> str | None:
    """A warning when one class holds at least ``COLLAPSE_SHARE`` of the predicted pixels, else None.

    A model that predicts a single class everywhere (too little training, BatchNorm
    statistics that lag, wrong normalization or weights) still gets a pixel accuracy
    equal to that class's share, which can look plausible. ``pred_pixels`` counts
    predictions per class (int [C]); with ``gt_pixels`` (the truth's counts) the
    warning is given only where the truth has more than one class itself.
    """
    predicted = np.asarray(pred_pixels, dtype=np.int64)
    total = int(predicted.sum())
    if total == 0:
        return None
    top = int(predicted.argmax())
    share = predicted[top] / total
    if share < COLLAPSE_SHARE:
        return None
    if gt_pixels is not None:
        truth = np.asarray(gt_pixels, dtype=np.int64)
        if truth.sum() == 0 or truth.max() / truth.sum() >= COLLAPSE_SHARE:
            return None
    name = class_names[top] if top < len(class_names) else f"class {top}"
    return (f"the model predicted {name!r} on {100 * share:.1f}% of the pixels of the {what}: its prediction has "
            "collapsed to one class (too little training, wrong weights or a wrong input normalization)")

"""Scores of a confusion matrix: pure functions of the counts (docs/metrics.md states the contract)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MEAN_KEYS = ("miou", "mean_acc", "mdice", "pixel_acc", "fwiou")
CLASS_KEYS = ("iou", "acc", "precision", "dice")


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

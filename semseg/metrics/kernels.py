"""Compiled loops that count (target, prediction) pixel pairs of flat CPU label maps.

Why written by hand (with numba): torch has no confusion-count kernel. With
``torch.bincount`` the joint index ``target * C + pred`` has to be built first
(several passes over memory, temporaries as large as the maps), and bincount
then reads it three times: its own min pass, its max pass and the counting
loop. These loops read each label once and check the ranges while counting
(BENCHMARKS.md, "Metrics", compares the two).

Compiled code is cached on disk where a cache directory is writable, so only
the first process on a machine compiles each signature; elsewhere each
process compiles on first use.
"""

from __future__ import annotations

from typing import Callable

import numba
import numpy as np


def _compile(function: Callable) -> Callable:
    """``function`` compiled to release the GIL (parts are counted on threads), cached on disk when possible."""
    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False)(function)
    except RuntimeError:  # numba found no writable cache directory (read-only install and home): compile per process
        return numba.njit(nogil=True, boundscheck=False)(function)


LANES = 4  # sub-histograms that consecutive pixels are counted in, in turn


def _count_bytes(
    pred: np.ndarray,
    target: np.ndarray,
    pred_words: np.ndarray,
    target_words: np.ndarray,
    num_classes: int,
    histogram: np.ndarray,
) -> int:
    """Counts uint8 maps into ``histogram`` (int64 [LANES, 256 * C + 256]) at ``target * C + pred``.

    ``pred_words`` and ``target_words`` are the same bytes read as uint64,
    8 pixels each (``len(pred) // 8`` of them). Where all 8 pixels of both
    words hold one value, which is most of a label map, they are counted with
    one add. Other pixels are counted one by one, in turn into one of
    ``LANES`` sub-histograms: bumping the same counter again and again waits
    for its previous store each time (a run of one (target, prediction) pair
    took 1.8x as long as noise without lanes).

    Every target value has a row, so the caller checks the target range
    afterwards (rows past C-1 other than the ignore row must be empty); the
    extra 256 bins keep an out-of-range prediction inside the array. Returns
    the largest prediction.
    """
    ones = np.uint64(0x0101010101010101)  # times a byte value: that byte in all 8 places
    low_byte = np.uint64(0xFF)
    largest = np.uint8(0)
    for word in range(pred_words.shape[0]):
        pred_word, target_word = pred_words[word], target_words[word]
        p, t = pred_word & low_byte, target_word & low_byte
        if pred_word == p * ones and target_word == t * ones:
            largest = max(largest, np.uint8(p))
            histogram[0, np.int64(t) * num_classes + np.int64(p)] += 8
            continue
        for lane in range(8):
            i = word * 8 + lane
            largest = max(largest, pred[i])
            histogram[lane % LANES, np.int64(target[i]) * num_classes + pred[i]] += 1
    for i in range(pred_words.shape[0] * 8, pred.shape[0]):
        largest = max(largest, pred[i])
        histogram[0, np.int64(target[i]) * num_classes + pred[i]] += 1
    return largest


def _count_any(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int, histogram: np.ndarray
) -> tuple[int, int]:
    """Counts maps of any integer dtypes into ``histogram`` (int64 [LANES, (C + 2) * C]), pixel i in lane i % LANES.

    Row ``C`` takes ignored pixels, row ``C + 1`` target values that are
    neither a class nor the ignore index; an out-of-range prediction is
    clipped into the row (the caller rejects it). Returns the smallest and
    largest prediction.
    """
    smallest = largest = np.int64(pred[0])
    for i in range(pred.shape[0]):
        p = np.int64(pred[i])
        smallest = min(smallest, p)
        largest = max(largest, p)
        row = np.int64(target[i])
        if row < 0 or row >= num_classes:
            row = num_classes if row == ignore_index else num_classes + 1
        histogram[i % LANES, row * num_classes + min(max(p, 0), num_classes - 1)] += 1
    return smallest, largest


count_bytes = _compile(_count_bytes)
count_any = _compile(_count_any)

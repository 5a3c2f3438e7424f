"""Counting (ground truth, prediction) pixel pairs into confusion counts: the engine behind ConfusionMatrix.update.

CPU label maps are counted by compiled loops (:mod:`semseg.metrics.kernels`,
numba) that read each label once and check its range while counting; large
inputs are split into parts counted on a pool of threads. Tensors on an
accelerator are counted by torch's bincount over a joint index. A target
value that is neither a class nor the ignore index, or a prediction outside
0..C-1, raises :class:`LabelValueError` naming the values and their pixel
counts. No call changes process-wide settings (torch's thread count included).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
import warnings
from types import ModuleType
from typing import Callable, Union

import numpy as np
import torch

from semseg.errors import SemsegError

LabelMap = Union[torch.Tensor, np.ndarray]
Scratch = dict[tuple[str, torch.dtype, torch.device], torch.Tensor]

_LANES = 4  # interleaved sub-histograms, see _joint_histogram
# Larger inputs are counted in parts on threads, each part at least this big.
_MIN_PIXELS_PER_WORKER = 1 << 18
_MAX_WORKERS = 8
# Target values index histogram rows as they are while rows x classes stays this
# small; other targets (ignore index -1 or 65535) are remapped first.
_MAX_DIRECT_ROWS_X_CLASSES = 1 << 16
_MAX_LISTED = 8


class LabelValueError(SemsegError):
    """A label map holds values outside the contract; ``source`` is "prediction" or "target"."""

    def __init__(self, message: str, source: str) -> None:
        super().__init__(message)
        self.source = source


def as_label_tensor(labels: LabelMap, name: str) -> torch.Tensor:
    """A tensor view of integer labels, without a copy where the dtype allows."""
    if isinstance(labels, torch.Tensor):
        tensor = labels.detach()
    else:
        array = np.asarray(labels)
        if array.dtype.kind not in "biu":
            raise SemsegError(f"{name} must hold integer class ids, got dtype {array.dtype}")
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        tensor = _tensor_from_numpy(array)
    if tensor.is_floating_point() or tensor.is_complex():
        raise SemsegError(f"{name} must hold integer class ids, got dtype {tensor.dtype} (take logits.argmax(1) first)")
    if tensor.dtype == torch.bool:
        return tensor.to(torch.uint8)
    if tensor.dtype in (torch.uint16, torch.uint32, torch.uint64):  # few kernels accept these dtypes
        return tensor.to(torch.int32 if tensor.dtype == torch.uint16 else torch.int64)
    return tensor


def _tensor_from_numpy(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    elif array.dtype.kind == "u" and array.dtype.itemsize > 1:  # torch's uint16/32/64 lack most kernels
        array = array.astype(np.int32 if array.dtype.itemsize == 2 else np.int64)
    if any(stride < 0 for stride in array.strides):
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # PIL-backed arrays are read-only; we only read them, so torch's warning does not apply.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class _OutOfRange(Exception):
    """Raised inside the counting loop; the caller then lists the bad values of the whole input."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.source = source


def count_pairs(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratches: list[Scratch]
) -> np.ndarray:
    """Confusion counts int64 [C, C] of non-empty label maps of the same shape and device.

    On the CPU the maps are counted by compiled loops (:mod:`semseg.metrics.kernels`),
    a large input in contiguous parts on up to ``torch.get_num_threads()``
    threads (see :func:`_count_parallel`); on an accelerator by torch's bincount,
    in one piece. ``scratches`` keeps buffers between calls, one set per thread.
    Raises :class:`LabelValueError` naming the values outside the contract.
    """
    pred, target = pred.reshape(-1), target.reshape(-1)
    workers = _worker_count(pred)
    try:
        if workers == 1:
            return _count_part(pred, target, num_classes, ignore_index, _scratch(scratches, 0))
        return _count_parallel(pred, target, num_classes, ignore_index, scratches, workers)
    except _OutOfRange as exc:
        if exc.source == "prediction":
            raise _prediction_error(pred, num_classes) from None
        raise _target_error(target, num_classes, ignore_index) from None


def _worker_count(pred: torch.Tensor) -> int:
    if pred.device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), _MAX_WORKERS, pred.numel() // _MIN_PIXELS_PER_WORKER))


def _scratch(scratches: list[Scratch], index: int) -> Scratch:
    while len(scratches) <= index:
        scratches.append({})
    return scratches[index]


def _count_part(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratch: Scratch
) -> np.ndarray:
    """Counts int64 [C, C] of one part: by the compiled loops on the CPU, by torch elsewhere."""
    if pred.device.type == "cpu":
        return _count_compiled(pred, target, num_classes, ignore_index, scratch)
    return _count_torch(pred, target, num_classes, ignore_index, scratch)


def _count_parallel(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratches: list[Scratch], workers: int
) -> np.ndarray:
    """Counts of ``workers`` contiguous parts of CPU maps, each on a thread of the pool, summed.

    The compiled loops release the GIL, so the parts are counted at once
    (BENCHMARKS.md, "Metrics", gives the gain). ``torch.set_num_threads(1)``
    turns the split off.
    """
    bounds = np.linspace(0, pred.numel(), workers + 1).astype(int)
    pool = _thread_pool()
    futures = [
        pool.submit(_count_part, pred[lo:hi], target[lo:hi], num_classes, ignore_index, _scratch(scratches, i))
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]
    concurrent.futures.wait(futures)  # every part done before any error leaves: the buffers are reused next update
    return sum((future.result() for future in futures), np.zeros((num_classes, num_classes), dtype=np.int64))


_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool of up to ``_MAX_WORKERS`` counting threads, made on first use and never replaced.

    Its threads start as parts are submitted. A forked child (a DataLoader worker)
    forgets its parent's pool, whose threads did not survive the fork, and makes its own.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(_MAX_WORKERS, "semseg-metrics")
        return _POOL


def _forget_pool_after_fork() -> None:
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


@functools.cache
def _kernels() -> ModuleType:
    """The compiled loops; importing them imports numba, so it happens at the first CPU count, not at import."""
    from semseg.metrics import kernels

    return kernels


def _count_compiled(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratch: Scratch
) -> np.ndarray:
    """Counts int64 [C, C] of flat CPU label maps, in one compiled loop (``scratch`` is not needed)."""
    kernels = _kernels()
    pred_np, target_np = pred.contiguous().numpy(), target.contiguous().numpy()
    if pred.dtype == target.dtype == torch.uint8 and 256 * num_classes <= _MAX_DIRECT_ROWS_X_CLASSES:
        return _count_bytes_compiled(kernels, pred_np, target_np, num_classes, ignore_index)
    histogram = np.zeros((kernels.LANES, (num_classes + 2) * num_classes), dtype=np.int64)
    smallest, largest = kernels.count_any(pred_np, target_np, num_classes, ignore_index, histogram)
    if smallest < 0 or largest >= num_classes:
        raise _OutOfRange("prediction")
    # row C holds ignored pixels, row C + 1 targets that are neither a class nor ignore
    return _class_rows(histogram.sum(axis=0).reshape(num_classes + 2, num_classes), num_classes, ignore_row=num_classes)


def _count_bytes_compiled(
    kernels: ModuleType, pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    """Counts int64 [C, C] of flat uint8 maps; every target byte value has a histogram row."""
    histogram = np.zeros((kernels.LANES, 256 * num_classes + 256), dtype=np.int64)
    whole_words = pred.size // 8 * 8  # uint64 views, unaligned ones included (numba then loads them as such)
    words = pred[:whole_words].view(np.uint64), target[:whole_words].view(np.uint64)
    if kernels.count_bytes(pred, target, *words, num_classes, histogram) >= num_classes:
        raise _OutOfRange("prediction")
    return _class_rows(histogram.sum(axis=0)[: 256 * num_classes].reshape(256, num_classes), num_classes, ignore_index)


def _count_torch(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratch: Scratch
) -> np.ndarray:
    """Counts int64 [C, C] of flat label maps with torch, for tensors on an accelerator.

    One bincount over the joint index ``target * C + pred``, int16 when it
    fits. The prediction range is checked by a min/max pass; the target range
    costs nothing more: the histogram has a row for every target value up to
    the largest, and each row past C-1 but the ignore row must be empty.
    """
    low, high = (int(v) for v in torch.aminmax(pred))
    if low < 0 or high >= num_classes:
        raise _OutOfRange("prediction")
    if target.dtype == torch.uint8 and ignore_index == 255:  # masks as read: the histogram rows check the range
        low, high = 0, 255
    else:
        low, high = (int(v) for v in torch.aminmax(target))
    ignore_row = ignore_index
    if low < 0 or (high + 1) * num_classes > _MAX_DIRECT_ROWS_X_CLASSES:
        target, ignore_row, high = _remap_ignore(target, num_classes, ignore_index), num_classes, num_classes
    rows = max(high, num_classes - 1) + 1
    table = _joint_histogram(pred, target, num_classes, rows, scratch).view(rows, num_classes).cpu().numpy()
    return _class_rows(table, num_classes, ignore_row)


def _class_rows(table: np.ndarray, num_classes: int, ignore_row: int) -> np.ndarray:
    """Rows 0..C-1 of a histogram with a row per target value (or group of values).

    Every row past C-1 but the ignore row must be empty: that is the target's range check.
    """
    extra_rows = np.arange(num_classes, len(table))
    if np.any((table[num_classes:].sum(axis=1) > 0) & (extra_rows != ignore_row)):
        raise _OutOfRange("target")
    return table[:num_classes]


def _as_dtype(labels: torch.Tensor, dtype: torch.dtype, scratch: Scratch, name: str) -> torch.Tensor:
    """``labels`` in ``dtype`` (values known to fit), copied into a kept buffer only when they are not."""
    if labels.dtype == dtype:
        return labels
    return _buffer(scratch, f"{name}_{dtype}", dtype, labels).copy_(labels)


def _joint_histogram(pred: torch.Tensor, target: torch.Tensor, num_classes: int, rows: int, scratch: Scratch) -> torch.Tensor:
    """bincount of ``target * C + pred`` over flat label maps, int64 [rows * C].

    Pixel i is counted in sub-histogram i % 4: the index is ``(target * C +
    pred) * 4 + i % 4``. Why: neighbouring pixels mostly share their (target,
    prediction) pair, and bumping one counter again and again waits on its own
    previous store each time; with four interleaved counters consecutive
    pixels bump different ones.
    """
    bins = rows * num_classes * _LANES
    dtype = torch.int16 if bins <= 1 << 15 else torch.int32 if bins <= 1 << 31 else torch.int64
    # one dtype for every operand: on the CPU torch would copy a mixed-dtype operand into a fresh allocation
    joint = _buffer(scratch, "joint", dtype, target)
    if num_classes * _LANES <= 256:  # pred * 4 + lane in bytes, widened once: less memory traffic
        pred = _as_dtype(pred, torch.uint8, scratch, "pred")
        low = torch.add(_lanes(scratch, torch.uint8, pred), pred, alpha=_LANES, out=_buffer(scratch, "low", torch.uint8, pred))
        joint.copy_(low)
    else:
        torch.add(_lanes(scratch, dtype, pred), _as_dtype(pred, dtype, scratch, "pred"), alpha=_LANES, out=joint)
    joint.add_(_as_dtype(target, dtype, scratch, "target"), alpha=num_classes * _LANES)
    return torch.bincount(joint, minlength=bins).view(-1, _LANES).sum(dim=1)


def _buffer(scratch: Scratch, name: str, dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """A buffer of ``like``'s length, kept for later updates.

    Why: a fresh allocation for every update costs allocator work (and on the
    CPU, page faults) on the order of the counting itself.
    """
    return _kept(scratch, name, dtype, like, lambda n: torch.empty(n, dtype=dtype, device=like.device))


def _lanes(scratch: Scratch, dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """The sub-histogram of each pixel, 0, 1, 2, 3, 0, 1, ..., as long as ``like``."""
    return _kept(scratch, "lanes", dtype, like, lambda n: (torch.arange(n, device=like.device) % _LANES).to(dtype))


def _kept(scratch: Scratch, name: str, dtype: torch.dtype, like: torch.Tensor, make: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """``make(len(like))`` the first time (or when ``like`` is longer), kept in ``scratch``; a view of ``like``'s length."""
    key = (name, dtype, like.device)
    if key not in scratch or scratch[key].numel() < like.numel():
        scratch[key] = make(like.numel())
    return scratch[key][: like.numel()]


def _remap_ignore(target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Targets with negative or large values (ignore -1, 65535): ignore becomes C; any other non-class fails."""
    target = target.to(torch.int64)  # compare in int64: a scalar like 200 would wrap in an int8 tensor
    is_ignore = target == ignore_index
    if bool((~is_ignore & ((target < 0) | (target >= num_classes))).any()):
        raise _OutOfRange("target")
    return torch.where(is_ignore, num_classes, target)


def _value_counts(values: torch.Tensor) -> str:
    found, counts = torch.unique(values, return_counts=True)
    listed = [f"{v} ({c} pixel{'' if c == 1 else 's'})" for v, c in zip(found.tolist(), counts.tolist())]
    more = len(listed) - _MAX_LISTED
    return ", ".join(listed[:_MAX_LISTED]) + (f" and {more} more values" if more > 0 else "")


def _target_error(target: torch.Tensor, num_classes: int, ignore_index: int) -> LabelValueError:
    target = target.to(torch.int64)  # compare in int64: a scalar like 200 would wrap in an int8 tensor
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    return LabelValueError(
        f"target has values that are neither a class id (0..{num_classes - 1}) nor the ignore index "
        f"{ignore_index}: {_value_counts(target[bad])}",
        "target",
    )


def _prediction_error(pred: torch.Tensor, num_classes: int) -> LabelValueError:
    pred = pred.to(torch.int64)
    bad = (pred < 0) | (pred >= num_classes)
    return LabelValueError(
        f"prediction has values outside the class ids 0..{num_classes - 1}: {_value_counts(pred[bad])}",
        "prediction",
    )

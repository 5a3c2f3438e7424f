"""One metric contract: a confusion matrix summed over the whole dataset, and scores computed from it.

The contract (docs/metrics.md gives it in full, with how peers differ):

* ``matrix[g, p]`` counts pixels whose ground truth is class ``g`` and whose
  prediction is class ``p`` (rows = ground truth, columns = prediction), summed
  over every image before any score is computed. Pixels whose ground truth is
  the ignore index are not counted.
* Per class: IoU = TP / (TP + FP + FN), acc (recall) = TP / GT,
  precision = TP / predicted, dice = 2TP / (2TP + FP + FN).
* A score whose denominator is 0 is NaN: a class with neither ground truth nor
  predictions has IoU, acc and dice NaN; a class that is only predicted has
  IoU 0 and dice 0 (they count) and acc NaN (no ground truth to recall).
* miou, mean_acc and mdice average the classes that are not NaN;
  pixel_acc = trace / total; fwiou = sum over classes of (GT_c / total) * IoU_c.
* Scores are fractions in 0..1 in the API and the JSON; the printed table shows
  percentages.

A target value that is neither a class nor the ignore index, or a prediction
outside 0..C-1, raises :class:`LabelValueError` naming the values and their
pixel counts: nothing is silently dropped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import math
import os
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist

from semseg.errors import SemsegError
from semseg.io import list_images, read_label_map, write_text_atomic
from semseg.meta import check_ignore_index, check_num_classes

LabelMap = Union[torch.Tensor, np.ndarray]
Scratch = dict[tuple[str, torch.dtype, torch.device], torch.Tensor]
MEAN_KEYS = ("miou", "mean_acc", "mdice", "pixel_acc", "fwiou")
CLASS_KEYS = ("iou", "acc", "precision", "dice")

# Pixels per bincount on the CPU: the int16 joint index of a chunk (2 MiB) stays
# in cache, and a huge batch never allocates one temporary per pixel.
_CPU_CHUNK = 1 << 20
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


class ConfusionMatrix:
    """Counts of (ground truth, prediction) pixel pairs, accumulated over a dataset.

    ``matrix`` is int64 [C, C] (rows = ground truth, columns = prediction);
    ``num_images`` counts the label maps seen.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index, num_classes)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.num_images = 0
        self._scratch: list[Scratch] = []  # buffers reused across updates, one set per counting thread

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"num_images={self.num_images}, pixels={int(self.matrix.sum())})"
        )

    def update(self, pred: LabelMap, target: LabelMap) -> None:
        """Add a label map [H, W] or a batch [N, H, W] of class ids.

        ``pred`` and ``target`` are torch tensors (any device) or NumPy arrays
        of any integer dtype, with the same shape. A value outside the contract
        raises :class:`LabelValueError` and nothing of the update is counted.
        On the CPU a large input is counted in parts on up to
        ``torch.get_num_threads()`` threads (docs/metrics.md says why).
        """
        pred_t, target_t = _as_label_tensor(pred, "prediction"), _as_label_tensor(target, "target")
        if pred_t.shape != target_t.shape:
            raise SemsegError(f"prediction shape {tuple(pred_t.shape)} differs from target shape {tuple(target_t.shape)}")
        if pred_t.ndim not in (2, 3):
            raise SemsegError(
                f"label maps must be [H, W] or [N, H, W], got shape {tuple(pred_t.shape)} "
                "(pass class ids, e.g. logits.argmax(1), not logits)"
            )
        if pred_t.device != target_t.device:  # count where the data already is, on the accelerator
            device = pred_t.device if pred_t.device.type != "cpu" else target_t.device
            pred_t, target_t = pred_t.to(device), target_t.to(device)
        if pred_t.numel():
            self.matrix += _count_pairs(pred_t, target_t, self.num_classes, self.ignore_index, self._scratch)
        self.num_images += 1 if pred_t.ndim == 2 else int(pred_t.shape[0])

    def compute(self) -> dict[str, Any]:
        """The scores of :func:`compute_scores` for the matrix so far."""
        return compute_scores(self.matrix)

    def reset(self) -> None:
        self.matrix[:] = 0
        self.num_images = 0

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts to this matrix (e.g. from another worker); returns self."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise SemsegError(
                f"cannot merge a confusion matrix of {other.num_classes} classes (ignore {other.ignore_index}) "
                f"into one of {self.num_classes} classes (ignore {self.ignore_index})"
            )
        self.matrix += other.matrix
        self.num_images += other.num_images
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def all_reduce(self) -> None:
        """Sum the matrix and image count over torch.distributed ranks; no-op when not initialized."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        # NCCL reduces CUDA tensors only; gloo (and mixed "cpu:gloo,cuda:nccl" groups) take CPU tensors.
        on_cuda = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
        packed = torch.from_numpy(np.append(self.matrix.ravel(), self.num_images)).to(device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        summed = packed.cpu().numpy()
        self.matrix = summed[:-1].reshape(self.num_classes, self.num_classes).copy()
        self.num_images = int(summed[-1])


# ---------------------------------------------------------------- counting


def _as_label_tensor(labels: LabelMap, name: str) -> torch.Tensor:
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


@functools.cache
def _openmp_backend() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextlib.contextmanager
def _serial_cpu(device: torch.device) -> Iterator[None]:
    """Run torch's CPU kernels on the calling thread only.

    Why: on a busy CPU (DataLoader workers decoding during validation, other
    jobs) every OpenMP parallel region waits at its barrier for a descheduled
    thread. On the project's shared 2-core machine the same counting ran at
    27 Mpx/s with 2 threads and 574 Mpx/s with 1 (benchmarks/bench_metrics.py).
    The counting loop itself is serial in torch anyway.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or not _openmp_backend():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _OutOfRange(Exception):
    """Raised inside the counting loop; the caller then lists the bad values of the whole input."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.source = source


def _count_pairs(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratches: list[Scratch]
) -> np.ndarray:
    """Confusion counts int64 [C, C] of non-empty label maps of the same shape and device.

    On the CPU a large input is split into contiguous parts counted on up to
    ``torch.get_num_threads()`` threads (see :func:`_count_parallel`); each part
    is counted by one compiled loop (:func:`_count_compiled`), or, where numba
    is missing, by torch in chunks of 1M pixels so that the temporaries stay in
    cache. On an accelerator with torch, in one piece.
    """
    pred, target = pred.reshape(-1), target.reshape(-1)
    workers = _worker_count(pred)
    try:
        with _serial_cpu(pred.device):
            if workers == 1:
                return _count_serial(pred, target, num_classes, ignore_index, _scratch(scratches, 0))
            return _count_parallel(pred, target, num_classes, ignore_index, scratches, workers)
    except _OutOfRange as exc:
        if exc.source == "prediction":
            raise _prediction_error(pred, num_classes) from None
        raise _target_error(target, num_classes, ignore_index) from None


def _worker_count(pred: torch.Tensor) -> int:
    if pred.device.type != "cpu" or not _openmp_backend():  # workers rely on _serial_cpu restoring the thread count
        return 1
    return max(1, min(torch.get_num_threads(), _MAX_WORKERS, pred.numel() // _MIN_PIXELS_PER_WORKER))


def _scratch(scratches: list[Scratch], index: int) -> Scratch:
    while len(scratches) <= index:
        scratches.append({})
    return scratches[index]


def _count_serial(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratch: Scratch
) -> np.ndarray:
    kernels = _compiled_kernels() if pred.device.type == "cpu" else None
    if kernels is not None:  # no temporaries to keep in cache: the part in one call
        return _count_compiled(kernels, pred, target, num_classes, ignore_index)
    step = _CPU_CHUNK if pred.device.type == "cpu" else pred.numel()
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    for start in range(0, pred.numel(), step):
        part = slice(start, start + step)
        counts += _count_chunk(pred[part], target[part], num_classes, ignore_index, scratch)
    return counts


def _count_parallel(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratches: list[Scratch], workers: int
) -> np.ndarray:
    """Counts of ``workers`` contiguous parts, each on its own thread, summed.

    Why: the counting loops are serial (semseg's compiled one and torch's
    bincount), and torch's OpenMP threads are worse than none on a busy CPU
    (see :func:`_serial_cpu`). Plain threads counting separate parts have no
    barrier to spin at: the compiled loop and torch's kernels release the GIL,
    and on the project's 2-core machine two parts counted 1.1-1.7x faster than
    one on CamVid- and Cityscapes-sized batches (benchmarks/bench_metrics.py,
    "threads" column). ``torch.set_num_threads(1)`` turns it off.
    """
    bounds = np.linspace(0, pred.numel(), workers + 1).astype(int)
    pool = _thread_pool(workers)
    futures = [
        pool.submit(_count_serial_on_worker, pred[lo:hi], target[lo:hi], num_classes, ignore_index, _scratch(scratches, i))
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]
    concurrent.futures.wait(futures)  # every part done before any error leaves: the buffers are reused next update
    return sum((future.result() for future in futures), np.zeros((num_classes, num_classes), dtype=np.int64))


def _count_serial_on_worker(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratch: Scratch
) -> np.ndarray:
    # A new thread starts with OpenMP's default thread count, not the caller's 1; the caller restores
    # the process-wide setting (and MKL's) when its _serial_cpu block ends, after every part is done.
    torch.set_num_threads(1)
    return _count_serial(pred, target, num_classes, ignore_index, scratch)


_POOL: tuple[int, int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, size, pool)
_POOL_LOCK = threading.Lock()


def _thread_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """A process-wide pool of at least ``workers`` threads, made again in a forked child (threads do not survive fork).

    A smaller pool it replaces is left to idle rather than shut down: another thread may be submitting to it.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < workers:
            _POOL = (os.getpid(), workers, concurrent.futures.ThreadPoolExecutor(workers, "semseg-metrics"))
        return _POOL[2]


@functools.cache
def _compiled_kernels() -> ModuleType | None:
    """semseg's compiled counting loops, or None where numba is not installed (torch's bincount is used then)."""
    try:
        from semseg import _confusion_kernels
    except ImportError:
        return None
    return _confusion_kernels


def _count_compiled(
    kernels: ModuleType, pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> np.ndarray:
    """Counts int64 [C, C] of flat CPU label maps, in one compiled loop (see semseg/_confusion_kernels.py)."""
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


def _count_chunk(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, scratch: Scratch
) -> np.ndarray:
    """Counts int64 [C, C] of flat label maps with torch: on an accelerator, or on a CPU without numba.

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
    previous store each time; four interleaved counters made torch's bincount
    loop 2x faster.
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

    Why: a fresh 2 MiB CPU allocation goes back to the OS when freed, and the
    page faults of touching it again took as long as the counting.
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
    listed = [f"{v} ({_plural(c, 'pixel')})" for v, c in zip(found.tolist(), counts.tolist())]
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


# ---------------------------------------------------------------- scores


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


def report(cm: ConfusionMatrix, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON-ready scores of ``cm``: the means, ``num_images``, ``per_class`` and the matrix.

    Keys, in order: miou, mean_acc, mdice, pixel_acc, fwiou, num_images,
    per_class ({name: {iou, acc, precision, dice, gt_pixels, pred_pixels}} in
    class order), confusion_matrix (rows = ground truth). NaN becomes None.
    """
    names = check_class_names(class_names, cm.num_classes)
    scores = cm.compute()
    result: dict[str, Any] = {key: _json_float(scores[key]) for key in MEAN_KEYS}
    result["num_images"] = cm.num_images
    result["per_class"] = {
        name: {
            **{key: _json_float(scores[key][c]) for key in CLASS_KEYS},
            "gt_pixels": int(scores["gt_pixels"][c]),
            "pred_pixels": int(scores["pred_pixels"][c]),
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


def format_report(report: dict[str, Any]) -> str:
    """A per-class table (percentages, 2 decimals) followed by the means, from a :func:`report` dict."""
    per_class = report["per_class"]
    width = max([len("class"), *(len(name) for name in per_class)])
    header = f"{'class':<{width}}  {'IoU':>7} {'acc':>7} {'prec':>7} {'dice':>7}  {'GT pixels':>13} {'pred pixels':>13}"
    lines = [header, "-" * len(header)]
    for name, row in per_class.items():
        scores = " ".join(f"{_percent(row[key]):>7}" for key in CLASS_KEYS)
        lines.append(f"{name:<{width}}  {scores}  {row['gt_pixels']:>13,} {row['pred_pixels']:>13,}")
    lines.append("-" * len(header))
    if any(row[key] is None for row in per_class.values() for key in CLASS_KEYS):
        lines.append("-: undefined (the class has no ground-truth pixels, or no pixels at all); left out of the means")
    lines.append(
        f"mIoU {_percent(report['miou'])}   mean acc {_percent(report['mean_acc'])}   "
        f"mDice {_percent(report['mdice'])}   pixel acc {_percent(report['pixel_acc'])}   "
        f"fwIoU {_percent(report['fwiou'])}   ({_plural(report['num_images'], 'image')})"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- scoring folders


def _index_by_stem(folder: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in by_stem:
            raise SemsegError(f"{path}: same name stem as {by_stem[path.stem].name}; keep one of the two")
        by_stem[path.stem] = path
    return by_stem


def pair_label_files(pred_dir: str | Path, gt_dir: str | Path, allow_missing: bool = False) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) files matched by name stem, in ground-truth name order.

    A ground truth without a prediction is an error, or skipped with a warning
    when ``allow_missing``; predictions without a ground truth are left out
    with a warning (scoring a subset of predicted images is common).
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
    if missing:
        warnings.warn(f"skipped {len(missing)} ground truths without a prediction, e.g. {missing[0]}", stacklevel=3)
    extra = [preds[stem] for stem in preds if stem not in gts]
    if extra:
        warnings.warn(f"{len(extra)} predictions have no ground truth and are not scored, e.g. {extra[0]}", stacklevel=3)
    pairs = [(preds[stem], gts[stem]) for stem in gts if stem in preds]
    if not pairs:
        raise SemsegError(f"{pred_dir}: no prediction matches a ground truth in {gt_dir}")
    return pairs


def score_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    allow_missing: bool = False,
) -> ConfusionMatrix:
    """Accumulate label PNGs of ``pred_dir`` against those of ``gt_dir``, matched by name stem.

    Label maps are read as their values (8/16-bit; palette PNGs as indices).
    Every bad input raises :class:`SemsegError` naming the file.
    """
    cm = ConfusionMatrix(num_classes, ignore_index)
    for pred_path, gt_path in pair_label_files(pred_dir, gt_dir, allow_missing):
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
    return cm


def run_score(
    pred_dir: str | Path,
    gt_dir: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
    json_path: str | Path | None = None,
    allow_missing: bool = False,
) -> int:
    """``semseg score``: print the table and means, optionally write the :func:`report` JSON. Returns 0."""
    names = check_class_names(class_names, num_classes)  # before reading any file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cm = score_folders(pred_dir, gt_dir, num_classes, ignore_index, allow_missing)
    for warning in caught:
        print(f"semseg: warning: {warning.message}", file=sys.stderr)
    scores = report(cm, names)
    print(format_report(scores))
    if json_path is not None:
        write_text_atomic(json_path, report_json(scores))
        print(f"scores written to {json_path}")
    return 0

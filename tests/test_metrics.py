"""The metric contract: ConfusionMatrix counting, scores, reports, and agreement with torchmetrics and cityscapesScripts."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
from unittest import mock

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import semseg.metrics as metrics
from semseg.metrics import counting as engine
from semseg.errors import SemsegError
from semseg.metrics import ConfusionMatrix, LabelValueError, compute_scores, format_report, report

IGNORE = 255


def brute_force_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """The contract's matrix, pixel by pixel (np.add.at), as an independent reference."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    kept = target != ignore_index
    np.add.at(matrix, (target[kept].astype(np.int64), pred[kept].astype(np.int64)), 1)
    return matrix


def edge_case_batches(num_classes: int = 6, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred, target) uint8 batches with the edge cases of the contract.

    Class C-1 appears nowhere; class C-2 is only predicted (never in the ground
    truth); the second batch has an all-ignore image; regions are blobs, so
    neighbouring pixels mostly agree, as in real label maps.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for n in (3, 2):
        coarse = rng.integers(0, num_classes - 2, size=(n, 6, 8))
        target = np.kron(coarse, np.ones((8, 8), np.int64)).astype(np.uint8)[:, :45, :61]
        pred = target.copy()
        flip = rng.random(pred.shape) < 0.25
        pred[flip] = rng.integers(0, num_classes - 1, size=int(flip.sum()))  # includes the only-predicted class
        target[rng.random(target.shape) < 0.05] = IGNORE
        batches.append((pred, target))
    batches[1][1][0] = IGNORE  # an all-ignore image
    return batches


@contextlib.contextmanager
def counting_with(backend: str):
    """CPU counting by semseg's compiled loops ("compiled", what CPU maps get) or by torch ("torch", what accelerators get)."""
    if backend == "compiled":
        yield
        return
    with mock.patch.object(engine, "_count_compiled", engine._count_torch):
        yield


@pytest.fixture(params=["compiled", "torch"])
def counting(request):
    with counting_with(request.param):
        yield request.param


def accumulate(batches, num_classes: int = 6) -> ConfusionMatrix:
    cm = ConfusionMatrix(num_classes, IGNORE)
    for pred, target in batches:
        cm.update(pred, target)
    return cm


# ---------------------------------------------------------------- the contract on a hand-made example


def test_scores_follow_the_contract_on_a_hand_computed_matrix():
    # classes: 0 and 1 present, 2 only predicted, 3 absent everywhere
    matrix = np.array([[3, 1, 0, 0], [2, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = compute_scores(matrix)
    np.testing.assert_allclose(s["iou"][:3], [3 / 6, 4 / 8, 0.0])
    np.testing.assert_allclose(s["acc"][:2], [3 / 4, 4 / 7])
    np.testing.assert_allclose(s["precision"][:3], [3 / 5, 4 / 5, 0.0])
    np.testing.assert_allclose(s["dice"][:3], [6 / 9, 8 / 12, 0.0])
    assert math.isnan(s["iou"][3]) and math.isnan(s["dice"][3]) and math.isnan(s["acc"][3])
    assert math.isnan(s["acc"][2])  # no ground truth to recall
    assert s["miou"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # the only-predicted class counts as 0
    assert s["mean_acc"] == pytest.approx((3 / 4 + 4 / 7) / 2)
    assert s["mdice"] == pytest.approx((6 / 9 + 8 / 12 + 0) / 3)
    assert s["pixel_acc"] == pytest.approx(7 / 11)
    assert s["fwiou"] == pytest.approx(4 / 11 * 0.5 + 7 / 11 * 0.5)
    assert s["gt_pixels"].tolist() == [4, 7, 0, 0] and s["pred_pixels"].tolist() == [5, 5, 1, 0]


def test_an_empty_matrix_scores_nan_and_reports_null():
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((4, 4), np.uint8), np.full((4, 4), IGNORE, np.uint8))  # an all-ignore image
    assert cm.matrix.sum() == 0 and cm.num_images == 1
    scores = cm.compute()
    assert all(math.isnan(scores[key]) for key in metrics.MEAN_KEYS)
    result = report(cm)
    assert result["miou"] is None and result["per_class"]["class_0"]["iou"] is None
    json.dumps(result, allow_nan=False)  # valid JSON
    assert "mIoU -" in format_report(result)


# ---------------------------------------------------------------- counting


@settings(max_examples=60, deadline=None)
@given(
    num_classes=st.integers(1, 40),
    shape=st.sampled_from([(1, 1), (5, 7), (2, 9, 4), (3, 1, 1)]),
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64]),
    ignore_index=st.sampled_from([255, -1, 100, 65535]),
    seed=st.integers(0, 2**16),
    backend=st.sampled_from(["compiled", "torch"]),
)
def test_counts_equal_a_pixel_by_pixel_count(num_classes, shape, dtype, ignore_index, seed, backend):
    info = np.iinfo(dtype)
    assume(num_classes <= info.max and info.min <= ignore_index <= info.max and not 0 <= ignore_index < num_classes)
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, num_classes, shape).astype(dtype)
    target = rng.integers(0, num_classes, shape).astype(dtype)
    target[rng.random(shape) < 0.3] = ignore_index
    cm = ConfusionMatrix(num_classes, ignore_index)
    with counting_with(backend):
        cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, brute_force_matrix(pred, target, num_classes, ignore_index))
    assert cm.num_images == (1 if len(shape) == 2 else shape[0])


@pytest.mark.usefixtures("counting")
def test_torch_and_numpy_inputs_of_any_integer_dtype_count_the_same():
    pred, target = edge_case_batches()[0]
    expected = brute_force_matrix(pred, target, 6, IGNORE)
    inputs = [
        (pred, target),
        (torch.from_numpy(pred), torch.from_numpy(target)),
        (torch.from_numpy(pred).long(), torch.from_numpy(target).long()),  # argmax output and collated masks
        (pred.astype(np.int8), target.astype(np.uint16)),
        (torch.from_numpy(pred).to(torch.uint16), torch.from_numpy(target).int()),
        (pred[:, ::-1, ::-1], target[:, ::-1, ::-1]),  # negative strides
        (torch.from_numpy(pred).transpose(1, 2), torch.from_numpy(target).transpose(1, 2)),  # not contiguous
    ]
    for p, t in inputs:
        cm = ConfusionMatrix(6, IGNORE)
        cm.update(p, t)
        np.testing.assert_array_equal(cm.matrix, expected)


@pytest.mark.usefixtures("counting")
def test_boolean_maps_count_as_classes_0_and_1():
    pred = np.array([[True, False], [True, True]])
    cm = ConfusionMatrix(2)
    cm.update(pred, np.array([[1, 0], [0, 255]], np.uint8))
    assert cm.matrix.tolist() == [[1, 1], [0, 1]]


@pytest.mark.usefixtures("counting")
def test_a_batch_counts_like_its_images_one_by_one():
    pred, target = edge_case_batches()[0]
    batch, single = ConfusionMatrix(6), ConfusionMatrix(6)
    batch.update(pred, target)
    for p, t in zip(pred, target):
        single.update(p, t)
    np.testing.assert_array_equal(batch.matrix, single.matrix)
    assert batch.num_images == single.num_images == 3


@pytest.mark.parametrize("offset", range(9))
def test_byte_maps_count_exactly_at_any_alignment_with_uniform_and_mixed_words(offset):
    """The compiled loop reads byte maps 8 pixels at a time (uint64 words), and counts
    words holding one (target, prediction) value with one add: runs of every length,
    starting anywhere, and maps that do not start on an 8-byte boundary."""
    rng = np.random.default_rng(offset)
    lengths = rng.integers(1, 40, 300)
    target = np.repeat(rng.integers(0, 5, lengths.size), lengths).astype(np.uint8)
    target[rng.random(target.size) < 0.03] = IGNORE
    pred = np.repeat(rng.integers(0, 5, lengths.size), lengths).astype(np.uint8)
    buffer = np.zeros((2, target.size + 16), np.uint8)  # both maps start `offset` bytes past an 8-byte boundary
    size = (target.size - 9) // 10 * 10
    buffer[0, offset : offset + size], buffer[1, offset : offset + size] = pred[:size], target[:size]
    pred, target = buffer[0, offset : offset + size].reshape(10, -1), buffer[1, offset : offset + size].reshape(10, -1)
    assert pred.ctypes.data % 8 == offset % 8
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, brute_force_matrix(pred, target, 5, IGNORE))
    for values, name in ((pred, "prediction"), (target, "target")):  # a bad value filling one whole word
        bad = values.copy().reshape(-1)
        bad[16:24] = 9
        with pytest.raises(LabelValueError, match=rf"9 \(8 pixels\)") as info:
            cm.update(*((bad.reshape(pred.shape), target) if name == "prediction" else (pred, bad.reshape(pred.shape))))
        assert info.value.source == name


def test_compiled_loops_still_load_where_no_disk_cache_can_be_written(monkeypatch):
    """numba refuses cache=True at decoration when no cache directory is writable (a read-only
    install and home); the loops then compile in each process instead of failing the import."""
    import numba

    real_njit = numba.njit

    def njit_without_cache(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function '_count_any': no locator available for file")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit_without_cache)
    spec = importlib.util.spec_from_file_location("uncached_kernels", engine._kernels().__file__)
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    histogram = np.zeros((kernels.LANES, 5 * 3), np.int64)
    assert kernels.count_any(np.array([0, 2, 1]), np.array([1, 255, 1]), 3, 255, histogram) == (0, 2)
    assert histogram.sum(axis=0)[[1 * 3 + 0, 3 * 3 + 2, 1 * 3 + 1]].tolist() == [1, 1, 1]


def test_merge_equals_one_accumulation():
    batches = edge_case_batches()
    whole = accumulate(batches)
    first, second = accumulate(batches[:1]), accumulate(batches[1:])
    merged = copy.deepcopy(first).merge(second)
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    assert merged.num_images == whole.num_images == 5
    first += second
    np.testing.assert_array_equal(first.matrix, whole.matrix)
    with pytest.raises(SemsegError, match="cannot merge"):
        first.merge(ConfusionMatrix(7))


def test_reset_starts_over():
    cm = accumulate(edge_case_batches())
    cm.reset()
    assert cm.matrix.sum() == 0 and cm.num_images == 0
    pred, target = edge_case_batches()[0]
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, brute_force_matrix(pred, target, 6, IGNORE))


def test_update_leaves_torch_thread_count_as_it_was():
    threads = torch.get_num_threads()
    cm = ConfusionMatrix(6)
    cm.update(*edge_case_batches()[0])
    with pytest.raises(LabelValueError):
        cm.update(np.full((2, 2), 9, np.uint8), np.zeros((2, 2), np.uint8))
    assert torch.get_num_threads() == threads


@pytest.mark.usefixtures("counting")
@pytest.mark.parametrize(
    "num_classes, ignore_index, dtype",
    [(6, 255, np.uint8), (6, 255, np.int64), (19, 255, np.uint8), (6, -1, np.int16)],  # bytes, any dtype, remapped
)
def test_parts_counted_on_threads_add_up_and_a_bad_value_in_any_part_is_found(monkeypatch, num_classes, ignore_index, dtype):
    monkeypatch.setattr(engine, "_MIN_PIXELS_PER_WORKER", 500)  # several parts even for small maps
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # three parts; torch may run with fewer real threads, the split is what matters
    try:
        pred, target = (a.astype(dtype) for a in edge_case_batches(num_classes)[0])
        target[target == IGNORE] = ignore_index
        cm = ConfusionMatrix(num_classes, ignore_index)
        assert engine._worker_count(torch.from_numpy(pred)) == 3
        cm.update(pred, target)
        np.testing.assert_array_equal(cm.matrix, brute_force_matrix(pred, target, num_classes, ignore_index))
        for part in (0, 2):  # a bad target in the first part, then a bad prediction in the last
            bad_target, bad_pred = target.copy(), pred.copy()
            (bad_target if part == 0 else bad_pred)[part, 0, :2] = 40
            with pytest.raises(LabelValueError, match=r"40 \(2 pixels\)"):
                cm.update(bad_pred, bad_target)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


def _count_in_child(queue) -> None:
    pred, target = edge_case_batches()[0]
    cm = ConfusionMatrix(6)
    cm.update(pred, target)
    queue.put(cm.matrix.tolist())


def test_a_forked_child_counts_on_threads_of_its_own(monkeypatch):
    """Threads do not survive fork: a child (e.g. a DataLoader worker) must not submit to its parent's pool.

    Only the compiled loops, which are what CPU maps get and what runs on the pool's
    threads: torch ops started at once on two fresh threads of a forked child race in
    PyTorch's own re-creation of its thread pool ("Invalid thread pool!"), a
    combination semseg never makes (torch counts accelerator maps, in one piece).
    """
    monkeypatch.setattr(engine, "_MIN_PIXELS_PER_WORKER", 500)
    if torch.get_num_threads() < 2:
        monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    pred, target = edge_case_batches()[0]
    ConfusionMatrix(6).update(pred, target)  # the parent's pool exists now
    context = mp.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_count_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == brute_force_matrix(pred, target, 6, IGNORE).tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_count_like_cpu_ones():
    pred, target = edge_case_batches()[0]
    cm = ConfusionMatrix(6)
    cm.update(torch.from_numpy(pred).cuda().long(), torch.from_numpy(target))  # mixed devices too
    np.testing.assert_array_equal(cm.matrix, brute_force_matrix(pred, target, 6, IGNORE))
    with pytest.raises(LabelValueError, match="9"):
        cm.update(torch.full((2, 2), 9, device="cuda"), torch.zeros((2, 2), dtype=torch.long, device="cuda"))


# ---------------------------------------------------------------- bad input


@pytest.mark.usefixtures("counting")
def test_a_target_value_that_is_no_class_nor_ignore_is_an_error_naming_values_and_counts():
    cm = ConfusionMatrix(3)
    target = np.array([[0, 7, 7], [255, 3, 1]], np.uint8)
    with pytest.raises(LabelValueError, match=r"neither a class id \(0..2\) nor the ignore index 255: 3 \(1 pixel\), 7 \(2 pixels\)") as info:
        cm.update(np.zeros((2, 3), np.uint8), target)
    assert info.value.source == "target"
    assert cm.matrix.sum() == 0 and cm.num_images == 0  # nothing was counted


@pytest.mark.usefixtures("counting")
@pytest.mark.parametrize("ignore_index, bad", [(-1, -5), (65535, 700)])
def test_remapped_ignore_values_still_reject_other_values(ignore_index, bad):
    cm = ConfusionMatrix(3, ignore_index)
    target = np.array([[0, ignore_index], [bad, 2]], np.int64)
    with pytest.raises(LabelValueError, match=rf"ignore index {ignore_index}: {bad} \(1 pixel\)"):
        cm.update(np.zeros((2, 2), np.int64), target)


@pytest.mark.usefixtures("counting")
@pytest.mark.parametrize("value", [3, 255, -1])
def test_a_prediction_outside_the_classes_is_an_error_even_on_ignored_pixels(value):
    cm = ConfusionMatrix(3)
    pred = np.array([[0, value], [1, 2]], np.int16)
    target = np.array([[0, 255], [1, 2]], np.uint8)
    with pytest.raises(LabelValueError, match=rf"prediction has values outside the class ids 0..2: {value} \(1 pixel\)"):
        cm.update(pred, target)


@pytest.mark.usefixtures("counting")
def test_int8_maps_with_many_classes_do_not_wrap_in_comparisons():
    cm = ConfusionMatrix(200, -1)  # 200 does not fit an int8: comparisons must not wrap it
    cm.update(np.array([[119, 3]], np.int8), np.array([[5, -1]], np.int8))
    assert cm.matrix[5, 119] == 1 and cm.matrix.sum() == 1
    with pytest.raises(LabelValueError, match=r"outside the class ids 0..199: -3 \(1 pixel\)"):
        cm.update(np.array([[119, -3]], np.int8), np.array([[5, -1]], np.int8))


def test_shapes_dtypes_and_settings_are_checked():
    cm = ConfusionMatrix(3)
    with pytest.raises(SemsegError, match=r"prediction shape \(2, 3\) differs from target shape \(3, 2\)"):
        cm.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(SemsegError, match="not logits"):
        cm.update(torch.zeros(1, 3, 2, 2, dtype=torch.long), torch.zeros(1, 3, 2, 2, dtype=torch.long))
    with pytest.raises(SemsegError, match="integer class ids, got dtype torch.float32"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(SemsegError, match="integer class ids, got dtype float64"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2)))
    with pytest.raises(SemsegError, match=r"ignore_index \(1\) is a class id"):
        ConfusionMatrix(3, ignore_index=1)
    with pytest.raises(SemsegError, match="num_classes must be a positive integer"):
        ConfusionMatrix(0)


@pytest.mark.usefixtures("counting")
def test_empty_maps_count_images_only():
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((2, 0, 5), np.uint8), np.zeros((2, 0, 5), np.uint8))
    assert cm.num_images == 2 and cm.matrix.sum() == 0


# ---------------------------------------------------------------- report and table


def test_report_has_the_issue_keys_in_order_with_fractions_and_null():
    cm = accumulate(edge_case_batches())
    names = ["road", "sky", "car", "tree", "only_predicted", "absent"]
    result = report(cm, names)
    assert list(result) == ["miou", "mean_acc", "mdice", "pixel_acc", "fwiou", "num_images", "per_class", "confusion_matrix"]
    assert list(result["per_class"]) == names
    assert list(result["per_class"]["road"]) == ["iou", "acc", "precision", "dice", "gt_pixels", "pred_pixels"]
    assert result["num_images"] == 5
    assert 0 < result["miou"] < 1 and 0 < result["pixel_acc"] < 1
    assert result["per_class"]["absent"]["iou"] is None and result["per_class"]["absent"]["pred_pixels"] == 0
    only = result["per_class"]["only_predicted"]
    assert only["iou"] == 0.0 and only["acc"] is None and only["gt_pixels"] == 0 and only["pred_pixels"] > 0
    assert result["confusion_matrix"] == cm.matrix.tolist()
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert list(report(cm)["per_class"]) == [f"class_{i}" for i in range(6)]


def test_class_names_must_match_the_class_count_and_be_unique():
    cm = ConfusionMatrix(3)
    with pytest.raises(SemsegError, match="got 2 names for 3 classes"):
        report(cm, ["a", "b"])
    with pytest.raises(SemsegError, match="repeated: a"):
        report(cm, ["a", "b", "a"])


def test_table_shows_percentages_per_class_then_the_means():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 0, 1, 1]], np.uint8), np.array([[0, 1, 1, 1]], np.uint8))
    text = format_report(report(cm, ["background", "object"]))
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["class", "IoU", "acc", "prec", "dice"]
    assert lines[2].split()[:5] == ["background", "50.00", "100.00", "50.00", "66.67"]
    assert lines[3].split()[:5] == ["object", "66.67", "66.67", "100.00", "80.00"]
    assert lines[-1] == "mIoU 58.33   mean acc 83.33   mDice 73.33   pixel acc 75.00   fwIoU 62.50   (1 image)"


def test_table_gives_the_pred_to_gt_pixel_ratio_and_names_classes_two_times_off():
    cm = ConfusionMatrix(4)
    # GT: 10 a, 10 b, 10 c, no d; predicted: 4 a, 25 b (6 of a, all of b, 9 of c), 1 c
    gt = np.array([[0] * 10 + [1] * 10 + [2] * 10], np.uint8)
    pred = np.array([[0] * 4 + [1] * 6 + [1] * 10 + [1] * 9 + [2]], np.uint8)
    cm.update(pred, gt)
    text = format_report(report(cm, ["a", "b", "c", "d"]))
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:6]}
    assert rows["a"][-1] == "0.40x" and rows["b"][-1] == "2.50x" and rows["c"][-1] == "0.10x"
    assert rows["d"][-1] == "-"  # no ground-truth pixels: no ratio
    assert "over-predicted (pred/GT pixels >= 2x): b 2.50x" in text.splitlines()
    assert "under-predicted (pred/GT pixels <= 0.5x): a 0.40x, c 0.10x" in text.splitlines()


def test_table_names_no_class_when_every_ratio_is_within_two_times():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 0, 1, 1, 1, 0]], np.uint8), np.array([[0, 0, 0, 1, 1, 1]], np.uint8))
    text = format_report(report(cm))
    assert [line.split()[-1] for line in text.splitlines()[2:4]] == ["1.00x", "1.00x"]
    assert "predicted (pred/GT" not in text


# ---------------------------------------------------------------- peers: torchmetrics


def test_agrees_with_torchmetrics_where_the_policies_coincide():
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassF1Score,
        MulticlassJaccardIndex,
        MulticlassPrecision,
    )

    c = 6
    peers = {
        "iou": MulticlassJaccardIndex(c, average="none", ignore_index=IGNORE),
        "miou": MulticlassJaccardIndex(c, average="macro", ignore_index=IGNORE),
        "fwiou": MulticlassJaccardIndex(c, average="weighted", ignore_index=IGNORE),
        "acc": MulticlassAccuracy(c, average="none", ignore_index=IGNORE),
        "pixel_acc": MulticlassAccuracy(c, average="micro", ignore_index=IGNORE),
        "precision": MulticlassPrecision(c, average="none", ignore_index=IGNORE),
        "dice": MulticlassF1Score(c, average="none", ignore_index=IGNORE),
        "mdice": MulticlassF1Score(c, average="macro", ignore_index=IGNORE),
    }
    batches = edge_case_batches(c)
    cm = accumulate(batches, c)
    for pred, target in batches:
        for metric in peers.values():
            metric.update(torch.from_numpy(pred).long(), torch.from_numpy(target).long())
    ours = cm.compute()
    for key in ("miou", "fwiou", "pixel_acc", "mdice"):
        assert ours[key] == pytest.approx(float(peers[key].compute()), abs=1e-6), key
    for key in ("iou", "acc", "precision", "dice"):
        theirs = peers[key].compute().double().numpy()
        defined = ~np.isnan(ours[key])
        np.testing.assert_allclose(ours[key][defined], theirs[defined], atol=1e-6, err_msg=key)
        assert np.all(theirs[~defined] == 0), key  # torchmetrics writes 0 where semseg writes NaN
    # macro accuracy: torchmetrics keeps an only-predicted class (as 0); semseg leaves it out (no ground truth)
    macro_acc = MulticlassAccuracy(c, average="macro", ignore_index=IGNORE)
    for pred, target in batches:
        macro_acc.update(torch.from_numpy(pred).long(), torch.from_numpy(target).long())
    acc = ours["acc"]
    assert float(macro_acc.compute()) == pytest.approx(np.nansum(acc) / (np.sum(~np.isnan(acc)) + 1), abs=1e-6)


# ---------------------------------------------------------------- peers: cityscapesScripts


def test_agrees_with_the_cityscapes_pixel_level_evaluator(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
    from cityscapesscripts.helpers.labels import labels as cs_labels
    from PIL import Image

    train_to_label_id = np.zeros(256, np.uint8)  # trainId -> labelId; 255 (ignore) -> 0 "unlabeled"
    names = [""] * 19
    for label in cs_labels:
        if not label.ignoreInEval:
            train_to_label_id[label.trainId] = label.id
            names[label.trainId] = label.name
    rng = np.random.default_rng(3)
    cm = ConfusionMatrix(19)
    pred_files, gt_files = [], []
    for i in range(4):
        coarse = rng.integers(0, 17, size=(5, 9))  # trainIds 17, 18 never in the ground truth
        target = np.kron(coarse, np.ones((16, 16), np.int64))[:70, :130].astype(np.uint8)
        pred = target.copy()
        flip = rng.random(pred.shape) < 0.2
        pred[flip] = rng.integers(0, 18, size=int(flip.sum()))  # 17 only predicted, 18 absent everywhere
        target[rng.random(target.shape) < 0.1] = IGNORE
        if i == 3:
            target[:] = IGNORE  # an all-ignore image
        cm.update(pred, target)
        for folder, labels_, files in (("pred", pred, pred_files), ("gt", target, gt_files)):
            path = tmp_path / folder / f"frame{i}_gtFine_labelIds.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(train_to_label_id[labels_]).save(path)
            files.append(str(path))
    args = copy.copy(cs_eval.args)
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    theirs = cs_eval.evaluateImgLists(pred_files, gt_files, args)
    ours = cm.compute()
    for train_id, name in enumerate(names):
        their_iou = theirs["classScores"][name]
        if math.isnan(ours["iou"][train_id]):
            assert math.isnan(their_iou), name
        else:
            assert ours["iou"][train_id] == pytest.approx(their_iou, abs=1e-6), name
    assert ours["iou"][17] == 0.0 and math.isnan(ours["iou"][18])
    assert ours["miou"] == pytest.approx(theirs["averageScoreClasses"], abs=1e-6)


# ---------------------------------------------------------------- DDP


def _all_reduce_worker(rank: int, world_size: int, store_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    try:
        pred, target = edge_case_batches()[rank]
        cm = ConfusionMatrix(6)
        cm.update(pred, target)
        cm.all_reduce()
        if rank == 0:
            np.save(out_file, np.append(cm.matrix.ravel(), cm.num_images))
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_matrices_over_two_gloo_processes(tmp_path):
    out_file = tmp_path / "reduced.npy"
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "store"), str(out_file)), nprocs=2, join=True)
    reduced = np.load(out_file)
    whole = accumulate(edge_case_batches())
    np.testing.assert_array_equal(reduced[:-1].reshape(6, 6), whole.matrix)
    assert reduced[-1] == whole.num_images


def test_all_reduce_without_a_process_group_changes_nothing():
    cm = accumulate(edge_case_batches())
    before = cm.matrix.copy()
    cm.all_reduce()
    np.testing.assert_array_equal(cm.matrix, before)

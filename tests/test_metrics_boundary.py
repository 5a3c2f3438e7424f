"""Boundary IoU against the authors' formulation (Cheng et al. 2021), written independently with SciPy's erosion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from semseg.cli import main
from semseg.errors import SemsegError
from semseg.io import write_label_png
from semseg.metrics import BoundaryIoU, ConfusionMatrix, format_report, report
from semseg.metrics.boundary import boundary_width, contour_band

IGNORE = 255


def authors_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """``mask_to_boundary`` of the authors' code: pad by one zero pixel, erode d times by 3x3, subtract.

    (cv2.erode leaves the padded image's own border alone, SciPy's ``border_value=1`` does the same.)
    """
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * math.sqrt(h ** 2 + w ** 2))))
    padded = np.pad(mask.astype(bool), 1)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3), bool), iterations=d, border_value=1)
    return mask.astype(bool) & ~eroded[1:h + 1, 1:w + 1]


def reference_scores(pairs, num_classes: int, ignore_index: int = IGNORE, ratio: float = 0.02) -> np.ndarray:
    """Per-class boundary IoU, intersections and unions summed over the images, ignored pixels left out."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for pred, gt in pairs:
        valid = gt != ignore_index
        for c in range(num_classes):
            g = authors_boundary(gt == c, ratio) & valid
            p = authors_boundary(pred == c, ratio) & valid
            inter[c] += (g & p).sum()
            union[c] += (g | p).sum()
    with np.errstate(invalid="ignore"):
        return inter / union


def blobs(rng: np.random.Generator, shape: tuple[int, int], num_classes: int, cell: int) -> np.ndarray:
    coarse = rng.integers(0, num_classes, size=(shape[0] // cell + 1, shape[1] // cell + 1))
    return np.kron(coarse, np.ones((cell, cell), np.int64))[:shape[0], :shape[1]].astype(np.uint8)


def generated_pairs(seed: int = 0, num_classes: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Blob label maps of several sizes, predictions shifted and noisy, some ignored pixels."""
    rng = np.random.default_rng(seed)
    pairs = []
    for shape in ((37, 53), (64, 64), (20, 90), (5, 7)):
        gt = blobs(rng, shape, num_classes - 1, cell=9)  # class num_classes-1 only ever predicted
        pred = np.roll(gt, (1, -2), axis=(0, 1)).copy()
        noise = rng.random(shape) < 0.05
        pred[noise] = rng.integers(0, num_classes, size=int(noise.sum()))
        gt[rng.random(shape) < 0.03] = IGNORE
        pairs.append((pred, gt))
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_bands_of_every_class_are_the_authors_boundaries(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 70, size=2))
    labels = blobs(rng, shape, 4, cell=int(rng.integers(2, 12)))
    for ratio in (0.02, 0.05, 0.2):
        band = contour_band(labels, boundary_width(*shape, ratio))
        for c in range(4):
            np.testing.assert_array_equal(band & (labels == c), authors_boundary(labels == c, ratio))


@pytest.mark.parametrize("ratio", [0.02, 0.1])
def test_dataset_scores_match_the_reference(ratio):
    pairs = generated_pairs()
    metric = BoundaryIoU(5, IGNORE, dilation_ratio=ratio)
    for pred, gt in pairs:
        metric.update(pred, gt)
    scores = metric.compute()
    expected = reference_scores(pairs, 5, ratio=ratio)
    np.testing.assert_allclose(scores["boundary_iou"], expected, equal_nan=True)
    assert scores["mboundary_iou"] == pytest.approx(np.nanmean(expected))
    assert metric.num_images == len(pairs)
    assert scores["boundary_iou"][4] == 0  # only predicted: in the union, never in an intersection


def test_perfect_prediction_is_100_and_a_3_pixel_shift_costs_boundary_iou_far_more_than_iou():
    gt = np.zeros((256, 256), np.uint8)
    gt[40:140, 50:170] = 1
    gt[150:230, 30:110] = 2
    perfect = BoundaryIoU(3)
    perfect.update(gt, gt)
    assert perfect.compute()["mboundary_iou"] == 1.0

    shifted = np.roll(gt, 3, axis=1)
    boundary, matrix = BoundaryIoU(3), ConfusionMatrix(3)
    boundary.update(shifted, gt)
    matrix.update(shifted, gt)
    miou, mbiou = matrix.compute()["miou"], boundary.compute()["mboundary_iou"]
    assert miou > 0.93  # whole regions barely move
    assert mbiou < 0.8 and (1 - mbiou) > 4 * (1 - miou)
    assert mbiou == pytest.approx(np.nanmean(reference_scores([(shifted, gt)], 3)))


def test_batches_tensors_and_merges_agree_with_single_updates():
    pairs = generated_pairs(seed=3)
    single = BoundaryIoU(5)
    for pred, gt in pairs:
        single.update(pred, gt)
    batched = BoundaryIoU(5)
    batched.update(torch.from_numpy(np.stack([pairs[1][0], pairs[1][0]])), torch.from_numpy(np.stack([pairs[1][1]] * 2)))
    halves = BoundaryIoU(5), BoundaryIoU(5)
    for i, (pred, gt) in enumerate(pairs):
        halves[i % 2].update(torch.from_numpy(pred).long(), torch.from_numpy(gt).long())
    merged = halves[0].merge(halves[1])
    np.testing.assert_array_equal(merged.intersection, single.intersection)
    np.testing.assert_array_equal(merged.union, single.union)
    assert merged.num_images == single.num_images == 4 and batched.num_images == 2
    one = BoundaryIoU(5)
    one.update(*pairs[1])
    np.testing.assert_array_equal(batched.intersection, 2 * one.intersection)


def test_all_ignored_and_empty_classes_are_undefined():
    metric = BoundaryIoU(3)
    metric.update(np.zeros((8, 8), np.uint8), np.full((8, 8), IGNORE, np.uint8))
    scores = metric.compute()
    assert np.isnan(scores["boundary_iou"]).all() and math.isnan(scores["mboundary_iou"])


@pytest.mark.parametrize("kwargs, message", [
    ({"dilation_ratio": 0}, "dilation_ratio must lie in (0, 1]"),
    ({"dilation_ratio": 1.5}, "dilation_ratio must lie in (0, 1]"),
    ({"ignore_index": 1}, "is a class id"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(SemsegError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        BoundaryIoU(3, **kwargs)


def test_bad_label_maps_are_named():
    metric = BoundaryIoU(3)
    with pytest.raises(SemsegError, match="differs from target shape"):
        metric.update(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(SemsegError, match=r"values \[7\]"):
        metric.update(np.zeros((4, 4), np.uint8), np.full((4, 4), 7, np.uint8))
    with pytest.raises(SemsegError, match="integer class ids"):
        metric.update(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(SemsegError, match="cannot merge"):
        metric.merge(BoundaryIoU(3, dilation_ratio=0.05))


def test_report_and_table_carry_boundary_iou():
    pairs = generated_pairs()
    matrix, boundary = ConfusionMatrix(5), BoundaryIoU(5)
    for pred, gt in pairs:
        matrix.update(pred, gt)
        boundary.update(pred, gt)
    scores = report(matrix, None, boundary)
    assert scores["mboundary_iou"] == pytest.approx(boundary.compute()["mboundary_iou"])
    assert scores["per_class"]["class_0"]["boundary_iou"] == pytest.approx(boundary.compute()["boundary_iou"][0])
    assert scores["boundary_dilation_ratio"] == 0.02
    table = format_report(scores)
    assert "bIoU" in table and "mBoundaryIoU" in table
    assert "bIoU" not in format_report(report(matrix))


def test_score_command_with_boundary(tmp_path, capsys):
    pairs = generated_pairs()
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    for i, (pred, gt) in enumerate(pairs):
        write_label_png(tmp_path / "pred" / f"{i}.png", pred)
        write_label_png(tmp_path / "gt" / f"{i}.png", gt)
    out = tmp_path / "s.json"
    args = ["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--num-classes", "5", "--json", str(out)]
    assert main(args + ["--boundary"]) == 0
    scores = json.loads(out.read_text())
    assert scores["mboundary_iou"] == pytest.approx(np.nanmean(reference_scores(pairs, 5)))
    assert "mBoundaryIoU" in capsys.readouterr().out
    assert main(args + ["--boundary", "0.1"]) == 0
    assert json.loads(out.read_text())["mboundary_iou"] == pytest.approx(np.nanmean(reference_scores(pairs, 5, ratio=0.1)))
    assert main(args + ["--boundary", "2"]) == 2
    assert "dilation_ratio must lie in (0, 1]" in capsys.readouterr().err

"""PIDNet's boundary losses against hand-computed values, and how the trainer adds every training head's loss."""

from __future__ import annotations

import math

import torch

from semseg.engine.loop import training_loss
from semseg.losses import create_loss
from semseg.losses.boundary import boundary_loss, boundary_map, weighted_boundary_bce

# 3 classes: 0 left, 1 right, the last row ignored
TARGET = torch.tensor([[[0, 0, 0, 1, 1, 1],
                        [0, 0, 0, 1, 1, 1],
                        [0, 0, 0, 1, 1, 1],
                        [255, 255, 255, 255, 255, 255]]])


def test_boundary_map_marks_pixels_near_another_labelled_class():
    near = torch.zeros(1, 4, 6, dtype=torch.bool)
    near[0, :3, 2:4] = True  # radius 1: the two columns along the change of class
    assert torch.equal(boundary_map(TARGET, 255, radius=1), near)
    near[0, :3, 1:5] = True  # radius 2: two columns on each side
    assert torch.equal(boundary_map(TARGET, 255, radius=2), near)
    # void next to a class is no boundary, and a map of one class has none
    assert not boundary_map(torch.where(TARGET == 1, 0, TARGET), 255, radius=1).any()


def test_weighted_bce_balances_boundary_and_other_pixels():
    edges = boundary_map(TARGET, 255, radius=1)  # 6 boundary pixels, 12 others, 6 ignored
    valid = TARGET != 255
    logits = torch.where(edges, 2.0, 0.0)
    logits[~valid] = 5.0  # ignored: must not count
    # boundary pixels weigh 12/18, the others 6/18; mean over the 18 valid pixels
    expected = (6 * (12 / 18) * math.log1p(math.exp(-2.0)) + 12 * (6 / 18) * math.log(2.0)) / 18
    got = weighted_boundary_bce(logits[:, None], edges, valid)
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    nothing = torch.zeros_like(valid)
    assert float(weighted_boundary_bce(logits[:, None], edges, nothing)) == 0.0


def test_boundary_awareness_loss_is_the_criterion_on_confident_boundary_pixels():
    criterion = create_loss("ce", 3, ignore_index=255)
    logits = torch.zeros(1, 3, 4, 6, requires_grad=True)
    with torch.no_grad():
        logits[0, 0, 0, 0] = 2.0  # pixel (0, 0), class 0: CE = log(1 + 2 e^-2)
    boundary = torch.full((1, 1, 4, 6), -5.0, requires_grad=True)
    with torch.no_grad():
        boundary[0, 0, 0, 0] = boundary[0, 0, 0, 5] = 2.0  # sigmoid(2) = 0.88 > 0.8; (0, 5) is class 1: CE = log 3
        boundary[0, 0, 1, 1] = 1.0  # sigmoid(1) = 0.73: not marked
    aware = boundary_loss(boundary, logits, TARGET, criterion, 255, bce_weight=0.0)
    assert math.isclose(aware.item(), (math.log1p(2 * math.exp(-2.0)) + math.log(3.0)) / 2, rel_tol=1e-6)
    aware.backward()
    assert not boundary.grad.any()  # which pixels count is not differentiated
    assert logits.grad[0, :, 0, 0].any() and not logits.grad[0, :, 2, 2].any()


def test_boundary_loss_weighs_the_two_terms_as_the_paper():
    criterion = create_loss("ce", 3, ignore_index=255)
    torch.manual_seed(0)
    logits, boundary = torch.randn(1, 3, 4, 6), torch.randn(1, 1, 4, 6) * 3
    bce = weighted_boundary_bce(boundary, boundary_map(TARGET, 255), TARGET != 255)
    aware = boundary_loss(boundary, logits, TARGET, criterion, 255, bce_weight=0.0)
    total = boundary_loss(boundary, logits, TARGET, criterion, 255)
    torch.testing.assert_close(total, 20 * bce + aware)


def test_trainer_adds_every_aux_head_and_the_boundary_loss():
    criterion = create_loss("ce", 3, ignore_index=255)
    torch.manual_seed(0)
    outputs = {"out": torch.randn(1, 3, 4, 6), "aux": torch.randn(1, 3, 4, 6), "aux2": torch.randn(1, 3, 4, 6),
               "boundary": torch.randn(1, 1, 4, 6)}

    got = training_loss(outputs, TARGET, criterion, 0.5, 255)
    expected = (criterion(outputs["out"], TARGET) + 0.5 * criterion(outputs["aux"], TARGET)
                + 0.5 * criterion(outputs["aux2"], TARGET)
                + boundary_loss(outputs["boundary"], outputs["out"], TARGET, criterion, 255))
    torch.testing.assert_close(got, expected)
    del outputs["aux2"], outputs["boundary"]  # what every other zoo model returns: unchanged
    torch.testing.assert_close(training_loss(outputs, TARGET, criterion, 0.5, 255),
                               criterion(outputs["out"], TARGET) + 0.5 * criterion(outputs["aux"], TARGET))

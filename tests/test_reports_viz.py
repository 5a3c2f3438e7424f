"""Palettes, colorize, overlays, legend and the evaluation panel."""

from __future__ import annotations

import numpy as np
import pytest

from semseg.errors import SemsegError
from semseg.reports.viz import colorize, generate_palette, legend, overlay, panel

PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0]]


@pytest.mark.parametrize("n", [0, 1, 11, 21, 150, 1000])
def test_generated_palettes_have_distinct_colours(n):
    palette = generate_palette(n)
    assert len(palette) == n
    assert len({tuple(c) for c in palette}) == n
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette)


def test_colorize_maps_ids_and_ignore():
    labels = np.array([[0, 1], [2, 255]])
    out = colorize(labels, PALETTE, ignore_index=255, ignore_color=(7, 7, 7))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 0].tolist() == [0, 200, 0]
    assert out[1, 1].tolist() == [7, 7, 7]


def test_colorize_rejects_ids_without_a_colour():
    with pytest.raises(SemsegError, match=r"label ids \[5\] have no colour"):
        colorize(np.array([[0, 5]]), PALETTE)
    with pytest.raises(SemsegError, match="2-D"):
        colorize(np.zeros((2, 2, 1), int), PALETTE)


def test_overlay_blends_and_keeps_ignored_pixels(monkeypatch):
    import semseg.reports.viz as viz

    monkeypatch.setattr(viz, "BAND_ROWS", 2)  # several bands
    image = np.full((5, 4, 3), 100, np.uint8)
    labels = np.ones((5, 4), int)
    labels[4, 3] = 255
    out = overlay(image, labels, PALETTE, alpha=0.5)
    assert out[0, 0].tolist() == [150, 50, 50]  # (100 + 200) / 2, (100 + 0) / 2
    assert out[4, 3].tolist() == [100, 100, 100]
    assert overlay(image, labels, PALETTE, alpha=0.0)[0, 0].tolist() == [100, 100, 100]
    assert overlay(image, labels, PALETTE, alpha=1.0)[0, 0].tolist() == [200, 0, 0]


def test_overlay_checks_its_inputs():
    with pytest.raises(SemsegError, match="differ in size"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4), int), PALETTE)
    with pytest.raises(SemsegError, match="alpha"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), int), PALETTE, alpha=1.5)


def test_legend_shows_a_swatch_per_class():
    picture = legend(["sky", "building", "tree"], PALETTE)
    assert picture.dtype == np.uint8 and picture.ndim == 3
    colours = {tuple(c) for c in picture.reshape(-1, 3).tolist()}
    assert {(10, 20, 30), (200, 0, 0), (0, 200, 0)} <= colours
    with pytest.raises(SemsegError, match="palette colours"):
        legend(["a", "b", "c", "d"], PALETTE)


def test_panel_shows_image_truth_and_prediction_side_by_side():
    image = np.full((30, 40, 3), 90, np.uint8)
    truth = np.zeros((30, 40), int)
    truth[:, 20:] = 255
    prediction = np.full((30, 40), 2)
    figure = panel(image, truth, prediction, PALETTE, ["sky", "building", "tree"], ignore_index=255)
    assert figure.dtype == np.uint8 and figure.shape[1] >= 3 * 40 and figure.shape[0] > 30
    assert figure[25, 5].tolist() == [90, 90, 90]  # the image, below its title
    assert figure[25, 44 + 5].tolist() == [10, 20, 30]  # truth class 0
    assert figure[25, 44 + 25].tolist() == [0, 0, 0]  # ignored truth is black
    assert figure[25, 88 + 5].tolist() == [0, 200, 0]  # prediction class 2
    legend_colours = {tuple(c) for c in figure[50:].reshape(-1, 3).tolist()}
    assert (10, 20, 30) in legend_colours and (0, 200, 0) in legend_colours
    assert (200, 0, 0) not in legend_colours  # absent classes are left out of the legend


def test_panel_needs_one_size():
    with pytest.raises(SemsegError, match="one size"):
        panel(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), int), np.zeros((4, 5), int), PALETTE)


def test_with_legend_keeps_the_picture_and_lists_the_classes_shown():
    from semseg.reports.viz import with_legend

    picture = np.full((40, 30, 3), 7, np.uint8)
    labels = np.zeros((40, 30), int)
    labels[:, 15:] = 2
    out = with_legend(picture, ["sky", "building", "tree"], PALETTE, labels)
    assert np.array_equal(out[:40, :30], picture) and out.shape[1] > 30
    colours = {tuple(c) for c in out[:, 30:].reshape(-1, 3).tolist()}
    assert tuple(PALETTE[0]) in colours and tuple(PALETTE[2]) in colours and tuple(PALETTE[1]) not in colours

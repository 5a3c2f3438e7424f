"""The collapse warning: a model that predicts one class everywhere is named as such by predict, val and the demo."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from semseg.metrics import collapse_warning
from semseg.predict import Predictor, predict_files

from test_predict import ToySeg


def test_one_class_on_99_percent_of_pixels_is_a_collapse():
    names = ["sky", "road", "car"]
    warning = collapse_warning(np.array([995, 5, 0]), names, what="3 images")
    assert warning is not None and "'sky' on 99.5% of the pixels of the 3 images" in warning
    assert collapse_warning(np.array([980, 15, 5]), names) is None  # 98%: a dominant class, not a collapse
    assert collapse_warning(np.zeros(3, np.int64), names) is None  # nothing predicted
    assert "class 7" in collapse_warning(np.eye(8, dtype=np.int64)[7] * 100, names)  # beyond the names


def test_no_collapse_when_the_truth_itself_is_one_class():
    # a frame of sky only, predicted as sky only, is right, not collapsed
    assert collapse_warning(np.array([1000, 0]), ["sky", "road"], gt_pixels=np.array([1000, 0])) is None
    assert collapse_warning(np.array([1000, 0]), ["sky", "road"], gt_pixels=np.array([600, 400])) is not None


class OneClass(ToySeg):
    """The toy model whose head always prefers class 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 4, *x.shape[-2:])
        logits[:, 2] = 1.0
        return logits


def _images(folder, count=2):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return sorted(folder.glob("*.png"))


@pytest.mark.parametrize("model, collapsed", [(OneClass(), True), (ToySeg(), False)])
def test_predict_warns_when_all_predictions_are_one_class(tmp_path, caplog, model, collapsed):
    files = _images(tmp_path / "in")
    with caplog.at_level(logging.WARNING, logger="semseg"):
        assert predict_files(Predictor(model), files, tmp_path / "out") == []
    warned = [r.getMessage() for r in caplog.records if "collapsed to one class" in r.getMessage()]
    assert bool(warned) == collapsed
    if collapsed:
        assert "'c' on 100.0% of the pixels of the 2 predicted image(s)" in warned[0]

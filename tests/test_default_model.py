"""The embedded default model: shipped inside the package, CamVid's metadata, any image size, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semseg.cli import main
from semseg.data.formats import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from semseg.predict import Predictor
from semseg.models.factory import DEFAULT_MODEL_PATH
from semseg.io import read_label_map
from semseg.metrics import ConfusionMatrix
from semseg.models import load_model

DEMO = Path(DEFAULT_MODEL_PATH).parent / "demo"


@pytest.fixture(scope="module")
def default_model():
    assert DEFAULT_MODEL_PATH.is_file(), f"the default model is not shipped at {DEFAULT_MODEL_PATH}"
    return load_model(DEFAULT_MODEL_PATH)


def test_the_default_model_is_one_small_file_inside_the_package():
    assert DEFAULT_MODEL_PATH.parent.name == "assets" and DEFAULT_MODEL_PATH.parent.parent.name == "semseg"
    assert DEFAULT_MODEL_PATH.stat().st_size <= 10 * 2**20
    assert sorted(p.name for p in DEFAULT_MODEL_PATH.parent.glob("*.pt")) == ["default_model.pt"]


def test_the_default_model_carries_camvid_metadata(default_model):
    cfg = default_model.pretrained_cfg
    assert cfg.num_classes == 11 and cfg.class_names == list(CAMVID_CLASSES)
    assert [tuple(c) for c in cfg.palette] == list(CAMVID_PALETTE)
    assert len(cfg.mean) == 3 and len(cfg.std) == 3 and all(s > 0 for s in cfg.std)
    assert cfg.tta_scales and 1.0 in cfg.tta_scales


def test_the_default_model_predicts_any_image_size(default_model):
    rng = np.random.default_rng(0)
    odd = rng.integers(0, 255, (97, 131, 3), dtype=np.uint8)
    labels = Predictor(default_model)(odd)
    assert labels.shape == (97, 131) and labels.max() < 11


def test_the_default_model_segments_street_scenes(default_model):
    """A trained model, not random weights: the demo's CamVid frames (downscaled 2x) are mostly right.

    The frames come from CamVid train and val, which the default model was trained on, so
    this checks that the shipped weights are the trained ones, not how well they generalise
    (BENCHMARKS.md has the held-out numbers).
    """
    predictor = Predictor(default_model, tta=False)
    scores = ConfusionMatrix(11, ignore_index=CAMVID_VOID)
    for split in ("val", "test"):
        for image in sorted((DEMO / split).glob("*.png")):
            scores.update(predictor(image), read_label_map(DEMO / f"{split}annot" / image.name))
    result = scores.compute()
    assert result["pixel_acc"] >= 0.8 and result["miou"] >= 0.4


def test_semseg_predict_uses_the_default_model_without_model_arguments(tmp_path, capsys):
    Image.fromarray(np.full((45, 61, 3), 128, np.uint8)).save(tmp_path / "street.png")
    assert main(["predict", str(tmp_path / "street.png"), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "labels" / "street.png").size == (61, 45)

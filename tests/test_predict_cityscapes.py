"""semseg predict --format cityscapes: labelId PNGs under the names the benchmark matches, scored by the official
cityscapesScripts evaluator (finding each prediction the way the server does) against semseg's own confusion matrix."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semseg.cli import main
from semseg.data.formats import TRAINID_TO_LABELID, labelid_to_trainid
from semseg.io import read_label_map
from semseg.metrics import ConfusionMatrix

cs_eval = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
NAMES = ["berlin_000000_000019", "berlin_000001_000019", "bonn_000002_000007"]


@pytest.fixture(scope="module")
def checkpoint_19(tmp_path_factory) -> Path:
    """A 19-class zoo model whose class biases spread its argmax over many classes."""
    from semseg.checkpoint import save_checkpoint
    from semseg.models import create_model

    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 19).eval()
    with torch.no_grad():
        for head in (model.net.classifier.low_classifier, model.net.classifier.high_classifier):
            head.weight.mul_(20)
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, path)
    return path


def test_cityscapes_results_score_with_the_official_evaluator(checkpoint_19, tmp_path):
    images = tmp_path / "leftImg8bit"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 255, (48, 96, 3), dtype=np.uint8)).save(images / f"{name}_leftImg8bit.png")
    ours_dir, cs_dir = tmp_path / "semseg", tmp_path / "cityscapes"
    assert main(["predict", str(images), "--checkpoint", str(checkpoint_19), "--out", str(ours_dir), "--precision", "fp32"]) == 0
    assert main(["predict", str(images), "--checkpoint", str(checkpoint_19), "--out", str(cs_dir), "--precision", "fp32",
                 "--format", "cityscapes"]) == 0

    # ground truth: the predicted trainIds with a quarter of the pixels changed and some left unlabelled (labelId 0)
    table = np.zeros(256, np.uint8)
    for train_id, label_id in TRAINID_TO_LABELID.items():
        table[train_id] = label_id
    cm = ConfusionMatrix(19)
    args = copy.copy(cs_eval.args)
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    args.predictionPath, args.predictionWalk = str(cs_dir / "labels"), None
    gt_files, pred_files = [], []
    for name in NAMES:
        train_ids = read_label_map(ours_dir / "labels" / f"{name}_leftImg8bit.png").astype(np.int64)
        written = read_label_map(cs_dir / "labels" / f"{name}_leftImg8bit.png")
        np.testing.assert_array_equal(written, table[train_ids])  # trainId -> labelId, nothing else
        gt_label_ids = table[train_ids].copy()
        change = rng.random(train_ids.shape) < 0.25
        gt_label_ids[change] = table[rng.integers(0, 19, int(change.sum()))]
        gt_label_ids[rng.random(train_ids.shape) < 0.1] = 0
        gt_path = tmp_path / "gtFine" / f"{name}_gtFine_labelIds.png"
        gt_path.parent.mkdir(exist_ok=True)
        Image.fromarray(gt_label_ids).save(gt_path)
        gt_files.append(str(gt_path))
        pred_files.append(cs_eval.getPrediction(args, str(gt_path)))  # the server's matching by CITY_SEQ_FRAME
        cm.update(train_ids, labelid_to_trainid(gt_label_ids))
    assert [Path(p).name for p in pred_files] == [f"{n}_leftImg8bit.png" for n in NAMES]
    theirs = cs_eval.evaluateImgLists(pred_files, gt_files, args)
    ours = cm.compute()
    assert (np.asarray(ours["iou"])[~np.isnan(ours["iou"])] > 0).sum() >= 3  # several classes predicted and scored
    for label in cs_eval.labels:
        if not label.ignoreInEval:
            iou = ours["iou"][label.trainId]
            assert (math.isnan(iou) and math.isnan(theirs["classScores"][label.name])) or \
                iou == pytest.approx(theirs["classScores"][label.name], abs=1e-6), label.name
    assert ours["miou"] == pytest.approx(theirs["averageScoreClasses"], abs=1e-6)


def test_cityscapes_format_needs_cityscapes_names_and_19_classes(checkpoint_19, tmp_path, capsys):
    from semseg.checkpoint import save_checkpoint
    from semseg.models import create_model

    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    assert main(["predict", str(image), "--checkpoint", str(checkpoint_19), "--out", str(tmp_path / "o"),
                 "--format", "cityscapes"]) == 2
    err = capsys.readouterr().err
    assert "frame.png: --format cityscapes needs Cityscapes file names" in err and len(err.strip().splitlines()) == 1
    named = tmp_path / "in" / "ulm_000001_000002_leftImg8bit.png"
    named.parent.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(named)
    model = create_model("lraspp_mobilenet_v3_large", 4)
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, tmp_path / "four.pt")
    assert main(["predict", str(named), "--checkpoint", str(tmp_path / "four.pt"), "--out", str(tmp_path / "o"),
                 "--format", "cityscapes"]) == 2
    assert "the model predicts 4 classes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["predict", str(named), "--checkpoint", str(checkpoint_19), "--out", str(tmp_path / "o"), "--format", "voc"])
    assert exit_info.value.code == 2 and "invalid choice: 'voc'" in capsys.readouterr().err

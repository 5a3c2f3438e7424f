"""Logit adjustment on a holdout: subtract ``alpha * log(w_c)`` from the logits of a checkpoint trained with
class weights ``w_c`` (the weights its training stored), and score each alpha on labelled frames.

Weighted cross-entropy moves the decision toward class c by ``log w_c``; alpha takes back that share
(Menon et al., "Long-tail learning via logit adjustment", ICLR 2021), through the model's
``pretrained_cfg.logit_offset`` as ``semseg export --logit-adjust ALPHA`` records it. Whole images,
fp32; ``--tta-scales`` adds the flip + multi-scale TTA the default model recommends.

    python benchmarks/logit_adjustment.py RUN/last.pt HOLDOUT/val HOLDOUT/valannot --alphas 0 0.5 1 [--tta-scales 1 1.25 1.5]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from semseg.checkpoint import load_checkpoint
from semseg.io import list_images, read_image, read_label_map
from semseg.losses.weights import logit_adjustment
from semseg.metrics import ConfusionMatrix
from semseg.models import load_model
from semseg.predict import Predictor


def score_alphas(model: torch.nn.Module, weights: list[float], frames: list[Path], labels_dir: str,
                 alphas: list[float], tta_scales: list[float] | None = None, ignore_index: int = 11) -> list[str]:
    """One line per alpha: mIoU, pixel accuracy, IoU per class and predicted / true pixels per class of
    ``model`` on ``frames`` against the label maps of the same names in ``labels_dir``."""
    names = model.pretrained_cfg.class_names
    lines = []
    for alpha in alphas:
        model.pretrained_cfg = replace(model.pretrained_cfg, logit_offset=logit_adjustment(weights, alpha))
        predictor = Predictor(model, precision="fp32", tta=bool(tta_scales), scales=tta_scales)
        matrix = ConfusionMatrix(len(weights), ignore_index=ignore_index)
        for frame in frames:
            truth = read_label_map(Path(labels_dir) / f"{frame.stem}.png")
            matrix.update(torch.from_numpy(predictor.predict(read_image(frame)).labels.astype(np.int64)),
                          torch.from_numpy(truth.astype(np.int64)))
        scores = matrix.compute()
        predicted_over_true = scores["pred_pixels"] / np.maximum(scores["gt_pixels"], 1)
        lines.append(f"alpha {alpha:4.2f}  mIoU {100 * scores['miou']:5.2f}  pixel acc {100 * scores['pixel_acc']:5.1f}  "
                     + " ".join(f"{n}:{100 * v:.0f}" for n, v in zip(names, scores["iou"]))
                     + "  | predicted/true pixels " + " ".join(f"{r:.1f}" for r in predicted_over_true))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("frames", help="folder of images")
    parser.add_argument("labels", help="folder of PNG label maps of the frames' names")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--ignore-index", type=int, default=11)
    parser.add_argument("--tta-scales", type=float, nargs="+", default=None, help="predict with flip + these scales")
    args = parser.parse_args()
    weights = load_checkpoint(args.checkpoint).get("class_weights")
    if not weights:
        raise SystemExit(f"{args.checkpoint}: trained without class weights; nothing to adjust")
    model = load_model(args.checkpoint)
    frames = list_images(args.frames)
    print(f"{len(frames)} frames; class weights {[round(w, 2) for w in weights]}; "
          f"TTA scales {args.tta_scales}")
    for line in score_alphas(model, weights, frames, args.labels, args.alphas, args.tta_scales, args.ignore_index):
        print(line)


if __name__ == "__main__":
    main()

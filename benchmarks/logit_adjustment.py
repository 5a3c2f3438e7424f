"""Logit adjustment on a holdout: subtract ``alpha * log(w_c)`` from the logits of a checkpoint trained with
class weights ``w_c`` (the weights its training stored), and score each alpha on labelled frames.

Weighted cross-entropy moves the decision toward class c by ``log w_c``; alpha takes back that share
(Menon et al., "Long-tail learning via logit adjustment", ICLR 2021). The offset is added to the bias of
the LR-ASPP head's high-resolution classifier (its logits are the sum of two 1x1 convolutions, and a
bilinear upsampling keeps a constant offset), so this script takes LR-ASPP checkpoints only.
Whole images, no TTA, fp32; the CamVid class names of the table in BENCHMARKS.md.

    python benchmarks/logit_adjustment.py RUN/last.pt HOLDOUT/val HOLDOUT/valannot --alphas 0 0.5 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from semseg.checkpoint import load_checkpoint
from semseg.io import read_image, read_label_map
from semseg.metrics import ConfusionMatrix
from semseg.models import load_model
from semseg.predict import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("frames", help="folder of images")
    parser.add_argument("labels", help="folder of label maps of the same names")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--ignore-index", type=int, default=11)
    args = parser.parse_args()
    weights = load_checkpoint(args.checkpoint).get("class_weights")
    if not weights:
        raise SystemExit(f"{args.checkpoint}: trained without class weights; nothing to adjust")
    model = load_model(args.checkpoint)
    bias = model.net.classifier.high_classifier.bias
    trained = bias.detach().clone()
    log_weights = torch.log(torch.tensor(weights, dtype=torch.float32))
    frames = sorted(Path(args.frames).glob("*.png"))
    names = model.pretrained_cfg.class_names
    print(f"{len(frames)} frames; class weights {[round(w, 2) for w in weights]}")
    for alpha in args.alphas:
        with torch.no_grad():
            bias.copy_(trained - alpha * log_weights)
        predictor = Predictor(model, precision="fp32", tta=False)
        matrix = ConfusionMatrix(len(weights), ignore_index=args.ignore_index)
        for frame in frames:
            truth = read_label_map(Path(args.labels) / frame.name)
            matrix.update(torch.from_numpy(predictor.predict(read_image(frame)).labels.astype(np.int64)),
                          torch.from_numpy(truth.astype(np.int64)))
        scores = matrix.compute()
        predicted_over_true = scores["pred_pixels"] / np.maximum(scores["gt_pixels"], 1)
        print(f"alpha {alpha:4.2f}  mIoU {100 * scores['miou']:5.2f}  pixel acc {100 * scores['pixel_acc']:5.1f}  "
              + " ".join(f"{n}:{100 * v:.0f}" for n, v in zip(names, scores["iou"]))
              + "  | predicted/true pixels " + " ".join(f"{r:.1f}" for r in predicted_over_true))


if __name__ == "__main__":
    main()

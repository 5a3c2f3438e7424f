"""Do per-class logit offsets fitted on one held-out sequence help on another? (issue 15)

``semseg export --logit-adjust ALPHA`` moves every class's logit by one rule with one
parameter, ``-ALPHA * log(w_c)``. A per-class offset (eleven parameters) fitted to
maximize mIoU on a held-out sequence can do more on that sequence; this measures whether
it carries over to another one, which is what a shipped offset would need. Given two
folds (a checkpoint trained without a sequence, and that sequence's frames and labels),
it predicts each fold's frames once (flip + scales TTA, or none), fits offsets on each
by coordinate ascent from ALPHA 0.5, and scores every fold with: ALPHA 0, 0.5 and 1; its
own fitted offsets (the optimistic, in-sample figure); the other fold's fitted offsets.

    python benchmarks/class_offsets.py --fold RUN_A/last.pt FRAMES_A LABELS_A --fold RUN_B/last.pt FRAMES_B LABELS_B \
        [--tta-scales 1 1.25 1.5]

Every second row and column of each frame is scored (labels subsampled by nearest
neighbour); the fit uses every second of those labelled pixels.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from semseg.checkpoint import load_checkpoint
from semseg.io import read_image, read_label_map
from semseg.losses.weights import logit_adjustment
from semseg.models import load_model
from semseg.predict import Predictor


def fold_log_probs(checkpoint: str, frames: str, labels: str, ignore_index: int,
                   tta_scales: list[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(log-probabilities [C, P], labels [P], class weights [C])`` over the labelled pixels of every second row and column."""
    weights = load_checkpoint(checkpoint).get("class_weights")
    if not weights:
        raise SystemExit(f"{checkpoint}: trained without class weights; the offsets start from its logit adjustment")
    model = load_model(checkpoint)
    model.pretrained_cfg = replace(model.pretrained_cfg, logit_offset=None)
    predictor = Predictor(model, precision="fp32", tta=bool(tta_scales), scales=tta_scales)
    log_probs, truths = [], []
    for frame in sorted(Path(frames).glob("*.png")):
        probs = predictor.predict(read_image(frame), probs=True).probs[:, ::2, ::2]
        truth = read_label_map(Path(labels) / frame.name)[::2, ::2].reshape(-1)
        keep = truth != ignore_index
        log_probs.append(np.log(np.maximum(probs.reshape(len(probs), -1)[:, keep], 1e-8)))
        truths.append(truth[keep].astype(np.int64))
    return np.concatenate(log_probs, 1), np.concatenate(truths), np.asarray(weights)


def scores(log_probs: np.ndarray, truth: np.ndarray, offsets: np.ndarray) -> tuple[float, np.ndarray]:
    """mIoU and per-class IoU of ``argmax(log_probs + offsets)``."""
    classes = len(offsets)
    predicted = np.argmax(log_probs + offsets[:, None], 0)
    matrix = np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    iou = np.diag(matrix) / np.maximum(matrix.sum(0) + matrix.sum(1) - np.diag(matrix), 1)
    return float(iou.mean()), iou


def fit_offsets(log_probs: np.ndarray, truth: np.ndarray, start: np.ndarray, sweeps: int = 3) -> np.ndarray:
    """Per-class offsets maximizing mIoU, by coordinate ascent over -1.5..1.5 around ``start`` (steps of 0.1)."""
    offsets, best = start.copy(), scores(log_probs, truth, start)[0]
    for _ in range(sweeps):
        for c in range(len(offsets)):
            for step in np.arange(-1.5, 1.51, 0.1):
                trial = offsets.copy()
                trial[c] = start[c] + step
                value = scores(log_probs, truth, trial)[0]
                if value > best + 1e-6:
                    best, offsets = value, trial
    return offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", nargs=3, action="append", required=True, metavar=("CHECKPOINT", "FRAMES", "LABELS"))
    parser.add_argument("--ignore-index", type=int, default=11)
    parser.add_argument("--tta-scales", type=float, nargs="+", default=None, help="predict with flip + these scales")
    args = parser.parse_args()
    if len(args.fold) != 2:
        raise SystemExit("give exactly two --fold CHECKPOINT FRAMES LABELS")
    folds = [fold_log_probs(*fold, args.ignore_index, args.tta_scales) for fold in args.fold]
    fitted = []
    for log_probs, truth, weights in folds:
        start = np.asarray(logit_adjustment(weights.tolist(), 0.5))
        beyond = fit_offsets(log_probs[:, ::2], truth[::2], start) - start  # what the fit adds to ALPHA 0.5
        fitted.append(beyond - beyond.mean())  # centred: a constant added to every logit changes no argmax
    print(f"TTA scales {args.tta_scales}; mIoU on every second pixel; IoU per class in the checkpoint's class order")
    for index, ((log_probs, truth, weights), fold) in enumerate(zip(folds, args.fold)):
        adjust = lambda alpha: np.asarray(logit_adjustment(weights.tolist(), alpha))  # noqa: E731
        rows = {
            "alpha 0": adjust(0.0),
            "alpha 0.5": adjust(0.5),
            "alpha 1": adjust(1.0),
            "alpha 0.5 + own fitted offsets (in-sample)": adjust(0.5) + fitted[index],
            "alpha 0.5 + the other fold's fitted offsets": adjust(0.5) + fitted[1 - index],
        }
        print(f"\n{fold[1]} ({fold[0]})")
        for name, offsets in rows.items():
            miou, iou = scores(log_probs, truth, offsets)
            print(f"  {name:45s} mIoU {100 * miou:5.2f} | " + " ".join(f"{100 * v:.0f}" for v in iou))
        print("  fitted offsets beyond alpha 0.5: " + " ".join(f"{v:+.2f}" for v in fitted[index]))


if __name__ == "__main__":
    main()

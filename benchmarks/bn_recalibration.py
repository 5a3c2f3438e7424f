"""BatchNorm statistics re-estimated after training ("precise BN"), scored on a holdout.

A run's BatchNorm running statistics are an exponential average (momentum 0.1) over its last
few dozen training batches; at batch 4 that is about 40 crops. Re-estimating them over all of
the run's training frames with the final weights (Wu & Johnson, 2021, "Rethinking 'Batch' in
BatchNorm", section 3) is a post-hoc change that costs no training time, so it is measured
here on a finished run: the checkpoint's statistics as trained, then recomputed by
``torch.optim.swa_utils.update_bn`` (a plain average over the batches) over the training
frames of the run's own config (its ``data.train_split`` less its held-out ``data.val_split``),
once as whole frames without augmentation and once over two passes with the training
augmentation. Each is scored with ``logit_adjustment.py``'s scoring.

    cd benchmarks && python bn_recalibration.py RUN/last.pt HOLDOUT/val HOLDOUT/valannot [--alphas 0 0.5]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time

import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from logit_adjustment import score_alphas
from semseg.checkpoint import load_checkpoint
from semseg.config import load_config
from semseg.data import build_dataset, train_transform
from semseg.data.transforms import eval_transform
from semseg.io import list_images
from semseg.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("frames", help="folder of held-out images")
    parser.add_argument("labels", help="folder of PNG label maps of the frames' names")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--batch", type=int, default=4, help="images per BatchNorm batch (the recipe's batch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    saved = load_checkpoint(args.checkpoint)
    weights = saved["class_weights"]
    data = load_config(base=saved["config"]).data
    trained = load_model(args.checkpoint)
    holdout_frames = list_images(args.frames)
    for line in score_alphas(trained, weights, holdout_frames, args.labels, args.alphas):
        print(f"as trained             {line}", flush=True)
    for label, transform, passes in (("whole frames, 1 pass ", eval_transform(data), 1),
                                     ("train augmentation, 2", train_transform(data), 2)):
        torch.manual_seed(args.seed)
        frames = build_dataset(data, data.train_split, transform)
        loader = DataLoader(frames, batch_size=args.batch, shuffle=True, num_workers=1)
        model = copy.deepcopy(trained).train()
        start = time.perf_counter()
        update_bn(itertools.chain.from_iterable((images for images, _ in loader) for _ in range(passes)), model)
        model.eval()
        print(f"# {label}: statistics over {len(frames)} training frames in {time.perf_counter() - start:.0f} s")
        for line in score_alphas(model, weights, holdout_frames, args.labels, args.alphas):
            print(f"{label}  {line}", flush=True)


if __name__ == "__main__":
    main()

"""Loss cost per training step on CPU: semseg's losses beside the one a user would otherwise call.

One CamVid-sized batch (8 x 11 classes x 360 x 480, about 5% void pixels), forward
plus backward, in float32. The logits look well trained (noise, the true class raised
by 5.5): about 4% of the pixels have a true-class probability below 0.7, so OHEM tops
them up to min_kept = 100000 with a selection pass. Baselines: ``F.cross_entropy``
for ce, smp 0.6.0's ``DiceLoss`` / ``LovaszLoss`` / ``FocalLoss`` (multiclass; smp's focal and Dice
compute other quantities, see docs/losses.md, but they are what a user would reach
for). OHEM has no library baseline: it is timed against ``F.cross_entropy``.
Repeats are interleaved so both sides see the same machine load.

    .venv/bin/python benchmarks/bench_losses.py [--repeats 5] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, LovaszLoss

from semseg.losses import create_loss

IGNORE = 255
CLASSES = 11


def step_seconds(loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor) -> float:
    logits = logits.detach().requires_grad_()
    start = time.perf_counter()
    loss_fn(logits, target).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, CLASSES, (args.batch, 360, 480), generator=gen)
    logits = torch.randn(args.batch, CLASSES, 360, 480, generator=gen) + 5.5 * F.one_hot(target, CLASSES).permute(0, 3, 1, 2)
    target[torch.rand(target.shape, generator=gen) < 0.05] = IGNORE

    pairs = {
        "ce": (create_loss("ce", CLASSES), lambda x, t: F.cross_entropy(x, t, ignore_index=IGNORE)),
        "ohem": (create_loss("ohem", CLASSES), lambda x, t: F.cross_entropy(x, t, ignore_index=IGNORE)),
        "focal": (create_loss("focal", CLASSES), FocalLoss("multiclass", ignore_index=IGNORE)),
        "dice": (create_loss("dice", CLASSES), DiceLoss("multiclass", ignore_index=IGNORE)),
        "lovasz": (create_loss("lovasz", CLASSES), LovaszLoss("multiclass", ignore_index=IGNORE)),
    }
    times = {name: ([], []) for name in pairs}
    for _ in range(args.repeats):
        for name, (ours, baseline) in pairs.items():
            times[name][0].append(step_seconds(ours, logits, target))
            times[name][1].append(step_seconds(baseline, logits, target))
    print(f"batch {args.batch} x {CLASSES} x 360 x 480, forward+backward, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"{'loss':8} {'semseg ms':>10} {'baseline ms':>12} {'ratio':>6}  baseline")
    names = {"ce": "F.cross_entropy", "ohem": "F.cross_entropy", "focal": "smp FocalLoss", "dice": "smp DiceLoss", "lovasz": "smp LovaszLoss"}
    for name, (ours, base) in times.items():
        ours_ms, base_ms = 1000 * statistics.median(ours), 1000 * statistics.median(base)
        print(f"{name:8} {ours_ms:10.1f} {base_ms:12.1f} {ours_ms / base_ms:6.2f}  {names[name]}")


if __name__ == "__main__":
    main()

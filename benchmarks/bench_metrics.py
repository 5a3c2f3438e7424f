"""Confusion-matrix accumulation speed: semseg's ``ConfusionMatrix.update`` beside the usual baselines.

Baselines, timed in the same run on the same label maps:

* torchvision ``references/segmentation`` ``ConfusionMatrix.update`` (its
  algorithm copied below: a boolean mask, int64 indices, one bincount);
* torchmetrics ``MulticlassJaccardIndex.update`` (argument checks on, as users run it).

Label maps are realistic rather than uniform noise: smooth class regions, a
prediction that disagrees near boundaries, and a void band (the ignore index)
along ground-truth boundaries. Repeats are interleaved, in a rotating order,
so that every implementation sees the same machine load; ratios are taken
within a repeat. A sample is the mean of as many updates as fill 0.2 s.
Every implementation's matrix is checked against semseg's.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

from semseg.metrics import ConfusionMatrix, counting

IGNORE = 255
# Each sample times as many updates as fill about this long: one 3 ms update alone is mostly timer and
# scheduler noise on a shared machine.
SAMPLE_SECONDS = 0.2
CASES = [  # (batch, height, width, classes): a CamVid validation batch, Cityscapes frames
    (8, 360, 480, 11),
    (1, 1024, 2048, 19),
    (4, 1024, 2048, 19),
]


class ReferencesConfusionMatrix:
    """torchvision references/segmentation/utils.py ``ConfusionMatrix``, update as written there."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.mat: torch.Tensor | None = None

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        n = self.num_classes
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=a.device)
        with torch.inference_mode():
            k = (a >= 0) & (a < n)
            inds = n * a[k].to(torch.int64) + b[k]
            self.mat += torch.bincount(inds, minlength=n**2).reshape(n, n)


def label_maps(batch: int, height: int, width: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) uint8 [N, H, W]: smooth regions, boundary errors, a void band in the target."""
    g = torch.Generator().manual_seed(seed)
    small = (height // 4, width // 4)  # drawn at 1/4 size, then repeated: cheap, and still blob-shaped
    logits = F.interpolate(torch.randn(batch, classes, height // 64 + 2, width // 64 + 2, generator=g), size=small,
                           mode="bilinear", align_corners=False)
    noise = F.interpolate(torch.randn(batch, classes, height // 16 + 2, width // 16 + 2, generator=g), size=small,
                          mode="bilinear", align_corners=False)
    top2 = logits.topk(2, dim=1).values
    target = logits.argmax(1).to(torch.uint8)
    target[(top2[:, 0] - top2[:, 1]) < 0.03] = IGNORE  # void along boundaries, about 5% of the pixels
    pred = (logits + 0.3 * noise).argmax(1).to(torch.uint8)

    def upsample(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :height, :width].contiguous()

    return upsample(pred), upsample(target)


def update_in_one_part(cm: ConfusionMatrix, pred: torch.Tensor, target: torch.Tensor) -> None:
    """semseg's update counting the whole batch in one part on the calling thread.

    (It normally splits a large batch into parts counted on a pool of threads.)
    """
    workers = counting._MAX_WORKERS
    counting._MAX_WORKERS = 1
    try:
        cm.update(pred, target)
    finally:
        counting._MAX_WORKERS = workers


def implementations(pred: torch.Tensor, target: torch.Tensor, classes: int) -> dict[str, tuple[Callable[[], None], Callable[[], np.ndarray]]]:
    """name -> (one update on the batch, the matrix accumulated so far)."""
    ours, ours64, one_part = (ConfusionMatrix(classes, IGNORE) for _ in range(3))
    refs = ReferencesConfusionMatrix(classes)
    jaccard = MulticlassJaccardIndex(num_classes=classes, ignore_index=IGNORE, average="macro")
    pred64, target64 = pred.long(), target.long()
    return {
        "semseg uint8": (lambda: ours.update(pred, target), lambda: ours.matrix),
        "semseg int64": (lambda: ours64.update(pred64, target64), lambda: ours64.matrix),
        "semseg 1 part": (lambda: update_in_one_part(one_part, pred, target), lambda: one_part.matrix),
        "torchvision refs": (lambda: refs.update(target.flatten(), pred.flatten()), lambda: refs.mat.numpy()),
        "torchmetrics": (lambda: jaccard.update(pred, target), lambda: jaccard.confmat.numpy()),
    }


def run_case(batch: int, height: int, width: int, classes: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per update for each implementation, one entry per repeat; matrices checked equal."""
    pred, target = label_maps(batch, height, width, classes, seed=height + classes)
    impls = implementations(pred, target, classes)
    names = list(impls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    calls = {}
    for name in names:  # warm-up (semseg compiles its loops on first use), then a timed call: calls per sample
        impls[name][0]()
        start = time.perf_counter()
        impls[name][0]()
        calls[name] = max(1, round(SAMPLE_SECONDS / (time.perf_counter() - start)))
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            start = time.perf_counter()
            for _ in range(calls[name]):
                impls[name][0]()
            seconds[name].append((time.perf_counter() - start) / calls[name])
    # every implementation counted the batch 2 + repeats * calls times: compare the counts per update
    updates = {name: 2 + repeats * calls[name] for name in names}
    expected = impls["semseg uint8"][1]()
    for name in names:
        if not np.array_equal(impls[name][1]() * updates["semseg uint8"], expected * updates[name]):
            raise SystemExit(f"{name} counted a different confusion matrix")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for every implementation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, load average "
          f"{os.getloadavg()[0]:.1f}, {args.repeats} interleaved repeats; megapixels/s (medians but 'best');")
    print("int64: semseg on int64 maps (argmax output, collated masks); 1 part: semseg without splitting over threads")
    print(f"{'label maps':<22} {'semseg uint8':>12} {'(best)':>6} {'int64':>6} {'1 part':>7} {'tv refs':>8}"
          f" {'torchmetrics':>12} {'x tv refs':>10} {'x torchmetrics':>14}")
    for batch, height, width, classes in CASES:
        seconds = run_case(batch, height, width, classes, args.repeats)
        pixels = batch * height * width
        rate = {name: pixels / statistics.median(times) / 1e6 for name, times in seconds.items()}
        # ratios within each repeat, so both sides saw the same load
        vs_refs = statistics.median(r / s for r, s in zip(seconds["torchvision refs"], seconds["semseg uint8"]))
        vs_tm = statistics.median(t / s for t, s in zip(seconds["torchmetrics"], seconds["semseg uint8"]))
        label = f"{batch}x{height}x{width}, C={classes}"
        best = pixels / min(seconds["semseg uint8"]) / 1e6
        print(f"{label:<22} {rate['semseg uint8']:>12.0f} {best:>6.0f} {rate['semseg int64']:>6.0f}"
              f" {rate['semseg 1 part']:>7.0f} {rate['torchvision refs']:>8.1f} {rate['torchmetrics']:>12.1f}"
              f" {vs_refs:>9.1f}x {vs_tm:>13.1f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

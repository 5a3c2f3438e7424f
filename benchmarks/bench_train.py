"""Training throughput: semseg's training step beside a plain fp32 PyTorch loop, in the same run.

The baseline is the torchvision references' step: NCHW fp32 model, F.cross_entropy
with ignore_index, SGD. semseg's step is the engine's: the precision `auto` picks for
this machine (on a CPU that computes bf16 natively, bf16 or fp32, whichever runs this
model's step faster, measured as `semseg train` measures it; else fp32), channels_last,
its loss module and parameter groups. Both train the same architecture on the same
batches; iterations alternate so that machine noise hits both alike.

    python benchmarks/bench_train.py --model lraspp_mobilenet_v3_large --batch 8 --crop 360 480 --iters 4
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from semseg.config import TrainConfig
from semseg.engine.optim import build_optimizer
from semseg.runtime.precision import (
    autocast,
    cpu_has_bf16,
    faster_precision,
    measures_precision,
    resolve_precision,
    time_precisions,
    use_channels_last,
)
from semseg.losses import create_loss
from semseg.models import create_model


def baseline_step(model, optimizer, images, masks):
    out = model(images)
    loss = F.cross_entropy(out, masks, ignore_index=255)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[360, 480])
    parser.add_argument("--iters", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cpu")
    images = torch.randn(args.batch, 3, *args.crop)
    masks = torch.randint(0, args.classes, (args.batch, *args.crop))

    plain = create_model(args.model, num_classes=args.classes)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    precision = resolve_precision("auto", device)
    channels_last = use_channels_last("auto", device)
    fast = create_model(args.model, num_classes=args.classes)
    cfg = TrainConfig(lr=0.01)
    fast_opt = build_optimizer(fast, cfg)
    criterion = create_loss("ce", args.classes)
    fast_images = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    if channels_last:
        fast.to(memory_format=torch.channels_last)

    def semseg_step(precision: str) -> None:
        with autocast(precision, device):
            loss = criterion(fast(fast_images).float(), masks)
        fast_opt.zero_grad(set_to_none=True)
        loss.backward()
        fast_opt.step()

    plain.train(), fast.train()
    measured = ""
    if measures_precision("auto", device):  # as semseg.engine.setup.measured_cpu_precision
        seconds = time_precisions(semseg_step)
        precision = faster_precision(seconds)
        measured = f" (measured: {', '.join(f'{s:.2f} s/step in {name}' for name, s in seconds.items())})"
    baseline_step(plain, plain_opt, images, masks)  # warm-up
    semseg_step(precision)
    t_plain = t_semseg = 0.0
    for _ in range(args.iters):
        start = time.perf_counter()
        baseline_step(plain, plain_opt, images, masks)
        t_plain += time.perf_counter() - start
        start = time.perf_counter()
        semseg_step(precision)
        t_semseg += time.perf_counter() - start
    n = args.iters * args.batch
    print(f"model {args.model}, batch {args.batch}, crop {args.crop[0]}x{args.crop[1]}, "
          f"threads {torch.get_num_threads()}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"CPU bf16: {cpu_has_bf16()}")
    print(f"plain fp32 loop : {n / t_plain:6.2f} img/s")
    print(f"semseg ({precision}{', channels_last' if channels_last else ''}): {n / t_semseg:6.2f} img/s{measured}")
    print(f"speed-up        : {t_plain / t_semseg:.2f}x")


if __name__ == "__main__":
    main()

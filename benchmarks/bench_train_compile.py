"""The CamVid recipe's training step four ways: eager or ``torch.compile``, NCHW or channels_last (issue 17, point 5).

Each variant is the engine's own step on its own copy of the same model (the
recipe's LR-ASPP, its loss with class weights, AdamW with its parameter groups),
fed the same batches; the variants take turns step by step so that machine noise
hits all of them alike. The first compiled steps (compilation) are timed apart
and excluded from the steady-state figures; the compile cost is printed, since a
60-minute run pays it once.

    OMP_NUM_THREADS=2 python benchmarks/bench_train_compile.py --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from semseg.config import TrainConfig
from semseg.engine.optim import build_optimizer
from semseg.losses import create_loss
from semseg.models import create_model
from semseg.runtime.precision import cpu_has_bf16

VARIANTS = ("eager", "eager+channels_last", "compile", "compile+channels_last")


def make_step(variant: str, args: argparse.Namespace, classes: int):
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=classes)
    for module in model.modules():  # the recipe's model.bn_momentum
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    model.train()
    channels_last = "channels_last" in variant
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, TrainConfig(optimizer="adamw", lr=0.002, weight_decay=0.01))
    criterion = create_loss("ce", classes, class_weights=torch.linspace(0.5, 2.0, classes))
    forward = torch.compile(model) if variant.startswith("compile") else model

    def step(images: torch.Tensor, masks: torch.Tensor) -> float:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        loss = criterion(forward(images).float(), masks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[360, 480], help="the recipe's crop (configs/camvid.yaml)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant, after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation happens here)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    classes = 11
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_bf16()}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"model {args.model}, batch {args.batch}, crop {args.crop[0]}x{args.crop[1]}, fp32")
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(args.batch, 3, *args.crop, generator=generator),
                torch.randint(0, classes, (args.batch, *args.crop), generator=generator)) for _ in range(4)]
    steps = {variant: make_step(variant, args, classes) for variant in args.variants}
    warmup: dict[str, float] = {}
    for variant, step in steps.items():
        start = time.perf_counter()
        for i in range(args.warmup):
            step(*batches[i % len(batches)])
        warmup[variant] = time.perf_counter() - start
    times: dict[str, list[float]] = {variant: [] for variant in steps}
    for i in range(args.steps):
        for variant, step in steps.items():
            times[variant].append(step(*batches[i % len(batches)]))
    base = statistics.median(times[args.variants[0]])
    print(f"| variant | warm-up s ({args.warmup} steps) | median ms/step | img/s | vs {args.variants[0]} |")
    print("|---|---:|---:|---:|---:|")
    for variant in steps:
        median = statistics.median(times[variant])
        print(f"| {variant} | {warmup[variant]:.1f} | {1000 * median:.0f} | {args.batch / median:.2f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()

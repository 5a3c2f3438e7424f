"""Real-time architectures on the CPU: parameters, training-step time and inference time, models interleaved.

What a from-scratch CamVid recipe on a CPU buys per minute: for each model, one
training step (forward with the training heads, the trainer's own loss
``semseg.engine.step.training_loss`` with the aux heads and PIDNet's boundary loss,
backward, AdamW step; batch 8, fp32, 11 classes) at 288x384 and 360x480 crops,
with channels_last off and on, and inference (eval mode, batch 1, 360x480).
Every round runs every configuration once, so a load that comes and goes hits
all models alike; the tables give the median over ``--repeats`` rounds after
``--warmup`` rounds, as wall-clock and as CPU time of the process (CPU time
leaves out the time other processes held the core; with one thread the two
agree on a quiet machine).

    .venv/bin/python benchmarks/bench_realtime.py [--models NAME ...] [--repeats 3] [--warmup 1]
        [--threads 1] [--out FILE.md]

``NAME`` is a zoo name, optionally with builder keyword arguments:
``bisenetv2@head_channels=128``, ``lraspp_mobilenet_v3_large@low_level_stride=[4, 8],aux_loss=true``
(values read as YAML, as the CLI's overrides are). One thread by default, as in
bench_models.py: on the shared 2-core machine two threads per process ran
10-50x slower while other jobs held the cores. FLOPs are not counted: depthwise
convolutions run far below a CPU's peak, so they mislead; the time is what counts.
The multiply-adds of the inference network (torch's FlopCounterMode, batch 1,
360x480) are given beside it, and what the CPU made of them (GMAC per second
of inference CPU time), to show where that happens.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from semseg.config import TrainConfig, parse_overrides
from semseg.engine.optim import build_optimizer
from semseg.engine.step import train_forward, training_loss
from semseg.losses import create_loss
from semseg.models import SegModel, create_model
from semseg.models.base import count_parameters

NUM_CLASSES = 11  # CamVid
BATCH = 8
TRAIN_SIZES = ((288, 384), (360, 480))
INFER_SIZE = (360, 480)
DEFAULT_MODELS = ["bisenetv2", "bisenetv2@head_channels=128", "ddrnet_23_slim", "pidnet_s", "erfnet",
                  "lraspp_mobilenet_v3_large", "fcn8s_resnet18"]
AUX_WEIGHT = 0.4


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"bisenetv2@head_channels=128"`` -> ``("bisenetv2", {"head_channels": 128})``; values are read as YAML,
    as the CLI's overrides are, so ``"lraspp_mobilenet_v3_large@low_level_stride=[4, 8],aux_loss=true"`` works
    (commas inside brackets belong to the value)."""
    name, _, rest = spec.partition("@")
    return name, parse_overrides(re.split(r",(?![^\[]*\])", rest) if rest else [])


def inference_parameters(model: SegModel) -> int:
    """Parameters that run in ``model(x)``: all but the training-only heads (aux, boosters, boundary)."""
    training_only = ("aux_classifier", "aux_head", "boundary_head", "boosters")
    skipped = sum(count_parameters(m) for key, m in model.net.named_children() if key in training_only)
    return count_parameters(model) - skipped


def inference_gmacs(model: SegModel, size: tuple[int, int]) -> float:
    """Multiply-adds (10^9) of ``model(x)`` for one ``size`` image, eval mode (FlopCounterMode counts 2 per MAC)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.randn(1, 3, *size))
    return counter.get_total_flops() / 2e9


@dataclass
class Runner:
    """One model in one memory layout, with its optimizer and the timings gathered so far."""

    spec: str
    channels_last: bool
    model: SegModel
    step: Callable[[torch.Tensor, torch.Tensor], None]
    gmacs: float
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def record(self, key: str, fn: Callable[[], Any], keep: bool) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if keep:
            self.wall.setdefault(key, []).append(time.perf_counter() - wall)
            self.cpu.setdefault(key, []).append(time.process_time() - cpu)


def make_runner(spec: str, channels_last: bool) -> Runner:
    name, kwargs = parse_spec(spec)
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES, **kwargs)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = train_forward(model, AUX_WEIGHT)
    optimizer = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-2))
    criterion = create_loss("ce", NUM_CLASSES, ignore_index=255)

    def step(images: torch.Tensor, masks: torch.Tensor) -> None:
        model.train()
        loss = training_loss(forward(images), masks, criterion, AUX_WEIGHT, 255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Runner(spec, channels_last, model, step, inference_gmacs(model, INFER_SIZE))


def batches(channels_last: bool) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    out = {}
    for size in TRAIN_SIZES:
        images = torch.randn(BATCH, 3, *size, generator=generator)
        masks = torch.randint(0, NUM_CLASSES, (BATCH, *size), generator=generator)
        masks[:, :8] = 255  # some ignored pixels, as in real label maps
        out[size] = (images.contiguous(memory_format=torch.channels_last) if channels_last else images, masks)
    return out


def run(specs: list[str], repeats: int, warmup: int) -> list[Runner]:
    runners = [make_runner(spec, cl) for spec in specs for cl in (False, True)]
    data = {cl: batches(cl) for cl in (False, True)}
    image = torch.randn(1, 3, *INFER_SIZE)
    images = {False: image, True: image.contiguous(memory_format=torch.channels_last)}
    for round_ in range(warmup + repeats):
        keep = round_ >= warmup
        for runner in runners:
            for size in TRAIN_SIZES:
                batch = data[runner.channels_last][size]
                runner.record(f"train{size[0]}", lambda: runner.step(*batch), keep)
            runner.model.eval()
            with torch.inference_mode():
                runner.record("infer", lambda: runner.model(images[runner.channels_last]), keep)
        print(f"round {round_ + 1}/{warmup + repeats} done", flush=True)
    return runners


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(runners: list[Runner], times: str) -> str:
    """Markdown: per model, train ms/step (NCHW | channels_last) at both sizes and inference ms, medians."""
    by_spec: dict[str, dict[bool, Runner]] = {}
    for runner in runners:
        by_spec.setdefault(runner.spec, {})[runner.channels_last] = runner
    reference = by_spec.get("lraspp_mobilenet_v3_large")

    def ms(runner: Runner, key: str) -> float:
        return 1000 * statistics.median(getattr(runner, times)[key])

    def best(spec: str, key: str) -> float:
        return min(ms(r, key) for r in by_spec[spec].values())

    lines = [
        "| model | params M (train / infer) | pads to | train 288x384 ms/step NCHW / CL | train 360x480 ms/step NCHW / CL "
        "| infer 360x480 ms NCHW / CL | infer GMAC (GMAC/s) | train steps/min (best, 288x384) "
        "| x LR-ASPP steps (288 / 360) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for spec, pair in by_spec.items():
        plain, cl = pair[False], pair[True]
        params = f"{count_parameters(plain.model) / 1e6:.2f} / {inference_parameters(plain.model) / 1e6:.2f}"
        cells = [f"{ms(plain, key):.0f} / {ms(cl, key):.0f}" for key in ("train288", "train360", "infer")]
        rel = (f"{best('lraspp_mobilenet_v3_large', 'train288') / best(spec, 'train288'):.2f} / "
               f"{best('lraspp_mobilenet_v3_large', 'train360') / best(spec, 'train360'):.2f}") if reference else "-"
        rate = plain.gmacs / (best(spec, "infer") / 1000)
        lines.append(f"| {spec} | {params} | {plain.model.size_divisor} | {' | '.join(cells)} "
                     f"| {plain.gmacs:.1f} ({rate:.0f}) | {60000 / best(spec, 'train288'):.1f} | {rel} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = datetime.datetime.now()
    load_before = os.getloadavg()
    runners = run(args.models, args.repeats, args.warmup)
    load_after = os.getloadavg()
    header = [
        f"{start:%Y-%m-%d %H:%M}, {(datetime.datetime.now() - start).total_seconds() / 60:.0f} min: "
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s); "
        f"batch {BATCH}, fp32, {NUM_CLASSES} classes, AdamW, aux weight {AUX_WEIGHT}; "
        f"median of {args.repeats} after {args.warmup} warm-up round(s); "
        f"load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end.",
    ]
    report = "\n".join(header) + "\n\nWall-clock:\n\n" + table(runners, "wall") + \
        "\n\nCPU time of the process:\n\n" + table(runners, "cpu") + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()

"""bf16 against fp32 on this CPU, per model: a training step and a forward pass, and what ``auto`` chooses.

On a CPU that computes bf16 natively (AVX512-BF16 or AMX) neither precision is the
faster for every model, which is why ``train.precision=auto`` and ``--precision auto``
time the model itself there (semseg.runtime.precision). For each model: one training
step (forward, cross-entropy, backward, AdamW step; batch ``--batch``, ``--crop``
crops) and one inference forward pass (eval mode, batch 1, the same size), both with
channels_last as semseg runs them, in fp32 and under bf16 autocast. Every round runs
every configuration once, so a load that comes and goes hits all alike; the table
gives the median over ``--repeats`` rounds after one warm-up round. The last column
says what ``train.precision=auto``'s own measurement would choose for the same model
(its rule, ``faster_precision``: bf16 where it is at least 1.1x as fast as fp32).
Prediction under ``auto`` stays fp32 on a CPU (semseg.runtime.precision says why);
the inference columns show what an explicit ``--precision bf16`` would gain.

    OMP_NUM_THREADS=2 python benchmarks/bench_precision.py --models lraspp_mobilenet_v3_large fcn8s_resnet18
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from semseg.config import TrainConfig
from semseg.engine.optim import build_optimizer
from semseg.models import create_model
from semseg.runtime.onnx import cpu_threads
from semseg.runtime.precision import autocast, cpu_has_bf16, faster_precision

DEFAULT_MODELS = ["lraspp_mobilenet_v3_large", "ddrnet_23_slim", "fcn8s_resnet18", "unet_resnet18", "segformer_b0"]
PRECISIONS = ("fp32", "bf16")
NUM_CLASSES = 11


def runners(name: str, batch: int, crop: tuple[int, int]) -> dict[str, Callable[[str], None]]:
    """``train`` and ``infer`` callables of one model, each taking the precision to run in."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = create_model(name, NUM_CLASSES).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-4, weight_decay=1e-2))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *crop, generator=generator).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, NUM_CLASSES, (batch, *crop), generator=generator)
    single = images[:1].contiguous(memory_format=torch.channels_last)

    def train(precision: str) -> None:
        model.train()
        with autocast(precision, device):
            loss = F.cross_entropy(model(images).float(), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer(precision: str) -> None:
        model.eval()
        with torch.inference_mode(), autocast(precision, device):
            model(single)

    return {"train": train, "infer": infer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[360, 480])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    threads = cpu_threads()
    torch.set_num_threads(threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_bf16()}, "
          f"threads {threads}, torch {torch.__version__}; batch {args.batch} at {args.crop[0]}x{args.crop[1]} "
          f"(training), 1 image (inference); median of {args.repeats} rounds")
    if not cpu_has_bf16():
        print("this CPU emulates bf16: the bf16 columns show the emulation, and auto is fp32 here without measuring")
    models = {name: runners(name, args.batch, tuple(args.crop)) for name in args.models}
    seconds: dict[tuple[str, str, str], list[float]] = {}
    for round_index in range(args.repeats + 1):  # round 0 warms up (oneDNN builds its kernels)
        for name, jobs in models.items():
            for job, run in jobs.items():
                for precision in PRECISIONS:
                    started = time.perf_counter()
                    run(precision)
                    if round_index:
                        seconds.setdefault((name, job, precision), []).append(time.perf_counter() - started)
        print(f"round {round_index}/{args.repeats} done", flush=True)

    print("\n| model | train fp32 s/step | train bf16 s/step | bf16 speed-up | infer fp32 ms | infer bf16 ms "
          "| bf16 speed-up | auto trains in |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in models:
        median = {key[1:]: statistics.median(value) for key, value in seconds.items() if key[0] == name}
        train32, train16 = median[("train", "fp32")], median[("train", "bf16")]
        infer32, infer16 = median[("infer", "fp32")], median[("infer", "bf16")]
        choice = lambda fp32, bf16: faster_precision({"fp32": fp32, "bf16": bf16}) if cpu_has_bf16() else "fp32"  # noqa: E731
        print(f"| {name} | {train32:.2f} | {train16:.2f} | {train32 / train16:.2f}x | {infer32 * 1e3:.0f} | "
              f"{infer16 * 1e3:.0f} | {infer32 / infer16:.2f}x | {choice(train32, train16)} |")


if __name__ == "__main__":
    main()

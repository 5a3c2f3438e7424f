"""Zoo models: parameters and CPU latency at 1x3x360x480, semseg's model beside its library's own module.

Each curated model (or ``--models``) runs in eval mode on one 360x480 image,
in fp32 and in bf16 autocast with channels_last. The baseline is the same
weights called the way their library is called: torchvision's
``net(x)["out"]`` (which also runs the aux head; semseg's forward skips it),
smp's model on the image padded to its stride by the caller (smp refuses
360x480 at stride 32), and nothing for FCN-8s, which no library offers.
Timings are medians over ``--repeats`` after ``--warmup`` runs, semseg and
baseline interleaved so that both see the same machine load; outputs are
checked equal before timing.

    .venv/bin/python benchmarks/bench_models.py [--models NAME ...] [--precisions fp32 bf16]
        [--repeats 3] [--warmup 1] [--threads 1]

One thread by default: on the shared 2-core machine two threads per process
ran 10-20x slower than one (the threads wait on each other while other jobs
hold the cores). bf16 autocast is only fast where the CPU has bf16 instructions
(AVX-512 BF16, AMX); on AVX2 it is emulated and slower than fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from semseg.models import SegModel, create_model, list_models
from semseg.models.base import count_parameters
from semseg.models.torchvision_zoo import TorchvisionSegModel

SIZE = (360, 480)
NUM_CLASSES = 11  # CamVid


def baseline(model: SegModel) -> Callable[[Tensor], Tensor] | None:
    """The library's own call of the same weights, or None where there is no library model."""
    if isinstance(model, TorchvisionSegModel):
        return lambda x: model.net(x)["out"]
    if model.encoder_path == "net.encoder" and hasattr(model.net, "segmentation_head"):  # an smp model
        def smp_call(x: Tensor) -> Tensor:
            pad_h, pad_w = (-x.shape[-2]) % model.size_divisor, (-x.shape[-1]) % model.size_divisor
            return model.net(F.pad(x, (0, pad_w, 0, pad_h)))[..., : x.shape[-2], : x.shape[-1]]

        return smp_call
    return None


def seconds(fn: Callable[[Tensor], Tensor], x: Tensor, bf16: bool) -> float:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        start = time.perf_counter()
        fn(x)
        return time.perf_counter() - start


def measure(name: str, precisions: list[str], repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES).eval()
    library = baseline(model)
    row = {"name": name, "params": count_parameters(model) / 1e6, "divisor": model.size_divisor}
    x = torch.randn(1, 3, *SIZE)
    if library is not None:
        with torch.inference_mode():
            assert torch.allclose(model(x), library(x), atol=1e-5), name
    for precision in precisions:
        bf16 = precision == "bf16"
        model = model.to(memory_format=torch.channels_last if bf16 else torch.contiguous_format)
        inp = x.contiguous(memory_format=torch.channels_last) if bf16 else x
        ours, theirs = [], []
        for i in range(warmup + repeats):
            t_ours = seconds(model, inp, bf16)
            t_theirs = seconds(library, inp, bf16) if library is not None else float("nan")
            if i >= warmup:
                ours.append(t_ours)
                theirs.append(t_theirs)
        row[precision] = statistics.median(ours) * 1000
        row[f"{precision}_ratio"] = statistics.median(ours) / statistics.median(theirs) if library else None
    return row


def _cells(row: dict, precision: str) -> str:
    ratio = row[f"{precision}_ratio"]
    return f" {row[precision]:.0f} | {f'{ratio:.2f}x' if ratio else '-'} |"


def markdown(rows: list[dict], precisions: list[str]) -> str:
    titles = {"fp32": "fp32", "bf16": "bf16+CL"}
    head = "".join(f" {titles[p]} ms | semseg / library |" for p in precisions)
    lines = ["| model | params (M) | pads to |" + head, "|---|---:|---:|" + "---:|---:|" * len(precisions)]
    for row in rows:
        lines.append(f"| {row['name']} | {row['params']:.1f} | {row['divisor']} |" + "".join(_cells(row, p) for p in precisions))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="zoo names (default: every curated model)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows = []
    for name in args.models or list_models():
        rows.append(measure(name, args.precisions, args.repeats, args.warmup))
        print(markdown(rows[-1:], args.precisions).splitlines()[-1], flush=True)
    print(markdown(rows, args.precisions))


if __name__ == "__main__":
    main()

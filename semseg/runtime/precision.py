"""Device and numeric precision choices shared by training, evaluation and prediction.

bf16 autocast only pays off where the hardware has bf16 arithmetic (CUDA, or
CPUs with AVX512-BF16 / AMX). On a CPU without it PyTorch emulates bf16, many
times slower than fp32, so ``auto`` must look at the CPU, not just at the
device type. Even with AMX, bf16 is not faster for every model on a CPU: oneDNN's
bf16 depthwise convolutions, and the casts around a small network's many cheap
layers, can cost more than they save (MobileNetV3's LR-ASPP trains slower in bf16
than in fp32 on such a CPU, while ResNet and SegFormer models train 1.6-2.5x faster:
BENCHMARKS.md, "bf16 on a CPU with AMX"). So on a CPU ``auto`` resolves to fp32, and
training, where the gain is largest and the choice is made once per run and kept in its
checkpoints, measures both on its own model (:func:`measures_precision`,
:func:`time_precisions`, :func:`faster_precision`). Inference on a CPU stays fp32 under
``auto``: a choice made by timing could differ from one run to the next near a tie, and
bf16 changes some labels, so the same command would not always give the same labels.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from typing import Callable, ContextManager, Sequence

import torch

from semseg.errors import SemsegError


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SemsegError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SemsegError(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto`` to ``bf16`` (CUDA with bf16) or ``fp32`` (elsewhere, CPUs included); check the explicit choices."""
    if precision == "auto":  # on a CPU, training may choose bf16 by measuring: measures_precision
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise SemsegError("precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    if precision not in ("fp32", "bf16", "fp16"):
        raise SemsegError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    return precision


def measures_precision(precision: str, device: torch.device) -> bool:
    """Whether training with ``precision`` is ``auto`` on a CPU with native bf16: there the model's own
    training step, timed, chooses between bf16 and fp32 (on CUDA, bf16 is the faster for every model here)."""
    return precision == "auto" and device.type == "cpu" and cpu_has_bf16()


def time_precisions(run: Callable[[str], object], precisions: Sequence[str] = ("fp32", "bf16"),
                    rounds: int = 2) -> dict[str, float]:
    """Seconds one call of ``run(precision)`` takes, per precision: the fastest of ``rounds`` timed calls,
    after one untimed warm-up call each (oneDNN builds its kernels then), the precisions taken in turns so
    that a change in the machine's load falls on both."""
    for precision in precisions:
        run(precision)
    seconds = {precision: float("inf") for precision in precisions}
    for _ in range(rounds):
        for precision in precisions:
            started = time.perf_counter()
            run(precision)
            seconds[precision] = min(seconds[precision], time.perf_counter() - started)
    return seconds


# bf16 is chosen only when it beats fp32 by this factor: a closer race is within a few timed calls' noise,
# and fp32 keeps the model's own numbers
BF16_MARGIN = 1.1


def faster_precision(seconds: dict[str, float]) -> str:
    """``bf16`` where ``seconds`` (from :func:`time_precisions`) has it :data:`BF16_MARGIN` times faster than
    ``fp32``, else ``fp32``."""
    return "bf16" if seconds["bf16"] * BF16_MARGIN < seconds["fp32"] else "fp32"


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(setting: str, device: torch.device) -> bool:
    """Whether to use channels_last: ``auto`` says yes, since it speeds up oneDNN and cuDNN convolutions."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return True


def check_compile_toolchain(device: torch.device) -> None:
    """SemsegError when ``torch.compile`` cannot work on ``device``: inductor builds CPU kernels with the
    C++ compiler ``$CXX`` (default ``g++``), and without one the first compiled step fails deep inside PyTorch."""
    if device.type != "cpu":
        return
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise SemsegError(f"config key 'train.compile': torch.compile builds CPU kernels with a C++ compiler and "
                          f"{compiler!r} was not found (install g++, or set $CXX); or set train.compile=false")

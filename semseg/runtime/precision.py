"""Device and numeric precision choices shared by training, evaluation and prediction.

bf16 autocast only pays off where the hardware has bf16 arithmetic (CUDA, or
CPUs with AVX512-BF16 / AMX). On a CPU without it PyTorch emulates bf16, many
times slower than fp32, so ``auto`` must look at the CPU, not just at the
device type.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from typing import ContextManager

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
    """Map ``auto`` to ``bf16`` or ``fp32`` for this device; check the explicit choices."""
    if precision == "auto":
        native_bf16 = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
            device.type == "cpu" and cpu_has_bf16()
        )
        return "bf16" if native_bf16 else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise SemsegError("precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    if precision not in ("fp32", "bf16", "fp16"):
        raise SemsegError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    return precision


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

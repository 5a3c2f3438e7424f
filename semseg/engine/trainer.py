"""The objects of one training run (:class:`Trainer`) and its wall-clock budget (:class:`RunClock`).

Built by :func:`semseg.engine.setup.setup_trainer`, driven by
:func:`semseg.engine.loop.fit`, saved and restored by :mod:`semseg.engine.state`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from semseg.config import RunConfig
from semseg.engine import distributed as dist_utils


class RunClock:
    """Wall-clock time of a run across resumes, and the spent fraction of its budget."""

    def __init__(self, limit_minutes: float | None, already_spent_s: float = 0.0) -> None:
        self.limit_s = 60 * limit_minutes if limit_minutes else None
        self.offset = already_spent_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return self.offset + time.monotonic() - self.start

    def progress(self) -> float:
        return self.elapsed() / self.limit_s if self.limit_s else 0.0

    def room_for(self, seconds: float) -> bool:
        return self.limit_s is None or self.elapsed() + seconds <= self.limit_s


@dataclass
class Trainer:
    """The objects of one run; ``fit`` drives them epoch by epoch."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    precision: str
    channels_last: bool
    dist: dist_utils.DistInfo
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel | None
    train_loader: DataLoader
    val_loader: DataLoader | None
    class_names: list[str]
    class_weights: list[float] | None
    epoch: int = 0
    step: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1
    stale_validations: int = 0
    history: list[dict] = field(default_factory=list)
    clock: "RunClock" = field(default_factory=lambda: RunClock(None))

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

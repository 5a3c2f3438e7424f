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
    """Wall-clock time of a run across resumes, and the spent fraction of its time budget.

    The budget (``train.time_limit_minutes``) covers the whole run: training steps
    and the final validation, reports and checkpoints. Training may use the budget
    less a ``reserve_s`` kept for that closing work (the measured duration of the
    latest validated end of epoch; 0 until one was measured). :meth:`tick`, called
    once per optimizer step, samples the spent fraction of the training time; the
    lr schedule and the stop check both read that one sample, so the step that
    stops the run is the step whose schedule reached its final value.
    """

    def __init__(self, limit_minutes: float | None, already_spent_s: float = 0.0, reserve_s: float = 0.0) -> None:
        self.limit_s = 60 * limit_minutes if limit_minutes else None
        self.offset = already_spent_s
        self.start = time.monotonic()
        self.reserve_s = reserve_s
        self.spent = 0.0  # the fraction sampled by the latest tick()

    def elapsed(self) -> float:
        return self.offset + time.monotonic() - self.start

    def progress(self) -> float:
        """The spent fraction of the training time (budget less the reserve); 0 without a budget."""
        if not self.limit_s:
            return 0.0
        # never let the reserve eat more than half the budget (a slow first validation on a tiny budget)
        return self.elapsed() / (self.limit_s - min(self.reserve_s, 0.5 * self.limit_s))

    def tick(self) -> float:
        """Sample :meth:`progress` into ``spent`` (once per optimizer step) and return it."""
        self.spent = self.progress()
        return self.spent

    @property
    def out_of_time(self) -> bool:
        """Whether the latest tick found the training time spent."""
        return self.limit_s is not None and self.spent >= 1.0


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
    # the epoch last.pt holds (train.checkpoint_every): where a resume starts
    saved_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    # the report of the best validation (printed at the end, kept in the checkpoints)
    best_scores: dict | None = None
    # pixels per class of the training set (the data audit's counts; for the report's chart)
    class_pixels: list[int] | None = None
    clock: "RunClock" = field(default_factory=lambda: RunClock(None))

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

"""Optimizer with parameter groups, and the per-iteration learning-rate schedule."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from semseg.config import TrainConfig


def _split_decay(params: list[tuple[str, nn.Parameter]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Norm weights and biases (1-D tensors) get no weight decay: decaying them only hurts."""
    decay = [p for _, p in params if p.ndim > 1]
    no_decay = [p for _, p in params if p.ndim <= 1]
    return decay, no_decay


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Encoder and decoder groups (decoder lr x head_lr_mult), each split by weight decay.

    Frozen parameters are included: freeze-then-unfreeze schedules switch
    ``requires_grad`` and the optimizer must already hold them.
    """
    encoder_ids = {id(p) for p in model.encoder_parameters()} if hasattr(model, "encoder_parameters") else set()
    named = list(model.named_parameters())
    encoder = [(n, p) for n, p in named if id(p) in encoder_ids]
    decoder = [(n, p) for n, p in named if id(p) not in encoder_ids]
    groups = []
    for params, lr_mult in ((encoder, 1.0), (decoder, cfg.head_lr_mult)):
        decay, no_decay = _split_decay(params)
        for group_params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if group_params:
                groups.append({"params": group_params, "lr": cfg.lr * lr_mult, "weight_decay": wd, "lr_mult": lr_mult})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig, time_progress: float = 0.0) -> float:
    """Multiplier of the base lr at iteration ``step``: linear warmup, then poly / cosine / constant.

    ``time_progress`` (the spent fraction of the training time of
    ``train.time_limit_minutes``) stretches the schedule over the budget when the
    budget runs out before the epochs do: the decay follows whichever of steps
    and time is further along, and reaches its final value at the step that
    spends the budget, which is the step the run stops after (``fit``).
    """
    if step < warmup_steps:
        alpha = step / max(1, warmup_steps)
        return cfg.warmup_factor * (1 - alpha) + alpha
    progress = min(1.0, max(time_progress, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if cfg.schedule == "poly":
        return (1 - progress) ** cfg.poly_power
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    steps_per_epoch: int,
    time_progress: Callable[[], float] = lambda: 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step (not per epoch).

    ``time_progress`` is read at each step: the run's :class:`RunClock` sample (``clock.spent``).
    """
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg, time_progress())
    )

"""Assembling a run: the model with the dataset's metadata, class weights, loaders, and the :class:`Trainer`."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from semseg.config import RunConfig, validate
from semseg.data import add_statistics, build_dataset, class_statistics, dataset_info, eval_transform, train_transform
from semseg.data.splits import leakage_warning
from semseg.engine import distributed as dist_utils
from semseg.engine.optim import build_optimizer, build_scheduler
from semseg.engine.state import seed_everything, worker_init
from semseg.engine.step import train_forward, training_loss
from semseg.engine.trainer import RunClock, Trainer
from semseg.errors import SemsegError
from semseg.losses import class_weights, create_loss
from semseg.losses.mask_classification import MaskClassificationLoss
from semseg.models import convert_norm, create_model
from semseg.runtime.precision import (
    autocast,
    check_compile_toolchain,
    faster_precision,
    measures_precision,
    resolve_device,
    resolve_precision,
    time_precisions,
    use_channels_last,
)

log = logging.getLogger(__name__)


def ema_decay_at(updates: int, decay: float) -> float:
    """The EMA's decay at its update number ``updates`` (0-based, counting only the updates that average): it
    ramps up as (1 + n) / (10 + n) and stays at ``decay`` once it gets there.

    torch's ``get_ema_multi_avg_fn`` has a fixed decay, so a short run's average keeps ``decay ** steps`` of the
    first weights it copied (0.999 ** 2370 = 9% after the CamVid recipe's hour). The warm-up is timm's
    (ModelEmaV3) and mmengine's idea; the average stays torch's AveragedModel, whose state the checkpoints hold.
    """
    return min(decay, (1 + updates) / (10 + updates))


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers, its decay warmed up (:func:`ema_decay_at`)."""

    def warmed_up(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # AveragedModel counts its first call (a plain copy) in num_averaged: the first average is update 0
        get_ema_multi_avg_fn(ema_decay_at(int(num_averaged) - 1, decay))(averaged, current, num_averaged)

    return AveragedModel(model, multi_avg_fn=warmed_up, use_buffers=True)


def build_model(cfg: RunConfig, num_classes: int, class_names: list[str], palette: list[list[int]]) -> nn.Module:
    """The zoo model with the dataset's metadata, so checkpoints and the predictor normalize and colour right."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.norm == "ibn":  # built in by create_model, so that a checkpoint rebuilds it
        if kwargs.setdefault("norm", "ibn") != "ibn":
            raise SemsegError(f"config keys 'model.norm' (ibn) and 'model.kwargs.norm' ({kwargs['norm']}) disagree")
    model = create_model(cfg.model.name, num_classes=num_classes, pretrained=cfg.model.pretrained, **kwargs)
    model.pretrained_cfg = replace(
        model.pretrained_cfg,
        num_classes=num_classes,
        class_names=list(class_names),
        palette=[list(c) for c in palette],
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        ignore_index=cfg.data.ignore_index,
        # an offset belongs to the weights and class weights of the run that exported it (semseg export
        # --logit-adjust); weights trained on from such a file start without one
        logit_offset=None,
    )
    if cfg.model.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg.model.bn_momentum
    if cfg.model.norm == "gn":
        model = convert_norm(model, "gn")
    return model


def build_criterion(cfg: RunConfig, model: nn.Module, num_classes: int, weights: list[float] | None) -> nn.Module:
    """``train.loss`` for ``model``: a :func:`create_loss` spec, or (``auto``) the model's own loss.

    A mask-classification model (``model.set_prediction``: Mask2Former) predicts class and
    mask queries, not per-pixel logits, and trains with its set-prediction loss only;
    ``train.loss_kwargs`` then set that loss's weights and point counts.
    """
    spec = cfg.train.loss
    if getattr(model, "set_prediction", False):
        if spec != "auto":
            raise SemsegError(
                f"config key 'train.loss' is {spec!r}, but model {cfg.model.name!r} predicts class and mask queries "
                "and trains with its set-prediction loss: set train.loss=auto (its weights go in train.loss_kwargs)"
            )
        settings = {**model.set_loss_settings(), **cfg.train.loss_kwargs}
        return MaskClassificationLoss(num_classes, cfg.data.ignore_index, model.size_divisor, weights, **settings)
    return create_loss("ce" if spec == "auto" else spec, num_classes, ignore_index=cfg.data.ignore_index,
                       class_weights=weights, **cfg.train.loss_kwargs)


def resolve_class_weights(cfg: RunConfig, train_set: Any, stats: dict[str, Any] | None = None) -> list[float] | None:
    """``train.class_weights``: None, a list, or computed from the training set's pixel counts (``stats``
    when already counted, else :func:`class_statistics`)."""
    spec = cfg.train.class_weights
    if spec is None or isinstance(spec, list):
        return spec
    stats = stats or class_statistics(train_set, workers=cfg.data.workers)
    return [float(w) for w in class_weights(spec, stats["class_pixels"], stats["present_pixels"])]


def train_loader(dataset: Any, cfg: RunConfig, dist: dist_utils.DistInfo, pin: bool) -> DataLoader:
    if cfg.train.batch_size % dist.world_size:
        raise SemsegError(
            f"config key 'train.batch_size' ({cfg.train.batch_size}) is the global batch and must divide "
            f"by the number of processes ({dist.world_size})"
        )
    per_rank = cfg.train.batch_size // dist.world_size
    if len(dataset) < cfg.train.batch_size:
        raise SemsegError(
            f"the training split has {len(dataset)} images, fewer than train.batch_size={cfg.train.batch_size}"
        )
    # The same sampler for 1 and N processes: each global batch holds the same images either way.
    sampler = DistributedSampler(
        dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.train.seed, drop_last=True
    )
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.data.workers,
        drop_last=True,
        pin_memory=pin,
        worker_init_fn=worker_init,
        generator=torch.Generator(),
        persistent_workers=False,  # fresh workers each epoch, seeded from (seed, epoch): exact resume
    )


def eval_loader(dataset: Any, workers: int, dist: dist_utils.DistInfo) -> DataLoader:
    """Every rank evaluates a disjoint share (no padding duplicates, unlike DistributedSampler)."""
    if dist.enabled:
        dataset = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    # batch 1: validation images may differ in size and are evaluated whole
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers)


def measured_cpu_precision(model: nn.Module, criterion: nn.Module, cfg: RunConfig, num_classes: int,
                           channels_last: bool, dist: dist_utils.DistInfo) -> str:
    """``train.precision=auto`` on a CPU with native bf16: ``bf16`` or ``fp32``, whichever runs a training
    step (forward, loss, backward) of this model on ``data.crop_size`` crops faster here (bf16 by a margin:
    :func:`~semseg.runtime.precision.faster_precision`).

    Neither is faster for every model on such a CPU (:mod:`semseg.runtime.precision`). The step runs on a
    copy of the model, on random images (at most 2 per step, to bound the cost of a large model), with the
    random-number state restored afterwards: the run's weights, BatchNorm statistics and random streams are
    those of a run without the measurement. Under DDP the ranks' timings are averaged, so all agree.
    """
    probe = copy.deepcopy(model)
    forward = train_forward(probe, cfg.train.aux_weight)
    generator = torch.Generator().manual_seed(0)
    batch = min(2, max(1, cfg.train.batch_size // dist.world_size))
    height, width = cfg.data.crop_size
    images = torch.randn(batch, 3, height, width, generator=generator)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, num_classes, (batch, height, width), generator=generator)

    def step(precision: str) -> None:
        with autocast(precision, torch.device("cpu")):
            loss = training_loss(forward(images), masks, criterion, cfg.train.aux_weight, cfg.data.ignore_index)
        loss.backward()
        probe.zero_grad(set_to_none=True)

    with torch.random.fork_rng(devices=[]):
        seconds = time_precisions(step)
    seconds = {name: dist_utils.mean_across_ranks(value, torch.device("cpu")) for name, value in seconds.items()}
    chosen = faster_precision(seconds)
    if dist.is_main:
        log.info("precision auto: %s, the faster on this CPU (native bf16) for this model: a training step of %d "
                 "images took %s", chosen, batch, ", ".join(f"{seconds[name]:.2f} s in {name}" for name in seconds))
    return chosen


def setup_trainer(cfg: RunConfig, run_dir: Path, resume_state: dict | None = None) -> Trainer:
    """The :class:`Trainer` of ``cfg``: data, model, loss, optimizer; with ``resume_state``, its class weights and clock."""
    device = resolve_device(cfg.train.device)
    info = dataset_info(cfg.data)
    validate(cfg, info.num_classes)
    dist = dist_utils.init_distributed(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    precision = resolve_precision(cfg.train.precision, device)
    if cfg.train.compile:
        check_compile_toolchain(device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.train.seed)

    # data.skip_bad_samples is for training only: evaluation never skips (a skipped frame changes the score)
    train_set = build_dataset(cfg.data, cfg.data.train_split, train_transform(cfg.data), cfg.data.skip_bad_samples)
    val_set = build_dataset(cfg.data, cfg.data.val_split, eval_transform(cfg.data)) if cfg.data.val_split else None
    if dist.is_main and (warning := leakage_warning(cfg.data)):
        log.warning(warning)
    model = build_model(cfg, info.num_classes, info.class_names, info.palette)
    if cfg.model.norm == "syncbn" and dist.enabled:
        model = convert_norm(model, "syncbn", device.type)
    channels_last = use_channels_last(cfg.train.channels_last, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    resume_state = resume_state or {}
    # the training set's class counts: for computed class weights, and for the report's chart (rank 0);
    # counted once at the start of a run and kept in its checkpoints
    class_pixels = resume_state.get("class_pixels")
    stats = None
    weights_needed = isinstance(cfg.train.class_weights, str) and "class_weights" not in resume_state
    if weights_needed:  # every rank needs the weights: the ranks count a share of the masks each and add them up
        part = class_statistics(train_set, workers=cfg.data.workers, progress=dist.is_main, part=(dist.rank, dist.world_size))
        stats = add_statistics(dist_utils.gather_objects(part))
    elif class_pixels is None and cfg.train.reports and dist.is_main:  # the report's chart only: rank 0 alone
        stats = class_statistics(train_set, workers=cfg.data.workers)
    if stats is not None:
        class_pixels = [int(n) for n in stats["class_pixels"]]
    if "class_weights" in resume_state:
        weights = resume_state["class_weights"]  # computed once, at the start of the run
    else:
        weights = resolve_class_weights(cfg, train_set, stats)
    criterion = build_criterion(cfg, model, info.num_classes, weights).to(device)
    if measures_precision(cfg.train.precision, device):
        # measured once per run and kept in its checkpoints: a resumed run computes as it began
        precision = resume_state.get("precision") or measured_cpu_precision(
            model, criterion, cfg, info.num_classes, channels_last, dist)
    loader = train_loader(train_set, cfg, dist, pin=device.type == "cuda")
    steps_per_epoch = len(loader) // cfg.train.accumulate
    if steps_per_epoch < 1:
        raise SemsegError("train.accumulate is larger than the number of batches in an epoch")
    optimizer = build_optimizer(model, cfg.train)
    ema = build_ema(model, cfg.train.ema_decay) if cfg.train.ema else None
    history = resume_state.get("history", [])
    clock = RunClock(cfg.train.time_limit_minutes, history[-1]["elapsed_s"] if history else 0.0,
                     next((entry["eval_time_s"] for entry in reversed(history) if "eval_time_s" in entry), 0.0))
    trainer = Trainer(
        clock=clock,
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        precision=precision,
        channels_last=channels_last,
        dist=dist,
        model=model,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.train, steps_per_epoch, lambda: clock.spent),
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        ema=ema,
        train_loader=loader,
        val_loader=eval_loader(val_set, cfg.data.workers, dist) if val_set is not None else None,
        class_names=info.class_names,
        class_weights=weights,
        class_pixels=class_pixels,
    )
    return trainer

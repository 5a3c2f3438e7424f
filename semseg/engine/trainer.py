"""Training and evaluation as plain functions: ``fit`` -> ``train_one_epoch`` / ``evaluate``.

Exact resume: at the start of every epoch the Python, NumPy and torch RNGs, the
shuffling sampler and the DataLoader's worker seeds are all re-seeded from
``(train.seed, epoch)``. An epoch's result therefore depends only on the state
saved at the end of the previous epoch (weights, optimizer, scheduler, scaler,
EMA), which ``last.pt`` holds; a run killed at any point and resumed from
``last.pt`` redoes the interrupted epoch and ends with the same weights.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from semseg.checkpoint import load_checkpoint, save_checkpoint
from semseg.config import RunConfig, load_config, to_dict, to_yaml, validate
from semseg.engine import distributed as dist_utils
from semseg.engine.optim import build_optimizer, build_scheduler
from semseg.runtime.precision import autocast, resolve_device, resolve_precision, use_channels_last
from semseg.errors import SemsegError
from semseg.io import write_text_atomic
from semseg.metrics import ConfusionMatrix, format_report, report

METRIC_KEYS = ("miou", "mean_acc", "mdice", "pixel_acc", "fwiou")


# ------------------------------------------------------------------ small pieces
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; NumPy and random follow it.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])


class _Progress:
    """tqdm bar on a terminal; one clean line per epoch otherwise (CI logs)."""

    def __init__(self, total: int, epoch: int, epochs: int, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)

    def update(self, loss: float, lr: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------ building blocks
def build_model(cfg: RunConfig, num_classes: int, class_names: list[str], palette: list[list[int]]) -> nn.Module:
    """The zoo model with the dataset's metadata, so checkpoints and the predictor normalize and colour right."""
    from semseg.models import convert_norm, create_model

    model = create_model(cfg.model.name, num_classes=num_classes, pretrained=cfg.model.pretrained, **cfg.model.kwargs)
    model.pretrained_cfg = replace(
        model.pretrained_cfg,
        num_classes=num_classes,
        class_names=list(class_names),
        palette=[list(c) for c in palette],
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        ignore_index=cfg.data.ignore_index,
    )
    if cfg.model.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg.model.bn_momentum
    if cfg.model.norm == "gn":
        model = convert_norm(model, "gn")
    return model


def resolve_class_weights(cfg: RunConfig, train_set: Any) -> list[float] | None:
    """``train.class_weights``: None, a list, or computed from the training set's pixel counts."""
    spec = cfg.train.class_weights
    if spec is None or isinstance(spec, list):
        return spec
    from semseg.data import class_statistics
    from semseg.losses import class_weights

    stats = class_statistics(train_set, workers=cfg.data.workers)
    return [float(w) for w in class_weights(spec, stats["class_pixels"], stats["present_pixels"])]


class _TrainForward(nn.Module):
    """What DDP wraps: the model's forward with aux outputs, so gradient sync sees every head."""

    def __init__(self, model: nn.Module, with_aux: bool) -> None:
        super().__init__()
        self.model = model
        self.with_aux = with_aux

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.with_aux:
            return self.model.forward_aux(images)
        return {"out": self.model(images)}


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


# ------------------------------------------------------------------ loaders
def _train_loader(dataset: Any, cfg: RunConfig, dist: dist_utils.DistInfo, pin: bool) -> DataLoader:
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
        worker_init_fn=_worker_init,
        generator=torch.Generator(),
        persistent_workers=False,  # fresh workers each epoch, seeded from (seed, epoch): exact resume
    )


def eval_loader(dataset: Any, workers: int, dist: dist_utils.DistInfo) -> DataLoader:
    """Every rank evaluates a disjoint share (no padding duplicates, unlike DistributedSampler)."""
    if dist.enabled:
        dataset = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    # batch 1: validation images may differ in size and are evaluated whole
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers)


# ------------------------------------------------------------------ the loop
def _loss(trainer: Trainer, forward: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    outputs = forward(images)
    loss = trainer.criterion(outputs["out"].float(), masks)
    if "aux" in outputs:
        loss = loss + trainer.cfg.train.aux_weight * trainer.criterion(outputs["aux"].float(), masks)
    return loss


def _to_device(trainer: Trainer, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(trainer.device, non_blocking=True)
    if trainer.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, masks.to(trainer.device, non_blocking=True)


def train_one_epoch(trainer: Trainer, forward: nn.Module) -> dict[str, float]:
    """One pass over the training set. Returns mean loss, last lr, images/s."""
    cfg = trainer.cfg.train
    trainer.model.train()
    if trainer.epoch < cfg.freeze_encoder_epochs:
        trainer.model.freeze_encoder(True)  # also keeps the encoder's BatchNorm statistics still
    loader = trainer.train_loader
    steps = len(loader)
    progress = _Progress(steps, trainer.epoch, cfg.epochs, trainer.dist.is_main)
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    trainer.optimizer.zero_grad(set_to_none=True)
    for i, (images, masks) in enumerate(loader):
        images, masks = _to_device(trainer, images, masks)
        with autocast(trainer.precision, trainer.device):
            loss = _loss(trainer, forward, images, masks)
        if not torch.isfinite(loss):
            raise SemsegError(
                f"the loss became {loss.item()} at epoch {trainer.epoch + 1}, batch {i + 1}: the run stopped. "
                f"The last good checkpoint is {trainer.run_dir / 'last.pt'} (epoch {trainer.epoch}); "
                "lower train.lr, add train.clip_grad or check the labels, then --resume"
            )
        trainer.scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0:
            _optimizer_step(trainer)
        total_loss += loss.item()
        seen += images.shape[0] * trainer.dist.world_size
        progress.update(loss.item(), trainer.optimizer.param_groups[0]["lr"], seen / (time.perf_counter() - start))
    progress.close()
    elapsed = time.perf_counter() - start
    mean_loss = dist_utils.mean_across_ranks(total_loss / max(1, steps), trainer.device)
    return {"train_loss": mean_loss, "lr": trainer.optimizer.param_groups[0]["lr"], "images_per_s": seen / elapsed, "train_time_s": elapsed}


def _optimizer_step(trainer: Trainer) -> None:
    cfg = trainer.cfg.train
    if cfg.clip_grad:
        trainer.scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.clip_grad)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scheduler.step()
    trainer.step += 1
    if trainer.ema is not None:
        trainer.ema.update_parameters(trainer.model)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    ignore_index: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> ConfusionMatrix:
    """Whole-image evaluation into one confusion matrix, summed over DDP ranks.

    Training-time validation and ``semseg val`` both call this, so they agree exactly.
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    for images, masks in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            logits = model(images)
        matrix.update(logits.argmax(1), masks)
    matrix.all_reduce()
    return matrix


# ------------------------------------------------------------------ checkpoints
def _checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    model = trainer.model
    state = {
        "model_name": model.model_name,
        "model_kwargs": dict(model.model_kwargs),
        "model_meta": model.pretrained_cfg.to_dict(),
        "model": trainer.eval_model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "epoch": trainer.epoch,
        "step": trainer.step,
        "rng": rng_state(),
        "config": to_dict(trainer.cfg),
        "best_miou": trainer.best_miou,
        "best_epoch": trainer.best_epoch,
        "stale_validations": trainer.stale_validations,
        "class_weights": trainer.class_weights,
        "history": trainer.history,
        "metrics": trainer.history[-1] if trainer.history else {},
    }
    if trainer.ema is not None:
        state["train_model"] = model.state_dict()
        state["ema"] = trainer.ema.state_dict()
    return state


def _restore(trainer: Trainer, state: dict[str, Any]) -> None:
    trainer.model.load_state_dict(state["train_model"] if trainer.ema is not None else state["model"])
    if trainer.ema is not None:
        if "ema" not in state:
            raise SemsegError("the checkpoint was trained without EMA; resume with train.ema=false")
        trainer.ema.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.epoch, trainer.step = state["epoch"], state["step"]
    trainer.best_miou, trainer.best_epoch = state["best_miou"], state["best_epoch"]
    trainer.stale_validations = state.get("stale_validations", 0)
    trainer.history = list(state.get("history", []))
    set_rng_state(state["rng"])


def _write_metrics_log(trainer: Trainer) -> None:
    lines = "".join(json.dumps(entry) + "\n" for entry in trainer.history)
    write_text_atomic(trainer.run_dir / "metrics.jsonl", lines)


# ------------------------------------------------------------------ fit
def _setup(cfg: RunConfig, run_dir: Path, resume_state: dict | None) -> Trainer:
    from semseg.data import build_dataset, dataset_info, eval_transform, train_transform
    from semseg.losses import create_loss

    device = resolve_device(cfg.train.device)
    info = dataset_info(cfg.data)
    validate(cfg, info.num_classes)
    dist = dist_utils.init_distributed(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    precision = resolve_precision(cfg.train.precision, device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.train.seed)

    train_set = build_dataset(cfg.data, cfg.data.train_split, train_transform(cfg.data))
    val_set = build_dataset(cfg.data, cfg.data.val_split, eval_transform(cfg.data)) if cfg.data.val_split else None
    model = build_model(cfg, info.num_classes, info.class_names, info.palette)
    if cfg.model.norm == "syncbn" and dist.enabled and device.type != "cuda":
        raise SemsegError("model.norm=syncbn needs CUDA devices (PyTorch's SyncBatchNorm); use model.norm=gn on the CPU")
    if cfg.model.norm == "syncbn" and dist.enabled:
        from semseg.models import convert_norm

        model = convert_norm(model, "syncbn")
    channels_last = use_channels_last(cfg.train.channels_last, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    if resume_state is not None and "class_weights" in resume_state:
        weights = resume_state["class_weights"]  # computed once, at the start of the run
    else:
        weights = resolve_class_weights(cfg, train_set)
    criterion = create_loss(
        cfg.train.loss, info.num_classes, ignore_index=cfg.data.ignore_index, class_weights=weights, **cfg.train.loss_kwargs
    ).to(device)
    train_loader = _train_loader(train_set, cfg, dist, pin=device.type == "cuda")
    steps_per_epoch = len(train_loader) // cfg.train.accumulate
    if steps_per_epoch < 1:
        raise SemsegError("train.accumulate is larger than the number of batches in an epoch")
    optimizer = build_optimizer(model, cfg.train)
    ema = None
    if cfg.train.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)
    clock = RunClock(cfg.train.time_limit_minutes, resume_state["history"][-1]["elapsed_s"] if resume_state and resume_state.get("history") else 0.0)
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
        scheduler=build_scheduler(optimizer, cfg.train, steps_per_epoch, clock.progress),
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        ema=ema,
        train_loader=train_loader,
        val_loader=eval_loader(val_set, cfg.data.workers, dist) if val_set is not None else None,
        class_names=info.class_names,
        class_weights=weights,
    )
    if resume_state is not None:
        _restore(trainer, resume_state)
    return trainer


def _ddp_forward(trainer: Trainer) -> nn.Module:
    """The module the loop calls; wrapped in DDP under torchrun (rebuilt when freezing changes)."""
    with_aux = bool(getattr(trainer.model, "has_aux", False)) and trainer.cfg.train.aux_weight > 0
    forward = _TrainForward(trainer.model, with_aux)
    if not trainer.dist.enabled:
        return forward
    device_ids = [trainer.device.index] if trainer.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(forward, device_ids=device_ids)


def _validate(trainer: Trainer) -> dict[str, Any]:
    matrix = evaluate(
        trainer.eval_model,
        trainer.val_loader,
        len(trainer.class_names),
        trainer.cfg.data.ignore_index,
        trainer.device,
        trainer.precision,
        trainer.channels_last,
    )
    return report(matrix, trainer.class_names)


def _log_epoch(trainer: Trainer, entry: dict[str, Any]) -> None:
    if not trainer.dist.is_main:
        return
    parts = [f"epoch {entry['epoch']}/{trainer.cfg.train.epochs}", f"loss {entry['train_loss']:.4f}", f"lr {entry['lr']:.2e}"]
    parts.append(f"{entry['images_per_s']:.1f} img/s")
    if "miou" in entry:
        parts.append(f"val mIoU {100 * entry['miou']:.2f}")
        parts.append(f"best {100 * trainer.best_miou:.2f} (epoch {trainer.best_epoch})")
    print(" | ".join(parts), flush=True)


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def fit(cfg: RunConfig, run_dir: str | Path, resume_state: dict | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into ``run_dir``; returns the last epoch's log entry."""
    run_dir = Path(run_dir)
    trainer = _setup(cfg, run_dir, resume_state)
    is_main = trainer.dist.is_main
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        _write_metrics_log(trainer)  # on resume: drop lines of epochs after the checkpoint
    writer = _tensorboard(run_dir) if is_main else None
    entry: dict[str, Any] = {}
    frozen = None
    forward = None
    try:
        while trainer.epoch < cfg.train.epochs:
            epoch_seed = _epoch_seed(cfg.train.seed, trainer.epoch)
            seed_everything(epoch_seed)
            trainer.train_loader.sampler.set_epoch(trainer.epoch)
            trainer.train_loader.generator.manual_seed(epoch_seed)
            now_frozen = trainer.epoch < cfg.train.freeze_encoder_epochs
            if now_frozen != frozen:
                trainer.model.freeze_encoder(now_frozen)
                forward, frozen = _ddp_forward(trainer), now_frozen

            entry = {"epoch": trainer.epoch + 1, **train_one_epoch(trainer, forward)}
            trainer.epoch += 1
            stop = _after_epoch(trainer, entry, writer)
            if dist_utils.broadcast_flag(stop, trainer.device):
                break
    finally:
        if writer is not None:
            writer.close()
        dist_utils.shutdown_distributed()
    return entry


def _after_epoch(trainer: Trainer, entry: dict[str, Any], writer: Any) -> bool:
    """Validate, log, checkpoint. Returns whether to stop (early stopping, time budget)."""
    cfg = trainer.cfg.train
    # stop when another epoch of the same length would overrun the time budget
    out_of_time = not trainer.clock.room_for(entry["train_time_s"] * 1.05)
    last = trainer.epoch == cfg.epochs or out_of_time
    improved = False
    if trainer.val_loader is not None and (trainer.epoch % cfg.val_every == 0 or last):
        scores = _validate(trainer)
        entry.update({k: scores[k] for k in METRIC_KEYS})
        entry["per_class_iou"] = {name: v["iou"] for name, v in scores["per_class"].items()}
        improved = scores["miou"] is not None and scores["miou"] > trainer.best_miou
        if improved:
            trainer.best_miou, trainer.best_epoch, trainer.stale_validations = scores["miou"], trainer.epoch, 0
        else:
            trainer.stale_validations += 1
    entry["elapsed_s"] = trainer.clock.elapsed()
    trainer.history.append(entry)
    _log_epoch(trainer, entry)
    if trainer.dist.is_main:
        _write_metrics_log(trainer)
        state = _checkpoint_state(trainer)
        if improved or trainer.val_loader is None:
            save_checkpoint(state, trainer.run_dir / "best.pt")
        save_checkpoint(state, trainer.run_dir / "last.pt")
        if writer is not None:
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    writer.add_scalar(key, value, trainer.epoch)
    if cfg.early_stop_patience and trainer.stale_validations >= cfg.early_stop_patience:
        print(f"early stop: no better val mIoU for {trainer.stale_validations} validations", flush=True)
        return True
    if out_of_time and trainer.epoch < cfg.epochs:
        print(f"time budget of {cfg.time_limit_minutes:g} min: stopping after epoch {trainer.epoch}", flush=True)
        return True
    return False


# ------------------------------------------------------------------ commands
def _default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_train(
    config_path: str | None, overrides: list[str], run_dir: str | None = None, resume: str | None = None
) -> int:
    """``semseg train``: a new run, or ``--resume DIR`` from DIR/last.pt."""
    if resume:
        run_path = Path(resume)
        state = load_checkpoint(run_path / "last.pt")
        cfg = load_config(config_path, overrides, base=state["config"])
        fit(cfg, run_path, resume_state=state)
    else:
        cfg = load_config(config_path, overrides)
        run_path = Path(run_dir) if run_dir else _default_run_dir(cfg)
        if (run_path / "last.pt").exists():
            raise SemsegError(f"{run_path} already holds a run (last.pt); continue it with --resume {run_path} or pick another --run-dir")
        fit(cfg, run_path)
    print(f"run folder: {run_path} (best.pt, last.pt, metrics.jsonl, config.yaml)")
    return 0


def run_val(
    checkpoint: str, overrides: list[str], json_path: str | None = None, save_examples: int = 0, out_dir: str | None = None
) -> int:
    """``semseg val``: evaluate a checkpoint on its config's val split (overridable)."""
    from semseg.data import build_dataset, eval_transform
    from semseg.models import load_model

    state = load_checkpoint(checkpoint)
    cfg = load_config(None, overrides, base=state.get("config") or {})
    model = load_model(checkpoint)
    meta = model.pretrained_cfg
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    channels_last = use_channels_last(cfg.train.channels_last, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dataset = build_dataset(cfg.data, cfg.data.val_split, eval_transform(cfg.data))
    if dataset.info.num_classes != meta.num_classes:
        raise SemsegError(
            f"{checkpoint}: the model predicts {meta.num_classes} classes but the {cfg.data.format} "
            f"dataset at {cfg.data.root} has {dataset.info.num_classes}"
        )
    matrix = evaluate(model, eval_loader(dataset, cfg.data.workers, dist_utils.DistInfo()), meta.num_classes,
                      cfg.data.ignore_index, device, precision, channels_last)
    scores = report(matrix, dataset.info.class_names)
    print(format_report(scores))
    if json_path:
        write_text_atomic(json_path, json.dumps(scores, indent=2))
    if save_examples:
        folder = Path(out_dir) if out_dir else Path(checkpoint).parent / "examples"
        _save_examples(model, dataset, save_examples, folder, device, precision)
        print(f"example panels: {folder}")
    return 0


@torch.no_grad()
def _save_examples(model: nn.Module, dataset: Any, count: int, folder: Path, device: torch.device, precision: str) -> None:
    from semseg.io import encode_image_png, write_bytes_atomic
    from semseg.reports.viz import panel

    meta = model.pretrained_cfg
    mean = torch.tensor(meta.mean).view(3, 1, 1)
    std = torch.tensor(meta.std).view(3, 1, 1)
    model.eval()
    for index in range(min(count, len(dataset))):
        image, mask = dataset[index]
        with autocast(precision, device):
            prediction = model(image[None].to(device)).argmax(1)[0].cpu()
        rgb = ((image * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        figure = panel(rgb, mask.numpy(), prediction.numpy(), meta.palette, meta.class_names, meta.ignore_index)
        name = Path(dataset.samples[index][0]).stem
        write_bytes_atomic(folder / f"{name}.png", encode_image_png(figure))

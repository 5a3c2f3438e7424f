"""The training loop as plain functions: :func:`fit` -> :func:`train_one_epoch`, then validate, log, checkpoint.

The loss is computed at the call site, torchvision's recipe: ``criterion(out,
masks)`` plus ``train.aux_weight * criterion(aux, masks)`` for each aux head
(``"aux"``, ``"aux2"``, ...), plus the boundary loss for models with a
``"boundary"`` head. Epoch lines and stop reasons go to this module's logger; progress
within an epoch to :mod:`semseg.progress`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semseg.checkpoint import load_checkpoint, save_checkpoint
from semseg.config import RunConfig, load_config, to_yaml
from semseg.engine import distributed as dist_utils
from semseg.engine.evaluate import validate
from semseg.engine.setup import setup_trainer
from semseg.engine.state import checkpoint_state, epoch_seed, restore_state, seed_everything, write_metrics_log
from semseg.engine.trainer import Trainer
from semseg.errors import SemsegError
from semseg.losses.boundary import boundary_loss
from semseg.io import write_text_atomic
from semseg.metrics import MEAN_KEYS
from semseg.progress import Progress
from semseg.runtime.precision import autocast

log = logging.getLogger(__name__)


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


def training_loss(outputs: dict[str, torch.Tensor], masks: torch.Tensor, criterion: nn.Module, aux_weight: float,
                  ignore_index: int) -> torch.Tensor:
    """The loss of one batch: ``criterion(out, masks)``, plus ``aux_weight * criterion(aux, masks)`` for
    every auxiliary head (``"aux"``, ``"aux2"``, ...: deep supervision), plus PIDNet's boundary loss
    when the model has a ``"boundary"`` head. ``outputs`` is what ``forward_aux`` returns.
    """
    loss = criterion(outputs["out"].float(), masks)
    for key in [k for k in outputs if k.startswith("aux")]:
        loss = loss + aux_weight * criterion(outputs[key].float(), masks)
    if "boundary" in outputs:
        loss = loss + boundary_loss(outputs["boundary"], outputs["out"], masks, criterion, ignore_index)
    return loss


def _to_device(trainer: Trainer, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(trainer.device, non_blocking=True)
    if trainer.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, masks.to(trainer.device, non_blocking=True)


def train_one_epoch(trainer: Trainer, forward: nn.Module) -> dict[str, float]:
    """One pass over the training set, cut short at the step that spends the time budget.

    Returns ``train_loss`` (mean over the batches run), ``lr`` (the lr of the last
    optimizer step), ``images_per_s``, ``train_time_s`` and ``batches`` (run of ``len(loader)``).
    """
    cfg = trainer.cfg.train
    trainer.model.train()
    if trainer.epoch < cfg.freeze_encoder_epochs:
        trainer.model.freeze_encoder(True)  # also keeps the encoder's BatchNorm statistics still
    loader = trainer.train_loader
    steps = len(loader)
    bar = Progress(steps, f"epoch {trainer.epoch + 1}/{cfg.epochs}", unit="batch", logger=log, every=cfg.log_every,
                   enabled=trainer.dist.is_main)
    total_loss, seen, done, start = 0.0, 0, 0, time.perf_counter()
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.optimizer.zero_grad(set_to_none=True)
    for i, (images, masks) in enumerate(loader):
        images, masks = _to_device(trainer, images, masks)
        with autocast(trainer.precision, trainer.device):
            loss = training_loss(forward(images), masks, trainer.criterion, cfg.aux_weight, trainer.cfg.data.ignore_index)
        if not torch.isfinite(loss):
            raise SemsegError(
                f"the loss became {loss.item()} at epoch {trainer.epoch + 1}, batch {i + 1}: the run stopped. "
                f"The last good checkpoint is {trainer.run_dir / 'last.pt'} (epoch {trainer.epoch}); "
                "lower train.lr, add train.clip_grad or check the labels, then --resume"
            )
        trainer.scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0:
            lr = trainer.optimizer.param_groups[0]["lr"]  # the lr this step uses
            _optimizer_step(trainer)
        total_loss += loss.item()
        done += 1
        seen += images.shape[0] * trainer.dist.world_size
        bar.update(1, loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", img_s=f"{seen / (time.perf_counter() - start):.1f}")
        if trainer.clock.out_of_time:  # checked after every optimizer step: the run ends within a step of its budget
            break
    bar.close()
    elapsed = time.perf_counter() - start
    mean_loss = dist_utils.mean_across_ranks(total_loss / max(1, done), trainer.device)
    return {"train_loss": mean_loss, "lr": lr, "images_per_s": seen / elapsed, "train_time_s": elapsed, "batches": done}


def _optimizer_step(trainer: Trainer) -> None:
    cfg = trainer.cfg.train
    if cfg.clip_grad:
        trainer.scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), cfg.clip_grad)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    if trainer.clock.limit_s is not None:
        # one sample of the spent budget (rank 0's, under DDP) drives both the schedule and the stop check
        trainer.clock.spent = dist_utils.broadcast_value(trainer.clock.tick(), trainer.device)
    trainer.scheduler.step()
    trainer.step += 1
    if trainer.ema is not None:
        trainer.ema.update_parameters(trainer.model)


def _ddp_forward(trainer: Trainer) -> nn.Module:
    """The module the loop calls; wrapped in DDP under torchrun (rebuilt when freezing changes)."""
    with_aux = bool(getattr(trainer.model, "has_aux", False)) and trainer.cfg.train.aux_weight > 0
    forward = _TrainForward(trainer.model, with_aux)
    if not trainer.dist.enabled:
        return forward
    device_ids = [trainer.device.index] if trainer.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(forward, device_ids=device_ids)


def _log_epoch(trainer: Trainer, entry: dict[str, Any]) -> None:
    if not trainer.dist.is_main:
        return
    parts = [f"epoch {entry['epoch']}/{trainer.cfg.train.epochs}", f"loss {entry['train_loss']:.4f}", f"lr {entry['lr']:.2e}"]
    parts.append(f"{entry['images_per_s']:.1f} img/s")
    if "miou" in entry:
        parts.append(f"val mIoU {100 * entry['miou']:.2f}")
        parts.append(f"best {100 * trainer.best_miou:.2f} (epoch {trainer.best_epoch})")
    log.info(" | ".join(parts))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def fit(cfg: RunConfig, run_dir: str | Path, resume_state: dict | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into ``run_dir``; returns the last epoch's log entry."""
    run_dir = Path(run_dir)
    trainer = setup_trainer(cfg, run_dir, resume_state)
    if resume_state is not None:
        restore_state(trainer, resume_state)
    is_main = trainer.dist.is_main
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        write_metrics_log(trainer)  # on resume: drop lines of epochs after the checkpoint
    writer = _tensorboard(run_dir) if is_main else None
    entry: dict[str, Any] = {}
    frozen = None
    forward = None
    try:
        while trainer.epoch < cfg.train.epochs:
            seed = epoch_seed(cfg.train.seed, trainer.epoch)
            seed_everything(seed)
            trainer.train_loader.sampler.set_epoch(trainer.epoch)
            trainer.train_loader.generator.manual_seed(seed)
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
    started = time.monotonic()
    out_of_time = trainer.clock.out_of_time
    last = trainer.epoch == cfg.epochs or out_of_time
    improved = validated = False
    if trainer.val_loader is not None and (trainer.epoch % cfg.val_every == 0 or last):
        scores = validate(trainer)
        validated = True
        entry.update({k: scores[k] for k in MEAN_KEYS})
        entry["per_class_iou"] = {name: v["iou"] for name, v in scores["per_class"].items()}
        improved = scores["miou"] is not None and scores["miou"] > trainer.best_miou
        if improved:
            trainer.best_miou, trainer.best_epoch, trainer.stale_validations = scores["miou"], trainer.epoch, 0
        else:
            trainer.stale_validations += 1
        entry["eval_time_s"] = time.monotonic() - started
    entry["elapsed_s"] = trainer.clock.elapsed()
    trainer.history.append(entry)
    _log_epoch(trainer, entry)
    if trainer.dist.is_main:
        write_metrics_log(trainer)
        state = checkpoint_state(trainer)
        if improved or trainer.val_loader is None:
            save_checkpoint(state, trainer.run_dir / "best.pt")
        save_checkpoint(state, trainer.run_dir / "last.pt")
        if writer is not None:
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    writer.add_scalar(key, value, trainer.epoch)
    if validated or trainer.val_loader is None:
        # what the closing validation and checkpoints cost: kept out of the training time of the budget
        trainer.clock.reserve_s = time.monotonic() - started
    if cfg.early_stop_patience and trainer.stale_validations >= cfg.early_stop_patience:
        log.info("early stop: no better val mIoU for %d validations", trainer.stale_validations)
        return True
    if out_of_time and trainer.epoch < cfg.epochs:
        log.info("time budget of %g min spent after batch %d/%d of epoch %d: stopping", cfg.time_limit_minutes,
                 entry["batches"], len(trainer.train_loader), trainer.epoch)
        return True
    return False


def _default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    config_path: str | Path | None, overrides: list[str], run_dir: str | Path | None = None, resume: str | Path | None = None
) -> Path:
    """``semseg train``: a new run (config file, then ``key=value`` overrides), or ``resume`` the run in that folder.

    Returns the run folder.
    """
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
    return run_path

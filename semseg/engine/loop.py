"""The training loop as plain functions: :func:`fit` -> :func:`train_one_epoch`, then validate, log, checkpoint.

A batch's forward and loss are :mod:`semseg.engine.step`'s. Epoch lines and stop reasons go
to this module's logger; progress within an epoch to :mod:`semseg.progress`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from semseg.checkpoint import load_checkpoint, save_checkpoint
from semseg.config import RunConfig, check_resume_changes, load_config, to_yaml
from semseg.data.mixing import class_mix
from semseg.engine import distributed as dist_utils
from semseg.engine.evaluate import validate
from semseg.engine.setup import setup_trainer
from semseg.engine.state import best_state, checkpoint_state, epoch_seed, restore_state, seed_everything, write_metrics_log
from semseg.engine.step import train_forward, training_loss
from semseg.engine.trainer import Trainer
from semseg.errors import SemsegError
from semseg.io import folder_lock, write_text_atomic
from semseg.metrics import MEAN_KEYS, format_report
from semseg.progress import Progress
from semseg.reports.report import ReportInputs, write_report, write_results_csv
from semseg.runtime.precision import autocast

log = logging.getLogger(__name__)


def _to_device(trainer: Trainer, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(trainer.device, non_blocking=True)
    if trainer.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, masks.to(trainer.device, non_blocking=True)


def train_one_epoch(trainer: Trainer, forward: nn.Module) -> dict[str, float]:
    """One pass over the training set, cut short at the step that spends the time budget.

    Returns ``train_loss`` (mean over the batches run), ``lr`` (the lr of the last
    optimizer step), ``images_per_s``, ``train_time_s`` and ``batches`` (run of ``len(loader)``),
    and with ``data.skip_bad_samples`` ``skipped_samples``: the bad samples skipped in this epoch, all ranks.
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
    skipping = getattr(loader.dataset, "skip_bad_samples", False)
    skipped_before = loader.dataset.skipped if skipping else 0
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.optimizer.zero_grad(set_to_none=True)
    for i, (images, masks) in enumerate(loader):
        images, masks = _to_device(trainer, images, masks)
        if trainer.cfg.data.class_mix > 0:
            images, masks = class_mix(images, masks, trainer.cfg.data.class_mix, trainer.cfg.data.ignore_index)
        with autocast(trainer.precision, trainer.device):
            loss = training_loss(forward(images), masks, trainer.criterion, cfg.aux_weight, trainer.cfg.data.ignore_index)
        if not torch.isfinite(loss):
            raise SemsegError(
                f"the loss became {loss.item()} at epoch {trainer.epoch + 1}, batch {i + 1}: the run stopped. "
                f"The last good checkpoint is {trainer.run_dir / 'last.pt'} (epoch {trainer.saved_epoch}); "
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
    result = {"train_loss": mean_loss, "lr": lr, "images_per_s": seen / elapsed, "train_time_s": elapsed, "batches": done}
    if skipping:
        skipped = loader.dataset.skipped - skipped_before
        result["skipped_samples"] = round(dist_utils.mean_across_ranks(skipped, trainer.device) * trainer.dist.world_size)
    return result


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
    forward: nn.Module = train_forward(trainer.model, trainer.cfg.train.aux_weight)
    if trainer.dist.enabled:
        device_ids = [trainer.device.index] if trainer.device.type == "cuda" else None
        forward = nn.parallel.DistributedDataParallel(forward, device_ids=device_ids)
    if trainer.cfg.train.compile:
        # compiled around DDP, as PyTorch's DDP notes advise; the model itself stays uncompiled, so its
        # state dict (checkpoints) and evaluation are the eager ones
        forward = torch.compile(forward)
    return forward


def _log_epoch(trainer: Trainer, entry: dict[str, Any]) -> None:
    if not trainer.dist.is_main:
        return
    parts = [f"epoch {entry['epoch']}/{trainer.cfg.train.epochs}", f"loss {entry['train_loss']:.4f}", f"lr {entry['lr']:.2e}"]
    parts.append(f"{entry['images_per_s']:.1f} img/s")
    if entry.get("skipped_samples"):
        parts.append(f"{entry['skipped_samples']} bad samples skipped")
    if "miou" in entry:
        parts.append(f"val mIoU {100 * entry['miou']:.2f}")
        parts.append(f"best {100 * trainer.best_miou:.2f} (epoch {trainer.best_epoch})")
    log.info(" | ".join(parts))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: pip install 'semseg[tensorboard]'
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _log_scalars(writer: Any, entry: dict[str, Any], epoch: int) -> None:
    """TensorBoard tags: train/loss, train/lr, ..., val/miou, ..., val/iou/<class> per class, time/..."""
    names = {"train_loss": "train/loss", "lr": "train/lr", "images_per_s": "train/images_per_s", "batches": "train/batches",
             "train_time_s": "time/train_s", "eval_time_s": "time/eval_s", "elapsed_s": "time/elapsed_s"}
    for key, value in entry.items():
        if isinstance(value, (int, float)) and key != "epoch":
            writer.add_scalar(names.get(key, f"val/{key}"), value, epoch)
    for name, value in (entry.get("per_class_iou") or {}).items():
        if value is not None:
            writer.add_scalar(f"val/iou/{name}", value, epoch)


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _log_banner(trainer: Trainer, resumed: bool) -> None:
    """What is about to run, before the first batch: model, device, data, schedule, run folder."""
    cfg, t = trainer.cfg, trainer.cfg.train
    val = len(trainer.val_loader.dataset) if trainer.val_loader is not None else 0
    budget = f" or {t.time_limit_minutes:g} min, whichever ends first" if t.time_limit_minutes else ""
    memory = (", channels_last" if trainer.channels_last else "") + (", torch.compile" if t.compile else "")
    ranks = f", {trainer.dist.world_size} processes (DDP)" if trainer.dist.enabled else ""
    weights = f" ({t.class_weights} class weights)" if isinstance(t.class_weights, str) else ""
    lines = [
        f"model    {cfg.model.name}: {_parameters(trainer.model) / 1e6:.2f} M parameters, {len(trainer.class_names)} classes "
        f"({', '.join(trainer.class_names[:6])}{', ...' if len(trainer.class_names) > 6 else ''})",
        f"device   {trainer.device}, {trainer.precision}{memory}{ranks}",
        f"data     {cfg.data.format} at {Path(cfg.data.root).resolve()}: {len(trainer.train_loader.dataset)} train images "
        f"({cfg.data.train_split}; {len(trainer.train_loader)} batches of {t.batch_size}), "
        + (f"{val} val images ({cfg.data.val_split})" if val else "no val split"),
        f"schedule {t.epochs} epochs{budget}; {t.optimizer} lr {t.lr:g} {t.schedule}, loss {t.loss}{weights}",
    ]
    if resumed:
        lines.append(f"resuming after epoch {trainer.epoch} (step {trainer.step})")
    for line in lines:
        log.info(line)


def _stop_reason(trainer: Trainer) -> str:
    cfg = trainer.cfg.train
    if trainer.epoch >= cfg.epochs:
        return "finished"
    if cfg.early_stop_patience and trainer.stale_validations >= cfg.early_stop_patience:
        return f"early stop (no better val mIoU for {trainer.stale_validations} validations)"
    if trainer.clock.out_of_time:
        return f"time budget of {cfg.time_limit_minutes:g} min spent"
    return "running"


def _report_inputs(trainer: Trainer, status: str, scores: dict[str, Any] | None, picture: Any) -> ReportInputs:
    cfg = trainer.cfg
    meta = trainer.model.pretrained_cfg
    facts = {
        "status": status,
        "run_dir": str(trainer.run_dir.resolve()),
        "model": cfg.model.name,
        "parameters": _parameters(trainer.model),
        "data": f"{cfg.data.format} at {Path(cfg.data.root).resolve()}",
        "train_images": len(trainer.train_loader.dataset),
        "val_images": len(trainer.val_loader.dataset) if trainer.val_loader is not None else 0,
        "device": f"{trainer.device}, {trainer.precision}",
        "epochs": f"{trainer.epoch} of {cfg.train.epochs}",
        "best_epoch": trainer.best_epoch if trainer.best_epoch > 0 else None,
        "best_miou": trainer.best_miou if trainer.best_epoch > 0 else None,
        "elapsed_min": round(trainer.clock.elapsed() / 60, 2),
    }
    pixels = {"train (audit)": trainer.class_pixels} if trainer.class_pixels else {}
    return ReportInputs(f"{cfg.name}: {cfg.model.name} on {cfg.data.format}", trainer.class_names,
                        [list(c) for c in meta.palette], scores, trainer.history, pixels, picture, facts,
                        f"validation after epoch {trainer.epoch}")


def _write_reports(trainer: Trainer, status: str, scores: dict[str, Any] | None, picture: Any) -> None:
    """The run folder's report (rank 0). A failure is logged, never allowed to end the run."""
    started = time.perf_counter()
    try:
        if scores is None:
            write_results_csv(trainer.run_dir / "results.csv", trainer.history, trainer.class_names)
        else:
            write_report(trainer.run_dir, _report_inputs(trainer, status, scores, picture))
    except Exception as exc:  # noqa: BLE001 - a figure that fails must not cost the user the run
        log.warning("could not write the run report into %s: %s: %s", trainer.run_dir, type(exc).__name__, exc)
    log.debug("reports written in %.2f s", time.perf_counter() - started)


def fit(cfg: RunConfig, run_dir: str | Path, resume_state: dict | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into ``run_dir``; returns the last epoch's log entry."""
    run_dir = Path(run_dir)
    if dist_utils.launch_rank() == 0:  # named before the setup's slow parts (class statistics)
        log.info("run folder %s", run_dir.resolve())
    trainer = setup_trainer(cfg, run_dir, resume_state)
    if resume_state is not None:
        restore_state(trainer, resume_state)
    is_main = trainer.dist.is_main
    if is_main:
        _log_banner(trainer, resume_state is not None)
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
    if is_main:
        _log_final(trainer)
    return entry


def _log_final(trainer: Trainer) -> None:
    """The per-class table of best.pt's validation, and where the report is."""
    if trainer.best_scores is not None:
        log.info("per-class scores of best.pt (epoch %d, %s):\n%s", trainer.best_epoch,
                 f"{trainer.cfg.data.val_split} split", format_report(trainer.best_scores))
    if (trainer.run_dir / "report.html").is_file():
        log.info("report: %s", (trainer.run_dir / "report.html").resolve())


def _after_epoch(trainer: Trainer, entry: dict[str, Any], writer: Any) -> bool:
    """Validate, log, checkpoint, report. Returns whether to stop (early stopping, time budget)."""
    cfg = trainer.cfg.train
    started = time.monotonic()
    out_of_time = trainer.clock.out_of_time
    last = trainer.epoch == cfg.epochs or out_of_time
    improved = False
    scores = picture = None
    if trainer.val_loader is not None and (trainer.epoch % cfg.val_every == 0 or last):
        scores, picture = validate(trainer, cfg.gallery_frames if cfg.reports else 0)
        entry.update({k: scores[k] for k in MEAN_KEYS})
        entry["per_class_iou"] = {name: v["iou"] for name, v in scores["per_class"].items()}
        improved = scores["miou"] is not None and scores["miou"] > trainer.best_miou
        if improved:
            trainer.best_miou, trainer.best_epoch, trainer.stale_validations = scores["miou"], trainer.epoch, 0
            trainer.best_scores = scores
        else:
            trainer.stale_validations += 1
        entry["eval_time_s"] = time.monotonic() - started
    entry["elapsed_s"] = trainer.clock.elapsed()
    trainer.history.append(entry)
    _log_epoch(trainer, entry)
    early_stop = bool(cfg.early_stop_patience) and trainer.stale_validations >= cfg.early_stop_patience
    # last.pt at every validation (best.pt beside it must never be newer), at the end, every checkpoint_every epochs
    checkpointed = scores is not None or last or early_stop or trainer.epoch % cfg.checkpoint_every == 0
    if trainer.dist.is_main:
        write_metrics_log(trainer)
        if checkpointed:
            state = checkpoint_state(trainer)
            if improved or trainer.val_loader is None:
                save_checkpoint(best_state(state), trainer.run_dir / "best.pt")  # weights and scores; resume uses last.pt
            save_checkpoint(state, trainer.run_dir / "last.pt")
        if cfg.reports:
            _write_reports(trainer, _stop_reason(trainer), scores, picture)
        if writer is not None:
            _log_scalars(writer, entry, trainer.epoch)
    if checkpointed:
        trainer.saved_epoch = trainer.epoch
        if scores is not None or trainer.val_loader is None:
            # what the closing validation, checkpoints and reports cost: kept out of the training time of the budget
            trainer.clock.reserve_s = time.monotonic() - started
    if early_stop:
        log.info("early stop: no better val mIoU for %d validations", trainer.stale_validations)
        return True
    if out_of_time and trainer.epoch < cfg.epochs:
        log.info("time budget of %g min spent after batch %d/%d of epoch %d: stopping", cfg.time_limit_minutes,
                 entry["batches"], len(trainer.train_loader), trainer.epoch)
        return True
    return False


def _default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``semseg train``: ``run_dir`` (absolute) and whether it holds a ``last.pt`` to resume from."""

    def __init__(self, run_dir: Path, resumable: bool) -> None:
        super().__init__(str(run_dir))
        self.run_dir, self.resumable = run_dir, resumable


# what a run writes into its folder: a folder holding any of them holds a previous run
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml")
# what else a run writes there (semseg.reports), removed with RUN_FILES by --overwrite
REPORT_FILES = ("results.csv", "summary.json", "report.html", "results.png", "class_iou.png", "confusion_matrix.png",
                "confusion_matrix_normalized.png", "class_pixels.png", "val_gallery.png")


def train(
    config_path: str | Path | None,
    overrides: list[str],
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """``semseg train``: a new run (config file, then ``key=value`` overrides), or ``resume`` the run in that folder.

    The run folder is locked for the life of the run (a second command on it is
    refused; the lock dies with the process). A new run refuses a folder holding
    any of :data:`RUN_FILES` unless ``overwrite``, which deletes them (and the
    report files and ``tensorboard/``) first. Returns the run folder. Ctrl-C
    raises :class:`TrainingInterrupted` naming the folder to ``--resume``.
    """
    if resume:
        run_path = Path(resume)
        if not (run_path / "last.pt").is_file():  # checked before the lock, which would create the folder
            raise SemsegError(f"{run_path / 'last.pt'}: checkpoint file not found; --resume DIR takes the folder of a run")
    else:
        cfg = load_config(config_path, overrides)
        run_path = Path(run_dir) if run_dir else _default_run_dir(cfg)
    with _run_folder_lock(run_path):
        if resume:
            state = load_checkpoint(run_path / "last.pt")
            cfg = load_config(config_path, overrides, base=state["config"])
            check_resume_changes(load_config(None, [], base=state["config"]), cfg, run_path)
        else:
            _clear_previous_run(run_path, overwrite)
            state = None
        try:
            fit(cfg, run_path, resume_state=state)
        except KeyboardInterrupt:
            raise TrainingInterrupted(run_path.resolve(), (run_path / "last.pt").is_file()) from None
    return run_path


def _clear_previous_run(run_path: Path, overwrite: bool) -> None:
    """SemsegError when ``run_path`` holds a previous run, unless ``overwrite``: then its files are deleted."""
    previous = [name for name in RUN_FILES if (run_path / name).exists()]
    if not previous:
        return
    if not overwrite:
        resumable = f"continue it with --resume {run_path}, " if "last.pt" in previous else ""
        raise SemsegError(
            f"{run_path} already holds a run ({', '.join(previous)}); {resumable}pick another --run-dir, "
            "or replace it with --overwrite"
        )
    if dist_utils.launch_rank() != 0:
        return
    for name in (*RUN_FILES, *REPORT_FILES):
        (run_path / name).unlink(missing_ok=True)
    shutil.rmtree(run_path / "tensorboard", ignore_errors=True)
    log.info("--overwrite: removed the previous run's files from %s", run_path)


@contextlib.contextmanager
def _run_folder_lock(run_path: Path) -> Iterator[None]:
    """The run folder locked for the block, by rank 0 (the process that writes it); other ranks only read it."""
    if dist_utils.launch_rank() != 0:
        yield
        return
    with folder_lock(run_path, "run folder"):
        yield

"""Evaluation: one confusion matrix over a loader, the training-time validation, and ``semseg val`` on a checkpoint.

Training-time validation and ``semseg val`` both call :func:`evaluate`, so they
agree exactly. Either may pick gallery frames on the way (a
:class:`~semseg.reports.gallery.FramePicker`): then every frame is also counted
into its own small matrix for its frame IoU, and the totals stay the same.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from semseg.checkpoint import load_checkpoint
from semseg.config import load_config
from semseg.data import build_dataset, eval_transform
from semseg.engine import distributed as dist_utils
from semseg.engine.setup import eval_loader
from semseg.engine.trainer import Trainer
from semseg.errors import SemsegError
from semseg.io import encode_image_png, write_bytes_atomic, write_text_atomic
from semseg.metrics import BoundaryIoU, ConfusionMatrix, collapse_warning, report, report_json
from semseg.models import load_model
from semseg.models.factory import default_model_path
from semseg.progress import Progress
from semseg.reports.gallery import Frame, FramePicker, GalleryRow, frame_iou, gallery
from semseg.reports.report import ReportInputs, write_report
from semseg.runtime.precision import (
    autocast,
    measures_precision,
    resolve_device,
    resolve_precision,
    use_channels_last,
)

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    ignore_index: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    boundary: BoundaryIoU | None = None,
    pickers: Sequence[FramePicker] = (),
    progress: bool = True,
) -> ConfusionMatrix:
    """Whole-image evaluation into one confusion matrix, summed over DDP ranks.

    Training-time validation and ``semseg val`` both call this, so they agree exactly.
    ``boundary``, when given, accumulates boundary IoU over the same predictions
    (``semseg val`` does; training-time validation leaves it out, as it costs
    several times the matrix and mIoU picks the best epoch).
    Each of ``pickers`` is offered every frame (its index in the whole dataset, also
    when ``loader.dataset`` is a rank's :class:`Subset` of it; its frame IoU and
    prediction); ``progress`` shows a bar (a line per 10% in a log).
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    frame = ConfusionMatrix(num_classes, ignore_index) if pickers else None
    position = 0
    total = len(loader.dataset) if hasattr(loader, "dataset") else len(loader)  # type: ignore[arg-type]
    shard = getattr(loader, "dataset", None)
    indices = shard.indices if isinstance(shard, Subset) else None  # a DDP rank's share: frames by whole-dataset index
    with Progress(total, "validate", unit="img", logger=log, enabled=progress) as bar:
        for images, masks in loader:
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(precision, device):
                logits = model(images)
            predictions = logits.argmax(1)
            if boundary is not None:
                boundary.update(predictions, masks)
            if frame is None:
                matrix.update(predictions, masks)
            else:
                for prediction, mask in zip(predictions, masks):
                    frame.reset()
                    frame.update(prediction, mask)
                    matrix.merge(frame)
                    iou, labels = frame_iou(frame.matrix), prediction.cpu().numpy()
                    for picker in pickers:
                        picker.offer(indices[position] if indices is not None else position, iou, labels)
                    position += 1
            bar.update(images.shape[0])
    matrix.all_reduce()
    if boundary is not None:
        boundary.all_reduce()
    return matrix


def _sample_name(dataset: Dataset, position: int) -> str:
    """The image file name of ``dataset[position]`` (a :class:`SegDataset` or a DDP :class:`Subset` of one)."""
    if isinstance(dataset, Subset):
        dataset, position = dataset.dataset, dataset.indices[position]
    samples = getattr(dataset, "samples", None)
    return Path(samples[position][0]).name if samples else f"#{position}"


def _rgb(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalized float [3, H, W] image back to uint8 [H, W, 3]."""
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return ((image * std_t + mean_t).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _title(frame: Frame, rank: int, name: str) -> str:
    iou = "no labelled pixels" if math.isnan(frame.iou) else f"IoU {100 * frame.iou:.1f}%"
    return f"{frame.kind} {rank}: {name}, {iou}"


def gallery_rows(dataset: Dataset, frames: Sequence[Frame], mean: Sequence[float], std: Sequence[float]) -> list[GalleryRow]:
    """The gallery rows of ``frames`` picked from ``dataset`` (positions in it): each image re-read and
    un-normalized, its mask, the kept prediction."""
    rows, ranks = [], {"spread": 0, "worst": 0}
    for frame in frames:
        image, mask = dataset[frame.index]
        ranks[frame.kind] += 1
        rows.append(GalleryRow(_title(frame, ranks[frame.kind], _sample_name(dataset, frame.index)), _rgb(image, mean, std),
                               np.asarray(mask), frame.prediction))
    return rows


def validate(trainer: Trainer, gallery_frames: int = 0) -> tuple[dict[str, Any], np.ndarray | None]:
    """The training-time validation: :func:`evaluate` of the evaluated weights, as a :func:`report` dict,
    and the gallery picture of ``gallery_frames`` spread and worst frames of the whole val set (under
    DDP each rank picks from its share and rank 0 merges the choices; None on other ranks and
    without frames)."""
    dataset = trainer.val_loader.dataset
    if isinstance(dataset, Subset):  # a DDP rank's share
        dataset = dataset.dataset
    picker = FramePicker(len(dataset), gallery_frames) if gallery_frames else None
    matrix = evaluate(
        trainer.eval_model,
        trainer.val_loader,
        len(trainer.class_names),
        trainer.cfg.data.ignore_index,
        trainer.device,
        trainer.precision,
        trainer.channels_last,
        pickers=[picker] if picker is not None else [],
        progress=trainer.dist.is_main,
    )
    scores = report(matrix, trainer.class_names)
    if picker is not None and trainer.dist.enabled:
        shares = dist_utils.gather_objects(picker.candidates())  # every rank takes part
        picker = FramePicker(len(dataset), gallery_frames) if trainer.dist.is_main else None
        if picker is not None:
            for share in shares:
                picker.merge(share)  # type: ignore[arg-type]
    if picker is None or not picker.frames():
        return scores, None
    meta = trainer.model.pretrained_cfg
    rows = gallery_rows(dataset, picker.frames(), meta.mean, meta.std)
    return scores, gallery(rows, trainer.class_names, meta.palette, trainer.cfg.data.ignore_index)


def evaluate_checkpoint(
    checkpoint: str | Path | None,
    overrides: list[str],
    json_path: str | Path | None = None,
    save_examples: int = 0,
    out_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """``semseg val``: the :func:`report` of a checkpoint on its config's val split (``overrides`` apply), with boundary IoU.

    ``checkpoint`` None: the embedded default model. A config without a val split (a
    model trained on train+val, like the default model) is evaluated on the format's
    ``test`` split. Writes the report to ``json_path``; ``save_examples`` N:
    image | truth | prediction | error panels of N frames spread over the split and
    of the N worst by frame IoU, into ``out_dir`` (default: ``examples/`` beside the
    checkpoint); ``report_dir``: the report folder of :mod:`semseg.reports.report`.
    Returns the report and the panels' folder (None without panels).
    """
    checkpoint = Path(checkpoint) if checkpoint is not None else default_model_path()
    state = load_checkpoint(checkpoint)
    cfg = load_config(None, overrides, base=state.get("config") or {})
    if not cfg.data.val_split:
        if cfg.data.format == "folder":
            raise SemsegError(f"{checkpoint}: its config has no val split (data.val_split is empty: the model was "
                              "trained without one); name the split to evaluate, e.g. data.val_split=test")
        log.info("%s was trained without a val split (data.val_split is empty): evaluating on the test split "
                 "(data.val_split=NAME chooses another)", checkpoint.name)
        cfg.data.val_split = "test"
    if not cfg.data.root or not Path(cfg.data.root).is_dir():
        raise SemsegError(f"data.root {cfg.data.root!r}: folder not found ({checkpoint.name}'s config names it); "
                          "pass data.root=DIR (the dataset's folder)")
    model = load_model(checkpoint)
    meta = model.pretrained_cfg
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    if measures_precision(cfg.train.precision, device):
        # the precision the run measured and validated in: the same number as its training logged
        precision = state.get("precision") or precision
        log.info("evaluating in %s: the precision %s chose for this model (train.precision=auto on a CPU with "
                 "native bf16; train.precision=fp32 or bf16 overrides it)", precision, checkpoint.name)
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
    for_report = FramePicker(len(dataset), cfg.train.gallery_frames if report_dir else 0)
    for_examples = FramePicker(len(dataset), save_examples)
    boundary = BoundaryIoU(meta.num_classes, cfg.data.ignore_index)
    matrix = evaluate(model, eval_loader(dataset, cfg.data.workers, dist_utils.DistInfo()), meta.num_classes,
                      cfg.data.ignore_index, device, precision, channels_last, boundary,
                      pickers=[p for p in (for_report, for_examples) if p.count])
    names = list(meta.class_names) if meta.class_names else dataset.info.class_names
    palette = [list(c) for c in meta.palette] if meta.palette else dataset.info.palette
    scores = report(matrix, names, boundary)
    counts = matrix.matrix
    if warning := collapse_warning(counts.sum(0), names, counts.sum(1), what=f"{len(dataset)} {cfg.data.val_split} images"):
        log.warning(warning)
    if json_path:
        write_text_atomic(json_path, report_json(scores))
    if report_dir:
        rows = gallery_rows(dataset, for_report.frames(), meta.mean, meta.std)
        facts = {
            "command": "semseg val",
            "checkpoint": str(checkpoint.resolve()),
            "model": state["model_name"],
            "data": f"{cfg.data.format} at {Path(cfg.data.root).resolve()}, split {cfg.data.val_split} ({len(dataset)} images)",
            "device": f"{device.type}, {precision}",
        }
        inputs = ReportInputs(f"semseg val: {checkpoint.name} on {cfg.data.format} {cfg.data.val_split}", names, palette,
                              scores, facts=facts, scores_caption=f"split {cfg.data.val_split}",
                              gallery=gallery(rows, names, palette, cfg.data.ignore_index) if rows else None)
        log.info("report: %s", write_report(report_dir, inputs).resolve())
    if not save_examples:
        return scores, None
    folder = Path(out_dir) if out_dir else checkpoint.parent / "examples"
    frames = for_examples.frames()
    for row, frame in zip(gallery_rows(dataset, frames, meta.mean, meta.std), frames):
        picture = gallery([row], names, palette, cfg.data.ignore_index, tile_width=row.truth.shape[1])
        name = f"{frame.kind}_{Path(_sample_name(dataset, frame.index)).stem}.png"
        write_bytes_atomic(folder / name, encode_image_png(picture))
    return scores, folder


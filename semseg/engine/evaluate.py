"""Evaluation: one confusion matrix over a loader, the training-time validation, and ``semseg val`` on a checkpoint.

Training-time validation and ``semseg val`` both call :func:`evaluate`, so they agree exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from semseg.checkpoint import load_checkpoint
from semseg.config import load_config
from semseg.data import build_dataset, eval_transform
from semseg.engine import distributed as dist_utils
from semseg.engine.setup import eval_loader
from semseg.engine.trainer import Trainer
from semseg.errors import SemsegError
from semseg.io import encode_image_png, write_bytes_atomic, write_text_atomic
from semseg.metrics import BoundaryIoU, ConfusionMatrix, report
from semseg.models import load_model
from semseg.reports.viz import panel
from semseg.runtime.precision import autocast, resolve_device, resolve_precision, use_channels_last


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
) -> ConfusionMatrix:
    """Whole-image evaluation into one confusion matrix, summed over DDP ranks.

    Training-time validation and ``semseg val`` both call this, so they agree exactly.
    ``boundary``, when given, accumulates boundary IoU over the same predictions
    (``semseg val`` does; training-time validation leaves it out, as it costs
    several times the matrix and mIoU picks the best epoch).
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    for images, masks in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            logits = model(images)
        labels = logits.argmax(1)
        matrix.update(labels, masks)
        if boundary is not None:
            boundary.update(labels, masks)
    matrix.all_reduce()
    if boundary is not None:
        boundary.all_reduce()
    return matrix


def validate(trainer: Trainer) -> dict[str, Any]:
    """The training-time validation: :func:`evaluate` of the evaluated weights, as a :func:`report` dict."""
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


def evaluate_checkpoint(
    checkpoint: str | Path,
    overrides: list[str],
    json_path: str | Path | None = None,
    save_examples: int = 0,
    out_dir: str | Path | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """``semseg val``: the :func:`report` of a checkpoint on its config's val split (``overrides`` apply), with boundary IoU.

    Writes the report to ``json_path`` and ``save_examples`` image | truth |
    prediction panels to ``out_dir`` (default: ``examples/`` beside the
    checkpoint). Returns the report and the panels' folder (None without panels).
    """
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
    boundary = BoundaryIoU(meta.num_classes, cfg.data.ignore_index)
    matrix = evaluate(model, eval_loader(dataset, cfg.data.workers, dist_utils.DistInfo()), meta.num_classes,
                      cfg.data.ignore_index, device, precision, channels_last, boundary)
    scores = report(matrix, dataset.info.class_names, boundary)
    if json_path:
        write_text_atomic(json_path, json.dumps(scores, indent=2))
    if not save_examples:
        return scores, None
    folder = Path(out_dir) if out_dir else Path(checkpoint).parent / "examples"
    save_example_panels(model, dataset, save_examples, folder, device, precision)
    return scores, folder


@torch.no_grad()
def save_example_panels(
    model: nn.Module, dataset: Any, count: int, folder: Path, device: torch.device, precision: str
) -> None:
    """Image | ground truth | prediction panels of the first ``count`` samples, as ``folder/<name>.png``."""
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

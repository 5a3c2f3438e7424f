"""``semseg data check``: audit a dataset before anyone trains on it.

Every image and mask of a split is decoded (in DataLoader worker processes) and
checked: pairs without image or mask, unreadable or truncated files, image/mask
size mismatches, label values or colours that are neither a class nor ignore.
The report adds per-class pixel and image frequencies and suggested class
weights, and names every bad file.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from semseg.config import DataConfig, load_config, parse_holdout, validate
from semseg.data.datasets import (
    SegDataset,
    accumulate_counts,
    check_same_size,
    dataset_info,
    mask_counts,
    parallel_map,
)
from semseg.data.masks import mask_decoder
from semseg.data.splits import grouping, leakage_warning, split_listing
from semseg.errors import SemsegError
from semseg.io import write_text_atomic
from semseg.losses import enet_weights, median_frequency_weights

# below this many samples, starting worker processes costs more than it saves
MIN_SAMPLES_FOR_WORKERS = 32
# groups named in the printed report (the JSON report has them all)
MAX_GROUPS_SHOWN = 12


def _error(path: Path, exc: SemsegError) -> dict[str, str]:
    """{"file", "message"}, without the file name the message starts with."""
    message = str(exc)
    prefix = f"{path}: "
    return {"file": str(path), "message": message[len(prefix):] if message.startswith(prefix) else message}


class _AuditSample(Dataset):
    """``[i]`` -> (errors of sample i, its mask_counts row or None when the sample is bad)."""

    def __init__(self, dataset: SegDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[list[dict[str, str]], np.ndarray | None]:
        image_path, mask_path = self.dataset.samples[index]
        errors = []
        image = mask = None
        try:
            image = self.dataset.read_image(index)
        except SemsegError as exc:
            errors.append(_error(image_path, exc))
        try:
            mask = self.dataset.read_mask(index)
        except SemsegError as exc:
            errors.append(_error(mask_path, exc))
        if image is not None and mask is not None:
            try:
                check_same_size(image, mask, image_path, mask_path)
            except SemsegError as exc:
                errors.append(_error(mask_path, exc))
        if errors:
            return errors, None
        info = self.dataset.info
        return errors, mask_counts(mask, info.num_classes, info.ignore_index)


def _suggested_weights(class_pixels: list[int], present_pixels: list[int]) -> dict[str, list[float]]:
    """{"median_freq": [...], "enet": [...]} per class; empty lists when no pixel was counted."""
    if not any(class_pixels):
        return {"median_freq": [], "enet": []}
    return {
        "median_freq": median_frequency_weights(class_pixels, present_pixels).tolist(),
        "enet": enet_weights(class_pixels).tolist(),
    }


def _as_validation(cfg: DataConfig, split: str) -> DataConfig:
    """The settings whose train/val overlap the audit reports: a held-out ``split`` (``fold:K/N``,
    ``groups:...``) is the validation set it describes; a named split is audited beside ``data.val_split``."""
    return replace(cfg, val_split=split) if parse_holdout(split) else cfg


def check_dataset(cfg: DataConfig, split: str, workers: int | None = None) -> dict[str, Any]:
    """Audit ``split`` of ``cfg``'s dataset. Decodes in ``workers`` processes (default ``cfg.workers``).

    Returns a JSON-ready report: ``num_images`` (pairs found), ``num_counted`` (pairs
    read cleanly, the ones the statistics count), ``class_names``, ``class_pixels``,
    ``image_counts``, ``present_pixels``, ``ignored_pixels``, ``suggested_weights``
    ({"median_freq", "enet"}), ``group_by`` and ``groups`` (samples per group, see
    :mod:`semseg.data.splits`), ``warnings`` (absent classes; groups shared by the
    training and validation splits) and ``errors`` ([{"file", "message"}]).
    """
    info = dataset_info(cfg)
    decoder = mask_decoder(cfg, info.num_classes)
    listing = split_listing(cfg, split)
    dataset = SegDataset(listing.pairs, info, decoder)
    groups_of = grouping(cfg)
    workers = cfg.workers if workers is None else workers
    results = parallel_map(_AuditSample(dataset), workers if len(dataset) >= MIN_SAMPLES_FOR_WORKERS else 0, "data check")
    errors = [{"file": str(path), "message": message} for path, message in listing.problems]
    errors += [error for sample_errors, _ in results for error in sample_errors]
    stats = accumulate_counts([counts for _, counts in results if counts is not None], info.num_classes)
    counted = stats.pop("num_images")
    absent = [name for name, n in zip(info.class_names, stats["class_pixels"]) if n == 0 and counted]
    return {
        "format": cfg.format,
        "root": str(cfg.root),
        "split": split,
        "num_images": len(listing.pairs),
        "num_counted": counted,
        "num_classes": info.num_classes,
        "class_names": info.class_names,
        "ignore_index": info.ignore_index,
        **stats,
        "suggested_weights": _suggested_weights(stats["class_pixels"], stats["present_pixels"]),
        "group_by": groups_of.pattern.pattern if groups_of else None,
        "groups": groups_of.sizes(listing.pairs) if groups_of else {},
        "warnings": [f"class {name!r} has no pixels in this split" for name in absent]
        + [w for w in [leakage_warning(_as_validation(cfg, split))] if w],
        "errors": errors,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable table, then every error."""
    total = sum(report["class_pixels"]) + report["ignored_pixels"]
    share = (lambda n: 100.0 * n / total) if total else (lambda n: 0.0)
    width = max([len("ignored")] + [len(n) for n in report["class_names"]])
    lines = [
        f"{report['format']} dataset at {report['root']}, split {report['split']}: "
        f"{report['num_images']} image/mask pairs, {report['num_counted']} read cleanly",
        "",
        f"{'id':>4}  {'class':<{width}}  {'pixels':>14}  {'%':>6}  {'images':>7}  {'median-freq':>11}  {'enet':>7}",
    ]
    weights = report["suggested_weights"]
    for i, name in enumerate(report["class_names"]):
        pixels = report["class_pixels"][i]
        lines.append(
            f"{i:>4}  {name:<{width}}  {pixels:>14,}  {share(pixels):>6.2f}  {report['image_counts'][i]:>7}"
            + (f"  {weights['median_freq'][i]:>11.4f}  {weights['enet'][i]:>7.3f}" if weights["enet"] else "")
        )
    ignored = report["ignored_pixels"]
    lines.append(f"{report['ignore_index']:>4}  {'ignored':<{width}}  {ignored:>14,}  {share(ignored):>6.2f}")
    if report["groups"]:
        shown = list(report["groups"].items())[:MAX_GROUPS_SHOWN]
        groups = ", ".join(f"{g} ({n})" for g, n in shown)
        more = f", ... and {len(report['groups']) - len(shown)} more" if len(report["groups"]) > len(shown) else ""
        lines += ["", f"{len(report['groups'])} group(s) by data.group_by {report['group_by']!r}: {groups}{more}"]
    lines += [""] + [f"warning: {w}" for w in report["warnings"]]
    errors = report["errors"]
    if errors:
        files = len({e["file"] for e in errors})
        lines.append(f"{len(errors)} error(s) in {files} file(s):")
        lines += [f"  {e['file']}: {e['message']}" for e in errors]
    else:
        lines.append("no errors")
    return "\n".join(lines)


def audit(
    fmt: str | None,
    root: str | None,
    split: str | None = None,
    config_path: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """``semseg data check``: the :func:`check_dataset` report, also written to ``json_path``.

    The dataset description is built from the defaults, then the ``data`` section of
    ``config_path``, then ``overrides`` (``key=value``; the ``data.`` prefix may be left
    out), then ``fmt``, ``root`` and ``split`` when given. ``split`` defaults to
    ``data.train_split``.
    """
    keyed = [o if o.split("=", 1)[0].startswith("data.") else f"data.{o}" for o in overrides or []]
    config = load_config(config_path, keyed)
    data = config.data
    data.format = fmt or data.format
    data.root = root or data.root
    if not data.root:
        raise SemsegError("no dataset root: pass --root DIR (or --config with data.root set)")
    validate(config, dataset_info(data).num_classes)
    report = check_dataset(data, split or data.train_split)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    return report

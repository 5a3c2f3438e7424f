"""Predicting files: sources (files, folders, globs) in, label PNGs, overlays and probability maps out.

Images are decoded in DataLoader workers; one unreadable file is reported and
skipped, the rest are predicted. Every output is written atomically.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from semseg.data.formats import trainid_to_labelid
from semseg.errors import SemsegError
from semseg.io import IMAGE_EXTENSIONS, encode_image_png, list_images, read_image, write_bytes_atomic, write_label_png
from semseg.metrics import collapse_warning
from semseg.predict.predictor import Prediction, Predictor
from semseg.progress import Progress
from semseg.reports.viz import legend, overlay

log = logging.getLogger(__name__)


def resolve_sources(sources: Sequence[str]) -> list[Path]:
    """Image files named by ``sources``: files, folders (their images) and glob patterns, in order."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise SemsegError(f"{source}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif path.is_file():
            found = [path]
        elif any(char in source for char in "*?["):
            found = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise SemsegError(f"{source}: no image matches this pattern")
        else:
            raise SemsegError(f"{source}: no such file or folder")
        files += [f for f in found if f not in files]
    stems: dict[str, Path] = {}
    for file in files:
        if stems.setdefault(file.stem, file) != file:
            raise SemsegError(f"{stems[file.stem]} and {file} would both write {file.stem}.png; predict them into different --out folders")
    return files


class ImageFiles(torch.utils.data.Dataset):
    """Decodes images (in DataLoader workers); a file that cannot be read gives its error instead."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, read_image(self.paths[index]), None
        except SemsegError as exc:
            return index, None, str(exc)


def _keep(item: Any) -> Any:
    return item


# How label PNGs are written: semseg's (class ids as palette indices) or the Cityscapes benchmark's
LABEL_FORMATS = ("semseg", "cityscapes")
# what cityscapesScripts reads a file name as: CITY_SEQUENCE_FRAME[_anything], the key the server matches on
_CITYSCAPES_NAME = re.compile(r"^[A-Za-z]+_\d+_\d+(_|$)")


def check_label_format(label_format: str, files: Sequence[Path], num_classes: int | None = None) -> None:
    """SemsegError unless ``label_format`` is known and (for ``cityscapes``) fits the file names and the model's
    class count (``None``: not known yet, checked once the model is loaded).

    Cityscapes results are labelIds of its 19 training classes, one PNG per test image,
    named after the image (``berlin_000000_000019_leftImg8bit.png``), as the benchmark
    server and cityscapesScripts' evaluator match them by ``CITY_SEQUENCE_FRAME``.
    """
    if label_format not in LABEL_FORMATS:
        raise SemsegError(f"label format must be one of {', '.join(LABEL_FORMATS)}, got {label_format!r}")
    if label_format != "cityscapes":
        return
    if num_classes is not None and num_classes != 19:
        raise SemsegError(f"--format cityscapes writes the 19 Cityscapes training classes as labelIds, "
                          f"but the model predicts {num_classes} classes")
    for path in files:
        if not _CITYSCAPES_NAME.match(path.stem):
            raise SemsegError(f"{path}: --format cityscapes needs Cityscapes file names (CITY_SEQUENCE_FRAME_leftImg8bit.png, "
                              "e.g. berlin_000000_000019_leftImg8bit.png): the benchmark matches results by them")


def write_outputs(out_dir: Path, stem: str, rgb: np.ndarray, prediction: Prediction, palette: list[list[int]],
                  label_format: str = "semseg") -> None:
    """``labels/<stem>.png`` (palette PNG, indices = ids; ``cityscapes``: 8-bit labelIds), ``overlays/``,
    and ``confidence/`` when computed."""
    if label_format == "cityscapes":
        write_label_png(out_dir / "labels" / f"{stem}.png", trainid_to_labelid(prediction.labels))
    else:
        write_label_png(out_dir / "labels" / f"{stem}.png", prediction.labels, palette)
    write_bytes_atomic(out_dir / "overlays" / f"{stem}.png", encode_image_png(overlay(rgb, prediction.labels, palette)))
    if prediction.confidence is not None:
        confidence = np.rint(prediction.confidence * 255).astype(np.uint8)
        write_bytes_atomic(out_dir / "confidence" / f"{stem}.png", encode_image_png(confidence))


class _NpyFile:
    """A ``.npy`` memory map filled in place, renamed over ``path`` once complete (never half-written)."""

    def __init__(self, path: Path) -> None:
        self.path, self.array = path, None
        self.tmp = path.with_name(f".{path.name}.tmp")

    def __call__(self, shape: tuple[int, int, int]) -> np.ndarray:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32, shape=shape)
        return self.array

    def commit(self) -> None:
        self.array.flush()
        self.array = None
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    out_dir: str | os.PathLike,
    confidence: bool = False,
    probs: bool = False,
    workers: int = 1,
    label_format: str = "semseg",
) -> list[Path]:
    """Predict every file into ``out_dir``; returns the files that could not be read (logged, skipped).

    ``label_format``: ``semseg`` or ``cityscapes`` (see :func:`check_label_format`).
    Logs a warning when the predictions of all files together have collapsed to one class
    (:func:`semseg.metrics.collapse_warning`).
    """
    out_dir = Path(out_dir)
    check_label_format(label_format, files, predictor.meta.num_classes)
    loader = torch.utils.data.DataLoader(
        ImageFiles(files), batch_size=None, collate_fn=_keep, num_workers=min(workers, max(len(files) - 1, 0))
    )
    failed: list[Path] = []
    pending: list[tuple[Path, np.ndarray]] = []
    # the key of overlays/: every class's colour and name, in one picture beside them (overlays stay pixel-aligned)
    names = predictor.meta.class_names or [f"class_{c}" for c in range(predictor.meta.num_classes or 0)]
    if names:
        write_bytes_atomic(out_dir / "legend.png", encode_image_png(legend(names, predictor.palette)))
    counts = np.zeros(256, np.int64)  # predicted pixels per class, for the collapse warning
    # probabilities go one image at a time, straight into their .npy memory map
    batch_size = 1 if probs else predictor.batch_size
    with Progress(len(files), "predict", unit="img", logger=log) as bar:
        for index, rgb, error in loader:
            if error is not None:
                log.warning("skipped %s", error)
                failed.append(files[index])
                bar.update(1)
                continue
            if pending and (rgb.shape != pending[0][1].shape or len(pending) == batch_size):
                _predict_pending(predictor, pending, out_dir, confidence, probs, bar, counts, label_format)
            pending.append((files[index], rgb))
        _predict_pending(predictor, pending, out_dir, confidence, probs, bar, counts, label_format)
    names = list(predictor.meta.class_names or [])
    if warning := collapse_warning(counts, names, what=f"{len(files) - len(failed)} predicted image(s)"):
        log.warning(warning)
    return failed


def _predict_pending(
    predictor: Predictor,
    pending: list[tuple[Path, np.ndarray]],
    out_dir: Path,
    confidence: bool,
    probs: bool,
    bar: Progress,
    counts: np.ndarray,
    label_format: str = "semseg",
) -> None:
    if not pending:
        return
    npy = _NpyFile(out_dir / "probs" / f"{pending[0][0].stem}.npy") if probs else None
    try:
        predictions = predictor.predict_batch([rgb for _, rgb in pending], confidence, npy or False)
    except BaseException:
        if npy is not None:
            npy.discard()
        raise
    if npy is not None:
        npy.commit()
    for (path, rgb), prediction in zip(pending, predictions):
        write_outputs(out_dir, path.stem, rgb, prediction, predictor.palette, label_format)
        if prediction.labels.dtype == np.uint8:  # models of more than 256 classes are not checked
            counts += np.bincount(prediction.labels.ravel(), minlength=256)
    bar.update(len(pending))
    pending.clear()

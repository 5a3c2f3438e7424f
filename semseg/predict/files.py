"""Predicting files: sources (files, folders, globs) in, label PNGs, overlays and probability maps out.

Images are decoded ahead in threads (:func:`decode_ahead`); one unreadable file
(corrupt, truncated, too large, not an image) is one warning naming it and one
skipped file, the rest are predicted. The output folder is checked before any work,
locked for the run (a second command writing there is refused) and every
output is written atomically.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import glob
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from semseg.data.formats import trainid_to_labelid
from semseg.errors import SemsegError
from semseg.io import (
    IMAGE_EXTENSIONS,
    folder_lock,
    image_size,
    list_images,
    read_image,
    remove_stale_temporaries,
    staged_path,
    write_image_jpeg,
    write_image_png,
    write_label_png,
)
from semseg.metrics.scores import collapse_warning
from semseg.predict.prediction import Prediction
from semseg.progress import Progress
from semseg.reports.viz import legend, overlay

if TYPE_CHECKING:  # this module imports no torch: it also serves semseg.predict.exported's torch-free path
    from semseg.predict.exported import GraphPredictor
    from semseg.predict.predictor import Predictor

log = logging.getLogger(__name__)

# images above this many pixels are not decoded ahead: each is decoded when its turn comes, so that
# no more than one of them is held at a time
DECODE_AHEAD_PIXELS = 1 << 24
OUTPUT_FOLDERS = ("labels", "overlays", "confidence", "probs")


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
        elif path.exists():
            raise SemsegError(f"{source}: not a regular file")
        else:
            raise SemsegError(f"{source}: no such file or folder")
        files += [f for f in found if f not in files]
    stems: dict[str, Path] = {}
    for file in files:
        if stems.setdefault(file.stem, file) != file:
            raise SemsegError(f"{stems[file.stem]} and {file} would both write {file.stem}.png; predict them into different --out folders")
    return files


def decode_ahead(paths: Sequence[Path], workers: int) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """``(index, rgb, error)`` for every path in order: the decoded image, or the reason it could not be read.

    ``workers`` threads decode up to ``2 * workers`` images ahead of the caller
    (0: each when its turn comes). Threads, not processes: PIL decodes with the
    GIL released, and a decoded image reaches the caller without a copy.
    """

    def decode(index: int, ahead: bool) -> tuple[int, np.ndarray | None, str | None]:
        try:
            if ahead:
                height, width = image_size(paths[index])
                if height * width > DECODE_AHEAD_PIXELS:
                    return index, None, None  # decoded below, when its turn comes
            return index, read_image(paths[index]), None
        except SemsegError as exc:
            return index, None, str(exc)

    def in_turn(result: tuple[int, np.ndarray | None, str | None]) -> tuple[int, np.ndarray | None, str | None]:
        index, rgb, error = result
        return decode(index, ahead=False) if rgb is None and error is None else result

    if workers == 0:
        yield from (decode(index, ahead=False) for index in range(len(paths)))
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="semseg-decode") as pool:
        pending: collections.deque = collections.deque()
        for index in range(len(paths)):
            pending.append(pool.submit(decode, index, True))
            if len(pending) > 2 * workers:
                yield in_turn(pending.popleft().result())
        while pending:
            yield in_turn(pending.popleft().result())


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
    """``labels/<stem>.png`` (palette PNG, indices = ids; ``cityscapes``: 8-bit labelIds), ``overlays/<stem>.jpg``
    (a picture to look at: JPEG, see :func:`semseg.io.write_image_jpeg`), and ``confidence/`` when computed."""
    if label_format == "cityscapes":
        write_label_png(out_dir / "labels" / f"{stem}.png", trainid_to_labelid(prediction.labels))
    else:
        write_label_png(out_dir / "labels" / f"{stem}.png", prediction.labels, palette)
    write_image_jpeg(out_dir / "overlays" / f"{stem}.jpg", overlay(rgb, prediction.labels, palette))
    if prediction.confidence is not None:
        write_image_png(out_dir / "confidence" / f"{stem}.png", np.rint(prediction.confidence * 255).astype(np.uint8))


def predict_files(
    predictor: Predictor | GraphPredictor,
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
    ``out_dir`` is locked while the files are predicted (SemsegError when another command holds it).
    A predictor with ``streams`` > 1 (:class:`~semseg.predict.exported.GraphPredictor`) predicts and
    writes that many batches at once in threads, at most twice as many decoded batches held.
    """
    if not isinstance(workers, int) or workers < 0:
        raise SemsegError(f"workers must be 0 or more image-decoding threads, got {workers!r}")
    out_dir = Path(out_dir)
    check_label_format(label_format, files, predictor.meta.num_classes)
    with folder_lock(out_dir, "output folder"):
        for name in OUTPUT_FOLDERS:
            remove_stale_temporaries(out_dir / name)
        return _predict_locked(predictor, files, out_dir, confidence, probs, workers, label_format)


def _predict_locked(
    predictor: Predictor | GraphPredictor, files: Sequence[Path], out_dir: Path, confidence: bool, probs: bool, workers: int,
    label_format: str,
) -> list[Path]:
    failed: list[Path] = []
    pending: list[tuple[Path, np.ndarray]] = []
    # the key of overlays/: every class's colour and name, in one picture beside them (overlays stay pixel-aligned)
    names = predictor.meta.class_names or [f"class_{c}" for c in range(predictor.meta.num_classes or 0)]
    if names:
        write_image_png(out_dir / "legend.png", legend(names, predictor.palette))
    counts = np.zeros(256, np.int64)  # predicted pixels per class, for the collapse warning
    # probabilities go one image at a time, straight into their .npy memory map
    batch_size = 1 if probs else predictor.batch_size
    streams = 1 if probs else getattr(predictor, "streams", 1)
    in_flight: collections.deque = collections.deque()  # (images, future of their class counts), in order
    pool = concurrent.futures.ThreadPoolExecutor(streams, thread_name_prefix="semseg-predict") if streams > 1 else None

    def finish(keep: int) -> None:
        while len(in_flight) > keep:
            size, job = in_flight.popleft()
            counts[:] += job.result()  # a failure in a thread is raised here
            bar.update(size)

    def submit() -> None:
        batch = pending[:]
        pending.clear()
        if not batch:
            return
        if pool is None:
            counts[:] += _predict_pending(predictor, batch, out_dir, confidence, probs, label_format)
            bar.update(len(batch))
        else:
            in_flight.append((len(batch), pool.submit(_predict_pending, predictor, batch, out_dir, confidence, probs, label_format)))
            finish(keep=2 * streams - 1)

    with Progress(len(files), "predict", unit="img", logger=log) as bar, pool or contextlib.nullcontext():
        for index, rgb, error in decode_ahead(files, min(workers, max(len(files) - 1, 0))):
            if error is not None:
                log.warning("skipped %s", error)
                failed.append(files[index])
                bar.update(1)
                continue
            reason = predictor.needs_slide(rgb.shape)
            if reason:
                log.warning("%s: %s", files[index], reason)
            if pending and (rgb.shape != pending[0][1].shape or len(pending) == batch_size):
                submit()
            pending.append((files[index], rgb))
        submit()
        finish(keep=0)
    names = list(predictor.meta.class_names or [])
    if warning := collapse_warning(counts, names, what=f"{len(files) - len(failed)} predicted image(s)"):
        log.warning(warning)
    return failed


def _predict_pending(
    predictor: Predictor | GraphPredictor,
    pending: list[tuple[Path, np.ndarray]],
    out_dir: Path,
    confidence: bool,
    probs: bool,
    label_format: str = "semseg",
) -> np.ndarray:
    """Predict and write one batch of images of one size; returns its predicted pixels per class (256 counts)."""
    counts = np.zeros(256, np.int64)
    images = [rgb for _, rgb in pending]
    if probs:  # one image: its probabilities fill a .npy memory map, renamed into place once complete
        with staged_path(out_dir / "probs" / f"{pending[0][0].stem}.npy") as tmp:
            sink: dict[str, np.ndarray] = {}

            def open_map(shape: tuple[int, int, int]) -> np.ndarray:
                sink["map"] = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
                return sink["map"]

            predictions = predictor.predict_batch(images, confidence, open_map)
            sink["map"].flush()
            del sink["map"]
    else:
        predictions = predictor.predict_batch(images, confidence, False)
    for (path, rgb), prediction in zip(pending, predictions):
        write_outputs(out_dir, path.stem, rgb, prediction, predictor.palette, label_format)
        if prediction.labels.dtype == np.uint8:  # models of more than 256 classes are not checked
            counts += np.bincount(prediction.labels.ravel(), minlength=256)
    return counts

"""``semseg benchmark``: each way this machine can run a model, side by side on a folder of images.

For every available backend (PyTorch fp32, the plain reference; PyTorch as
``semseg predict`` runs it, channels_last and bf16 where native; ONNX Runtime
and OpenVINO on the model converted to a graph of any size), one row: the file that is
deployed and its size, milliseconds per image in steady state (the median),
images per second over the folder, the share of pixels whose label equals
PyTorch fp32's and, with ground truth, the mIoU. The row ``auto`` would pick is
marked, and for it one more figure: images per second over the folder as
``semseg predict --no-tta`` runs it (decoding, prediction with its default
streams, writing labels and overlays to a temporary folder), which the
one-image-at-a-time figures understate where several images run side by side.

The backends take turns image by image (each image is decoded once, then
predicted by every backend in turn), so that a shared, noisy machine slows
them alike; one warm-up prediction per backend is not timed. Times cover
prediction (normalization, the model, the argmax at the original size), not
decoding or writing files. Prediction runs whole images without TTA, the way
deployments are usually timed.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from semseg.errors import SemsegError
from semseg.io import read_image, read_label_map, write_text_atomic
from semseg.meta import ModelMeta, check_ignore_index
from semseg.metrics.confusion import ConfusionMatrix
from semseg.metrics.counting import LabelValueError
from semseg.predict.backends import LOSSLESS_AGREEMENT, auto_choice, available_runtimes, file_key, open_session
from semseg.predict.conversion import model_key, onnx_conversion
from semseg.predict.files import resolve_sources
from semseg.predict.predictor import Predictor
from semseg.progress import Progress
from semseg.runtime.convert import fixed_size_only
from semseg.runtime.onnx import OnnxModel

log = logging.getLogger(__name__)
COLUMNS = ("backend", "file", "size_mb", "ms_per_image", "images_per_s", "agreement", "miou", "auto",
           "predict_images_per_s", "predict_streams")


def benchmark(
    sources: Sequence[str],
    labels: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    model_name: str | None = None,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> list[dict[str, Any]]:
    """One row per available backend (see the module docstring), keys :data:`COLUMNS`.

    ``sources``: images, folders or globs, as ``semseg predict`` takes them.
    ``labels``: a folder of ground-truth label maps matched to the images by
    name stem; without it ``miou`` is None. ``ignore_index``: the label value
    not scored (default: the model's; CamVid's void is 11). The model is the one a command
    names: a checkpoint, a zoo name with raw weights, or the default model.
    """
    from semseg.models.factory import default_model_path, load_torch_model  # the zoo imports take seconds

    files = resolve_sources(sources)
    truths = ground_truths(files, labels) if labels is not None else None
    model = load_torch_model(checkpoint, model_name, weights, num_classes)
    source = Path(checkpoint or weights or default_model_path())
    runs = _runs(model, source, model_name, num_classes)
    measured = compare_predictors({name: run["predictor"] for name, run in runs.items()}, files, truths,
                                  ModelMeta.of(model), ignore_index, reference="torch-fp32")
    rows = [{"backend": name, "file": str(run["file"]), "size_mb": round(Path(run["file"]).stat().st_size / 1e6, 2),
             **measured[name], "auto": run["auto"], "predict_images_per_s": None, "predict_streams": None}
            for name, run in runs.items()]
    for row, run in zip(rows, runs.values()):
        if run["auto"]:
            row["predict_images_per_s"], row["predict_streams"] = folder_rate(run, files)
    return rows


def folder_rate(run: dict[str, Any], files: Sequence[Path]) -> tuple[float, int]:
    """``(images per second, streams)`` of ``semseg predict --no-tta`` with ``run``'s backend over ``files``.

    The same path as the command: a graph session goes through the NumPy
    :class:`~semseg.predict.exported.GraphPredictor` with one stream per CPU
    thread (no more than there are files), a PyTorch model through its
    ``Predictor``; labels and overlays are written to a temporary folder,
    removed afterwards. One untimed image first, as for the other figures.
    """
    import tempfile

    from semseg.predict.exported import GraphPredictor, default_streams
    from semseg.predict.files import log as files_log
    from semseg.predict.files import predict_files

    predictor = run["predictor"]
    if run.get("session") is not None:
        predictor = GraphPredictor(run["session"], lambda: run["predictor"], streams=default_streams(len(files)))
    quiet = files_log  # its progress and collapse warning: the table reports
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="semseg-benchmark-") as folder:
            predict_files(predictor, files[:1], Path(folder) / "warm-up")
            start = time.perf_counter()
            predict_files(predictor, files, Path(folder) / "predict")
            seconds = time.perf_counter() - start
    finally:
        quiet.setLevel(level)
    return round(len(files) / seconds, 3), getattr(predictor, "streams", 1)


def compare_predictors(
    predictors: dict[str, Callable[[np.ndarray], np.ndarray]],
    files: Sequence[Path],
    truths: dict[str, Path] | None,
    meta: ModelMeta,
    ignore_index: int | None = None,
    reference: str | None = None,
    label: str = "benchmark",
) -> dict[str, dict[str, Any]]:
    """Each predictor (image ``uint8[H,W,3]`` -> labels ``[H,W]``) on ``files``, taking turns image by image.

    Returns per name: ``ms_per_image`` (median, after one untimed warm-up),
    ``images_per_s``, ``agreement`` (share of labels equal to those of
    ``predictors[reference]``; None without a reference) and ``miou`` (on
    ``truths``, from :func:`ground_truths`; None without them).
    """
    scores = {name: _matrix(meta, ignore_index) for name in predictors} if truths is not None else None
    times: dict[str, list[float]] = {name: [] for name in predictors}
    same = dict.fromkeys(predictors, 0)
    pixels = 0
    with Progress(len(files), label, unit="img", logger=log) as progress:
        for index, path in enumerate(files):
            image = read_image(path)
            results = {}
            for name, predict in predictors.items():
                if index == 0:  # warm-up: first-call allocations, lazy initialization, caches
                    predict(image)
                start = time.perf_counter()
                results[name] = predict(image)
                times[name].append(time.perf_counter() - start)
            truth = read_label_map(truths[path.stem]) if truths is not None else None
            pixels += next(iter(results.values())).size
            for name, labels_map in results.items():
                if reference is not None:
                    same[name] += int((labels_map == results[reference]).sum())
                if scores is not None:
                    _update(scores[name], labels_map, truth, truths[path.stem])
            progress.update(1)
    return {name: {
        "ms_per_image": round(1000 * statistics.median(times[name]), 2),
        "images_per_s": round(len(files) / sum(times[name]), 3),
        "agreement": same[name] / pixels if reference is not None else None,
        "miou": float(scores[name].compute()["miou"]) if scores is not None else None,
    } for name in predictors}


def _runs(model: Any, source: Path, model_name: str | None, num_classes: int | None) -> dict[str, dict[str, Any]]:
    """The backends to compare: a predictor each, the file it deploys, and whether ``auto`` picks it."""
    choice, sessions, graph = "torch", {}, None
    if not available_runtimes():
        log.warning("neither ONNX Runtime nor OpenVINO is installed (pip install 'semseg[onnx]', 'semseg[openvino]'): "
                    "benchmarking PyTorch only")
    elif reason := fixed_size_only(model):
        log.warning("no ONNX Runtime or OpenVINO rows: the model cannot be converted to a graph of any size (%s)", reason)
    else:  # converted (or found in the cache) first: the conversion's own timing moves the model between layouts
        key = file_key(source, model_name, num_classes) if source.is_file() else model_key(model)
        record = onnx_conversion(model, key)
        choice, graph = auto_choice(record), record["path"]
        sessions = {runtime: open_session(runtime, graph) for runtime in available_runtimes()}
    # a Predictor sets its model's memory layout (contiguous for fp32, channels_last otherwise): the fp32
    # reference gets a copy of its own, so that the two torch rows do not undo each other's layout
    runs = {
        "torch-fp32": {"predictor": Predictor(copy.deepcopy(model), precision="fp32", tta=False, device="cpu"),
                       "file": source},
        "torch": {"predictor": Predictor(model, precision="auto", tta=False, device="cpu"), "file": source},
    }
    for runtime, session in sessions.items():
        runs[runtime] = {"predictor": Predictor(session, tta=False), "file": graph, "session": session}
    for name, run in runs.items():
        run["auto"] = name == choice
    return runs


def ground_truths(files: Sequence[Path], labels: str | os.PathLike) -> dict[str, Path]:
    """The ground-truth label map of each image (by name stem); SemsegError naming the first image without one."""
    folder = Path(labels)
    if not folder.is_dir():
        raise SemsegError(f"{folder}: label folder not found")
    by_stem = {path.stem: path for path in sorted(folder.iterdir()) if path.is_file()}
    missing = [path for path in files if path.stem not in by_stem]
    if missing:
        raise SemsegError(f"{missing[0]}: no label map of the same name in {folder} ({len(missing)} such images)")
    return {path.stem: by_stem[path.stem] for path in files}


def _matrix(meta: ModelMeta, ignore_index: int | None) -> ConfusionMatrix:
    if meta.num_classes is None:
        raise SemsegError("the model does not say how many classes it has, so its mIoU cannot be counted")
    ignore = meta.ignore_index if ignore_index is None else check_ignore_index(ignore_index, meta.num_classes,
                                                                               "--ignore-index")
    return ConfusionMatrix(meta.num_classes, ignore)


def _update(matrix: ConfusionMatrix, pred: np.ndarray, truth: np.ndarray, truth_path: Path) -> None:
    if pred.shape != truth.shape:
        raise SemsegError(f"{truth_path}: label map is {truth.shape[1]}x{truth.shape[0]} (WxH) but its image is "
                          f"{pred.shape[1]}x{pred.shape[0]}")
    try:
        matrix.update(pred, truth)
    except LabelValueError as exc:
        raise SemsegError(f"{truth_path}: {exc}") from None


def write_benchmark(rows: Sequence[dict[str, Any]], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``rows`` as ``out/benchmark.csv`` and ``out/benchmark.json`` (atomically); returns both paths."""
    folder = Path(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, json_path = folder / "benchmark.csv", folder / "benchmark.json"
    write_text_atomic(csv_path, buffer.getvalue())
    write_text_atomic(json_path, json.dumps(list(rows), indent=2))
    return csv_path, json_path


def format_benchmark(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of ``rows``, ``auto``'s pick marked with ``*``."""
    header = ["backend", "size MB", "ms/image", "images/s", "= fp32", "mIoU"]
    lines = [[("* " if row["auto"] else "  ") + row["backend"], f"{row['size_mb']:.1f}", f"{row['ms_per_image']:.1f}",
              f"{row['images_per_s']:.2f}", f"{100 * row['agreement']:.3f}%",
              "-" if row["miou"] is None else f"{100 * row['miou']:.2f}"] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    table = [header, *lines]
    text = "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in table)
    lossy = [row["backend"] for row in rows if row["agreement"] < LOSSLESS_AGREEMENT]
    note = f"\n(labels of {', '.join(lossy)} differ from PyTorch fp32's on more than 0.1% of pixels)" if lossy else ""
    folder = "".join(f"\nsemseg predict --no-tta with {row['backend']} ran the folder at {row['predict_images_per_s']:.2f} "
                     f"images/s ({row['predict_streams']} image(s) at once; decoding and writing included)"
                     for row in rows if row.get("predict_images_per_s") is not None)
    return text + "\n* what --backend auto runs" + note + folder

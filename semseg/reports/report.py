"""A report folder: the files a user reads at a glance, written by training, ``semseg val`` and ``semseg score``.

:func:`write_report` writes, every file atomically:

==================================  ==============================================================
``results.csv``                     one row per epoch (training only; :func:`write_results_csv`)
``results.png``                     loss, lr, validation means and per-class IoU by epoch (training only)
``confusion_matrix.png``            pixel counts, class names on both axes
``confusion_matrix_normalized.png`` rows divided by their ground truth (recall on the diagonal)
``class_iou.png``                   per-class IoU bars in the class colours
``class_pixels.png``                share of pixels per class: the training-set audit and the evaluated set
``val_gallery.png``                 image | truth | prediction | error map of a spread of frames and the worst ones
``summary.json``                    the facts, the scores (the ``semseg val --json`` report) and the file list
``report.html``                     all of the above in one self-contained page
==================================  ==============================================================
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semseg.io import encode_image_png, write_bytes_atomic, write_text_atomic
from semseg.metrics import MEAN_KEYS, report_json
from semseg.reports.figures import class_iou_figure, class_pixels_figure, confusion_figure, results_figure
from semseg.reports.html import render_html

# results.csv columns before the per-class IoU columns (iou/<class name>)
CSV_KEYS = ("epoch", "train_loss", "lr", "batches", "images_per_s", "train_time_s", "eval_time_s", "elapsed_s", *MEAN_KEYS)


@dataclass
class ReportInputs:
    """What a report shows.

    ``scores``: a :func:`semseg.metrics.report` dict (None before any validation);
    ``history``: ``metrics.jsonl`` entries (training); ``class_pixels``: named pixel
    counts per class, e.g. ``{"train (audit)": [...]}`` (the evaluated set's come
    from ``scores``); ``gallery``: the picture of :func:`semseg.reports.gallery.gallery`;
    ``facts``: what the page's first table and ``summary.json`` state (model, data, run).
    """

    title: str
    class_names: list[str]
    palette: list[list[int]]
    scores: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    class_pixels: dict[str, list[int]] = field(default_factory=dict)
    gallery: np.ndarray | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    scores_caption: str = ""


def write_results_csv(path: str | Path, history: Sequence[dict[str, Any]], class_names: Sequence[str]) -> None:
    """One row per epoch: :data:`CSV_KEYS`, then ``iou/<class>`` (fractions; empty where not validated)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_KEYS, *(f"iou/{name}" for name in class_names)])
    for entry in history:
        per_class = entry.get("per_class_iou") or {}
        row = [entry.get(key) for key in CSV_KEYS] + [per_class.get(name) for name in class_names]
        writer.writerow(["" if value is None else f"{value:.6g}" if isinstance(value, float) else value for value in row])
    write_text_atomic(path, buffer.getvalue())


def _figures(inputs: ReportInputs) -> dict[str, bytes]:
    figures: dict[str, bytes] = {}
    names, palette, scores = inputs.class_names, inputs.palette, inputs.scores
    if inputs.history:
        figures["results.png"] = results_figure(inputs.history, names, palette)
    pixels = dict(inputs.class_pixels)
    if scores is not None:
        figures["class_iou.png"] = class_iou_figure({n: r["iou"] for n, r in scores["per_class"].items()}, palette)
        pixels["evaluated"] = [row["gt_pixels"] for row in scores["per_class"].values()]
        matrix = np.asarray(scores["confusion_matrix"])
        figures["confusion_matrix_normalized.png"] = confusion_figure(matrix, names, normalize=True)
        figures["confusion_matrix.png"] = confusion_figure(matrix, names, normalize=False)
    if pixels and any(sum(counts) for counts in pixels.values()):
        figures["class_pixels.png"] = class_pixels_figure(names, palette, pixels)
    if inputs.gallery is not None:
        figures["val_gallery.png"] = encode_image_png(inputs.gallery)
    return figures


def write_report(folder: str | Path, inputs: ReportInputs) -> Path:
    """Write the report files of :mod:`semseg.reports.report` into ``folder``; returns ``folder/report.html``.

    Files a report no longer has (a gallery turned off) are left as they were:
    ``summary.json`` lists the current ones.
    """
    folder = Path(folder)
    figures = _figures(inputs)
    if inputs.history:
        write_results_csv(folder / "results.csv", inputs.history, inputs.class_names)
    for name, png in figures.items():
        write_bytes_atomic(folder / name, png)
    files = sorted([*figures, *(["results.csv"] if inputs.history else []), "summary.json", "report.html"])
    summary = {"title": inputs.title, **inputs.facts, "files": files, "scores": None if inputs.scores is None else "SCORES"}
    text = json.dumps(summary, indent=2, allow_nan=False, default=str)
    if inputs.scores is not None:  # the scores as `semseg val --json` writes them: one line per matrix row
        text = text.replace('"scores": "SCORES"', '"scores": ' + report_json(inputs.scores).rstrip())
    write_text_atomic(folder / "summary.json", text + "\n")
    page = render_html(inputs.title, inputs.facts, inputs.scores, inputs.palette, figures, inputs.scores_caption)
    write_text_atomic(folder / "report.html", page)
    return folder / "report.html"

"""What the run folder's reports cost at one validation of the CamVid recipe (BENCHMARKS.md, "Reports").

Two parts, each timed as the median of ``--rounds`` interleaved rounds:

- ``count``: counting the val set's 101 CamVid-sized (360x480) predictions into the
  confusion matrix, plainly (one update per frame) and as :func:`semseg.engine.evaluate.evaluate`
  does when it picks gallery frames (a small matrix per frame for its frame IoU,
  merged, offered to a :class:`FramePicker` of 4 spread + 4 worst); the difference is
  what the gallery adds to a validation;
- ``write``: everything the run folder gets after that validation: the gallery
  picture of 8 frames, results.png over 33 epochs, the two confusion matrices, the
  per-class charts, results.csv, summary.json and report.html (:func:`write_report`).

The label maps are the demo's CamVid annotations (360x480), perturbed per frame.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_reports.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from semseg.data.formats import CAMVID_CLASSES, CAMVID_PALETTE
from semseg.io import read_image, read_label_map
from semseg.metrics import ConfusionMatrix, report
from semseg.reports.gallery import FramePicker, GalleryRow, frame_iou, gallery
from semseg.reports.report import ReportInputs, write_report

DEMO = Path(__file__).resolve().parents[1] / "semseg" / "assets" / "demo"
VAL_FRAMES, EPOCHS, GALLERY = 101, 33, 4


def frames() -> tuple[list[np.ndarray], list[torch.Tensor], list[torch.Tensor]]:
    rng = np.random.default_rng(0)
    annots = [read_label_map(p) for p in sorted((DEMO / "trainannot").glob("*.png"))]
    images = [read_image(DEMO / "train" / p.name) for p in sorted((DEMO / "trainannot").glob("*.png"))]
    truths, preds = [], []
    for k in range(VAL_FRAMES):
        truth = annots[k % len(annots)]
        pred = np.roll(truth, (int(rng.integers(-8, 8)), int(rng.integers(-8, 8))), (0, 1)).copy()
        pred[pred == 11] = 3
        noise = rng.random(pred.shape) < 0.03
        pred[noise] = rng.integers(0, 11, int(noise.sum()))
        truths.append(torch.from_numpy(truth.astype(np.int64)))
        preds.append(torch.from_numpy(pred.astype(np.int64)))
    return images, truths, preds


def count_plain(truths: list[torch.Tensor], preds: list[torch.Tensor]) -> ConfusionMatrix:
    matrix = ConfusionMatrix(11, 11)
    for pred, truth in zip(preds, truths):
        matrix.update(pred[None], truth[None])
    return matrix


def count_with_picker(truths: list[torch.Tensor], preds: list[torch.Tensor]) -> tuple[ConfusionMatrix, FramePicker]:
    # the per-frame path of evaluate() with a picker
    matrix, frame = ConfusionMatrix(11, 11), ConfusionMatrix(11, 11)
    picker = FramePicker(len(preds), GALLERY)
    for k, (pred, truth) in enumerate(zip(preds, truths)):
        frame.reset()
        frame.update(pred, truth)
        matrix.merge(frame)
        picker.offer(k, frame_iou(frame.matrix), pred.numpy())
    return matrix, picker


def write(folder: Path, images: list[np.ndarray], truths: list[torch.Tensor], matrix: ConfusionMatrix,
          picker: FramePicker) -> None:
    names, palette = list(CAMVID_CLASSES), [list(c) for c in CAMVID_PALETTE]
    scores = report(matrix, names)
    rows = [GalleryRow(f"{f.kind} {f.index}", images[f.index % len(images)], truths[f.index].numpy(), f.prediction)
            for f in picker.frames()]
    history = [{"epoch": e, "train_loss": 1.0 / e, "lr": 0.002 * (1 - e / EPOCHS), "batches": 46,
                **({"miou": 0.3 + e / 100, "per_class_iou": {n: 0.2 + e / 100 for n in names}} if e % 2 == 0 else {})}
               for e in range(1, EPOCHS + 1)]
    inputs = ReportInputs("camvid", names, palette, scores, history, {"train (audit)": [int(1e6)] * 11},
                          gallery(rows, names, palette, 11), {"model": "lraspp_mobilenet_v3_large"})
    write_report(folder, inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    images, truths, preds = frames()
    times: dict[str, list[float]] = {"count_plain_s": [], "count_with_gallery_s": [], "write_report_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            start = time.perf_counter()
            plain = count_plain(truths, preds)
            times["count_plain_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            matrix, picker = count_with_picker(truths, preds)
            times["count_with_gallery_s"].append(time.perf_counter() - start)
            assert np.array_equal(plain.matrix, matrix.matrix)  # the totals stay the same
            start = time.perf_counter()
            write(Path(tmp), images, truths, matrix, picker)
            times["write_report_s"].append(time.perf_counter() - start)
    result = {key: round(statistics.median(values), 3) for key, values in times.items()}
    result["gallery_counting_extra_s"] = round(result["count_with_gallery_s"] - result["count_plain_s"], 3)
    result["per_validation_s"] = round(result["gallery_counting_extra_s"] + result["write_report_s"], 3)
    result["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

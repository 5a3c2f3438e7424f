"""What ``semseg app`` computes, kept free of Gradio so it is tested directly.

:class:`ModelChoices` holds the models a page offers (the embedded default
model, checkpoints, exported ONNX files) and builds a
:class:`~semseg.predict.Predictor` per (model, backend, TTA) once.
:func:`segment` turns one image into what the page shows: the overlay, a legend of
the classes present, the area of each class and the label map as a PNG.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semseg.errors import SemsegError
from semseg.io import encode_label_png
from semseg.predict import Predictor
from semseg.reports.viz import legend, overlay

log = logging.getLogger(__name__)

BACKENDS = ("pytorch", "onnxruntime")
DEFAULT_MODEL = "default model"


class ModelChoices:
    """The models on offer, by label: ``default model`` (the embedded one), then each checkpoint and ONNX file.

    A checkpoint runs on either backend: on ``onnxruntime`` it is exported once
    (dynamic height and width, checked against PyTorch by the exporter) into a
    temporary folder that lives as long as this object. An ONNX file runs on
    ONNX Runtime only.
    """

    def __init__(self, checkpoints: Sequence[str | Path] = (), onnx: Sequence[str | Path] = (),
                 default_model: bool = True, device: str = "cpu") -> None:
        self.device = device
        self.sources: dict[str, tuple[str, Path | None]] = {}
        if default_model:
            self.sources[DEFAULT_MODEL] = ("checkpoint", None)
        for kind, paths in (("checkpoint", checkpoints), ("onnx", onnx)):
            for path in map(Path, paths):
                if not path.is_file():
                    raise SemsegError(f"{path}: {'checkpoint' if kind == 'checkpoint' else 'ONNX model'} file not found")
                self.sources[f"{path.name} ({path.parent.resolve()})" if self._taken(path.name) else path.name] = (kind, path)
        if not self.sources:
            raise SemsegError("no model to offer: pass --checkpoint FILE or --onnx FILE, or keep the default model")
        self._predictors: dict[tuple[str, str, bool], Predictor] = {}
        self._exported: dict[str, Path] = {}
        self._lock = threading.Lock()  # Gradio calls from worker threads; build each predictor once
        self._tmp: tempfile.TemporaryDirectory | None = None

    def _taken(self, name: str) -> bool:
        return name in self.sources

    @property
    def labels(self) -> list[str]:
        return list(self.sources)

    def backends(self, label: str) -> tuple[str, ...]:
        return ("onnxruntime",) if self._source(label)[0] == "onnx" else BACKENDS

    def _source(self, label: str) -> tuple[str, Path | None]:
        if label not in self.sources:
            raise SemsegError(f"unknown model {label!r}; choose one of: {', '.join(self.sources)}")
        return self.sources[label]

    def predictor(self, label: str, backend: str = "pytorch", tta: bool = False) -> Predictor:
        """The predictor of model ``label`` on ``backend``, with or without TTA (built on first use)."""
        if backend not in BACKENDS:
            raise SemsegError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        kind, path = self._source(label)
        if kind == "onnx" and backend != "onnxruntime":
            raise SemsegError(f"{label} is an exported ONNX model: it runs on onnxruntime only")
        key = (label, backend, bool(tta))
        with self._lock:
            if key not in self._predictors:
                self._predictors[key] = Predictor(self._model(label, kind, path, backend), tta=tta, device=self.device)
            return self._predictors[key]

    def _model(self, label: str, kind: str, path: Path | None, backend: str) -> Any:
        from semseg.models.factory import default_model_path, load_model

        if kind == "onnx":
            return self._onnx(path)
        checkpoint = path if path is not None else default_model_path()
        model = load_model(checkpoint)
        if backend == "pytorch":
            return model
        if label not in self._exported:
            from semseg.export import export_model

            self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="semseg-app-")
            out = Path(self._tmp.name) / f"model{len(self._exported)}.onnx"
            log.info("exporting %s to ONNX for onnxruntime (once)", label)
            export_model(model, out, fmt="onnx", dynamic=True)
            self._exported[label] = out
        return self._onnx(self._exported[label])

    def _onnx(self, path: Path) -> Any:
        try:
            from semseg.runtime import OnnxModel
        except ImportError as exc:  # pragma: no cover - the onnx extra is missing
            raise SemsegError(f"the onnxruntime backend needs pip install 'semseg[onnx]' ({exc})") from None
        return OnnxModel(path, device=self.device)

    def describe(self, label: str) -> str:
        """One line about model ``label``: its architecture and classes."""
        kind, path = self._source(label)
        predictor = next((p for (name, _, _), p in self._predictors.items() if name == label), None)
        meta = predictor.meta if predictor is not None else None
        where = "embedded in semseg" if path is None else str(path)
        if meta is None:
            return f"{label}: {where}"
        return f"{label}: {meta.num_classes} classes ({', '.join((meta.class_names or [])[:5])}, ...), {where}"


@dataclass
class Segmentation:
    """One image segmented: ``labels`` [H, W] class ids, ``overlay`` uint8 [H, W, 3] (classes blended
    over the image), ``legend`` uint8 picture of the classes present, ``areas`` rows of
    (class id, name, pixels, share %) largest first, ``label_png`` the label map as a palette PNG."""

    labels: np.ndarray
    overlay: np.ndarray
    legend: np.ndarray
    areas: list[tuple[int, str, int, float]]
    label_png: bytes


def segment(predictor: Predictor, image: np.ndarray, alpha: float = 0.5) -> Segmentation:
    """Segment ``image`` (uint8 [H, W, 3], or [H, W] / [H, W, 4], made RGB) with ``predictor``."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise SemsegError(f"the app segments uint8 RGB images, got {image.dtype} {list(image.shape)}")
    image = np.ascontiguousarray(image[..., :3])
    labels = predictor(image)
    meta, palette = predictor.meta, predictor.palette
    num = meta.num_classes or int(labels.max()) + 1
    names = list(meta.class_names) if meta.class_names else [f"class_{c}" for c in range(num)]
    counts = np.bincount(labels.ravel(), minlength=num)
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    areas = [(c, names[c], int(counts[c]), round(100.0 * float(counts[c]) / labels.size, 2)) for c in present]
    key = legend([names[c] for c in present], [palette[c] for c in present], columns=1 + (len(present) > 12))
    return Segmentation(labels, overlay(image, labels, palette, alpha, ignore_index=None), key, areas,
                        encode_label_png(labels, [list(c) for c in palette]))

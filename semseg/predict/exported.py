"""Whole images through an exported graph in NumPy: the prediction path that never imports torch.

``semseg predict`` with a graph of any size (``--onnx``, or the graph ``auto`` found in
the cache) at the image's native size, once per image (no TTA, no ``--size``, no
confidence or probabilities), is: normalize, run the graph, argmax. :class:`GraphPredictor`
does exactly that in NumPy. Its normalization is :func:`semseg.predict.images.normalize`'s
float32 operations in their order (divide by 255, subtract the mean, divide by the std),
so the graph receives the same bits as through :class:`~semseg.predict.Predictor` and the
labels are the same; the argmax keeps the first of equal scores, as torch's does.

Every other case (an image above the whole-image limit, which slide mode handles, or a
call asking for confidence or probabilities) goes to a ``Predictor`` built on first need,
the only time torch is imported. ``Predictor`` remains the one implementation of the
other modes; this class only skips torch's start-up where the work is one graph call.

With ``streams`` > 1, :func:`semseg.predict.predict_files` predicts that many images at
once, each in a thread of its own, through a session that shares the CPU's threads out
among them (:meth:`semseg.runtime.Session.concurrent`): on a CPU, images side by side use
the cores better than one image's operators split across them, and each image's
normalization, argmax and writing, which run on one core, overlap the others' graph calls.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from semseg.errors import SemsegError
from semseg.predict.prediction import (
    WHOLE_MAX_PIXELS, Prediction, check_batch_size, check_mean_std, label_dtype, output_palette, tta_on,
)
from semseg.runtime.onnx import cpu_threads


def default_streams(file_count: int) -> int:
    """``semseg predict``'s default ``--streams``: one image at a time per CPU thread, never more than there are files."""
    return max(1, min(cpu_threads(), file_count))


def runs_without_torch(
    session: Any, mode: str = "whole", size: Sequence[int] | None = None, tta: bool | None = None,
    precision: str = "auto", confidence: bool = False, probs: bool = False,
) -> bool:
    """Whether :class:`GraphPredictor` predicts ``session`` with these settings (else use a ``Predictor``).

    ``session``: an exported graph (:class:`semseg.runtime.Session`); ``tta`` None means
    the model's recommendation, which turns TTA on where its metadata names scales.
    """
    return (
        callable(getattr(session, "run", None))
        and getattr(session, "fixed_input_size", ()) is None  # a graph of any size: no tiles, no padding
        and mode == "whole"
        and size is None
        and not tta_on(tta, session)
        and precision in ("auto", "fp32")
        and not confidence
        and not probs
    )


class GraphPredictor:
    """Label maps of whole images from an exported graph of any size, in NumPy (see the module docstring).

    Offers what :func:`semseg.predict.predict_files` uses of a ``Predictor``:
    ``meta``, ``palette``, ``batch_size``, ``backend``, ``precision``, ``mode``,
    ``tta``, :meth:`needs_slide` and :meth:`predict_batch`. ``full_predictor``
    builds the ``Predictor`` (same session, same settings) that takes the cases
    this class does not. ``streams``: how many threads may call :meth:`predict_batch`
    at once (the session is made for that); the ``Predictor`` takes one call at a time.
    """

    mode = "whole"
    precision = "fp32"
    tta = False

    def __init__(self, session: Any, full_predictor: Callable[[], Any], batch_size: int | None = None,
                 max_whole_pixels: int = WHOLE_MAX_PIXELS, streams: int = 1) -> None:
        if not isinstance(streams, int) or streams < 1:
            raise SemsegError(f"streams must be 1 or more images predicted at once, got {streams!r}")
        self.session = session.concurrent(streams) if streams > 1 and hasattr(session, "concurrent") else session
        self.streams = streams if self.session is not session else 1  # a session that gains nothing stays as it was
        self.meta = session.pretrained_cfg
        self.backend = session.backend
        self.palette = output_palette(self.meta)
        check_mean_std(self.meta.mean, self.meta.std)
        self.mean = np.asarray(self.meta.mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(self.meta.std, np.float32).reshape(1, 3, 1, 1)
        check_batch_size(batch_size)
        self.batch_size = batch_size or 1  # one frame per call on the CPU, as the Predictor's default
        self.max_whole_pixels = max_whole_pixels
        self._full_predictor = full_predictor
        self._full: Any = None
        # the Predictor is built once and runs one call at a time: it is torch's, whose threads span the CPU
        self._full_lock = threading.Lock()

    def full(self) -> Any:
        """The ``Predictor`` for what this class does not do (imports torch the first time)."""
        with self._full_lock:
            if self._full is None:
                self._full = self._full_predictor()
        return self._full

    def needs_slide(self, shape: Sequence[int]) -> str | None:
        """Why an image of ``shape`` goes through slide mode (the ``Predictor``'s reason), or None."""
        if int(shape[0]) * int(shape[1]) <= self.max_whole_pixels:
            return None
        return self.full().needs_slide(shape)

    def predict_batch(self, images: Sequence[np.ndarray], confidence: bool = False, probs: Any = False) -> list[Prediction]:
        """Labels of uint8 ``[H, W, 3]`` images of one size; other requests go to the full ``Predictor``."""
        if confidence or probs or any(self.needs_slide(image.shape) for image in images):
            full = self.full()
            with self._full_lock:
                return full.predict_batch(images, confidence, probs)
        if len({image.shape for image in images}) > 1:
            return [result for image in images for result in self.predict_batch([image])]
        batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
        batch /= np.float32(255)
        batch -= self.mean
        batch /= self.std
        logits = self.session.run(batch)
        return [Prediction(scores.argmax(0).astype(label_dtype(logits.shape[1]))) for scores in logits]

    def predict(self, image: np.ndarray) -> Prediction:
        """One uint8 ``[H, W, 3]`` image's labels."""
        return self.predict_batch([image])[0]

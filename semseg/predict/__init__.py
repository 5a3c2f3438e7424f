"""Prediction: pure functions on tensors, the :class:`Predictor`, and predicting files.

- :mod:`~semseg.predict.functional`: ``predict_whole``, ``resize_back``, ``tta``;
- :mod:`~semseg.predict.tiling`: ``slide_window`` and its bounded-memory ``slide_window_bands``;
- :mod:`~semseg.predict.images`: ``load_rgb``, ``normalize`` (torchvision's recipe, bit for bit);
- :mod:`~semseg.predict.predictor`: :class:`Predictor` (whole, slide, TTA; torch models or runtime sessions);
- :mod:`~semseg.predict.files`: sources in, label PNGs, overlays, confidence and probabilities out.
"""

from semseg.predict.files import predict_files, resolve_sources, write_outputs
from semseg.predict.functional import DEFAULT_TTA_SCALES, as_size, predict_whole, resize_back, resize_images, tta
from semseg.predict.images import load_rgb, normalize, to_chw
from semseg.predict.predictor import Prediction, Predictor, default_batch_size, describe_tta
from semseg.predict.tiling import blend_weights, slide_window, slide_window_bands, tile_grid, tile_starts

__all__ = [
    "DEFAULT_TTA_SCALES",
    "Prediction",
    "Predictor",
    "as_size",
    "blend_weights",
    "default_batch_size",
    "describe_tta",
    "load_rgb",
    "normalize",
    "predict_files",
    "predict_whole",
    "resize_back",
    "resize_images",
    "resolve_sources",
    "slide_window",
    "slide_window_bands",
    "tile_grid",
    "tile_starts",
    "to_chw",
    "tta",
    "write_outputs",
]

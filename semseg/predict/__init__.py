"""Prediction: pure functions on tensors, the :class:`Predictor`, and predicting files.

- :mod:`~semseg.predict.functional`: ``predict_whole``, ``resize_back``, ``tta``;
- :mod:`~semseg.predict.tiling`: ``slide_window`` and its bounded-memory ``slide_window_bands``;
- :mod:`~semseg.predict.images`: ``load_rgb``, ``normalize`` (torchvision's recipe, bit for bit);
- :mod:`~semseg.predict.predictor`: :class:`Predictor` (whole, slide, TTA; torch models or runtime sessions);
- :mod:`~semseg.predict.files`: sources in, label PNGs, overlays, confidence and probabilities out;
- :mod:`~semseg.predict.backends` and :mod:`~semseg.predict.conversion`: which engine runs the model;
- :mod:`~semseg.predict.exported`: whole images through an exported graph in NumPy, without torch.
"""

from semseg.lazy import lazy_exports

# imported on first use: a process predicting through an exported graph (semseg.predict.exported) never imports torch
_EXPORTS = {
    **dict.fromkeys(["predict_files", "resolve_sources", "write_outputs"], "files"),
    **dict.fromkeys(["DEFAULT_TTA_SCALES", "as_size", "predict_whole", "resize_back", "resize_images", "tta"], "functional"),
    **dict.fromkeys(["load_rgb", "normalize", "to_chw"], "images"),
    **dict.fromkeys(["Prediction", "describe_tta"], "prediction"),
    **dict.fromkeys(["Predictor", "default_batch_size"], "predictor"),
    **dict.fromkeys(["blend_weights", "slide_window", "slide_window_bands", "tile_grid", "tile_starts"], "tiling"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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

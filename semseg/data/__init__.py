"""Datasets, mask decoding, joint transforms and the dataset audit.

Public API:

- :class:`DatasetInfo`, :func:`dataset_info` -- classes, names, palette of a data config;
- :func:`build_dataset` -> :class:`SegDataset` -- (image, mask) pairs of any format;
- :func:`train_transform`, :func:`eval_transform` -- joint augmentation presets;
- :func:`class_statistics` -- per-class pixel and image frequencies (:func:`add_statistics` adds up parts);
- :func:`check_dataset` -- the audit behind ``semseg data check``;
- Cityscapes tables: :func:`labelid_to_trainid`, :func:`trainid_to_labelid`.
"""

from semseg.lazy import lazy_exports

# imported on first use: semseg.data.formats (palettes, Cityscapes tables) is pure data, read by prediction
# processes that the datasets and transforms (torch, torchvision) would slow by seconds
_EXPORTS = {
    "check_dataset": "audit",
    **dict.fromkeys(["DatasetInfo", "SegDataset", "add_statistics", "build_dataset", "class_statistics", "dataset_info"],
                   "datasets"),
    **dict.fromkeys(["FORMATS", "default_palette", "labelid_to_trainid", "trainid_to_labelid"], "formats"),
    **dict.fromkeys(["MaskDecoder", "mask_decoder"], "masks"),
    **dict.fromkeys(["eval_transform", "train_transform"], "transforms"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DatasetInfo",
    "FORMATS",
    "MaskDecoder",
    "SegDataset",
    "add_statistics",
    "build_dataset",
    "check_dataset",
    "class_statistics",
    "dataset_info",
    "default_palette",
    "eval_transform",
    "labelid_to_trainid",
    "mask_decoder",
    "train_transform",
    "trainid_to_labelid",
]

"""Datasets, mask decoding, joint transforms and the dataset audit.

Public API:

- :class:`DatasetInfo`, :func:`dataset_info` -- classes, names, palette of a data config;
- :func:`build_dataset` -> :class:`SegDataset` -- (image, mask) pairs of any format;
- :func:`train_transform`, :func:`eval_transform` -- joint augmentation presets;
- :func:`class_statistics` -- per-class pixel and image frequencies;
- :func:`check_dataset` -- the audit behind ``semseg data check``;
- Cityscapes tables: :func:`labelid_to_trainid`, :func:`trainid_to_labelid`.
"""

from semseg.data.audit import check_dataset
from semseg.data.datasets import DatasetInfo, SegDataset, build_dataset, class_statistics, dataset_info
from semseg.data.formats import FORMATS, default_palette, labelid_to_trainid, trainid_to_labelid
from semseg.data.masks import MaskDecoder, mask_decoder
from semseg.data.transforms import eval_transform, train_transform

__all__ = [
    "DatasetInfo",
    "FORMATS",
    "MaskDecoder",
    "SegDataset",
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

"""Segmentation losses behind one entry point: ``create_loss("ce+0.5*dice", num_classes)``.

Every loss takes ``(logits: float[N,C,H,W], target: int[N,H,W])``, honours
``ignore_index`` exactly (ignored pixels get zero gradient; an all-ignored batch
gives 0), computes in float32 outside autocast and returns a scalar. One concept
per file; the shared math is in :mod:`semseg.losses.functional`. docs/losses.md
says what each loss computes, where it comes from, and which use class weights.
"""

from semseg.losses.base import SegLoss, check_inputs
from semseg.losses.cross_entropy import CrossEntropyLoss
from semseg.losses.dice import DiceLoss
from semseg.losses.factory import LOSSES, WeightedSum, create_loss, loss_options, parse_spec
from semseg.losses.focal import FocalLoss
from semseg.losses.lovasz import LovaszSoftmaxLoss, lovasz_grad
from semseg.losses.ohem import OhemCrossEntropyLoss
from semseg.losses.weights import (
    CLASS_WEIGHT_METHODS,
    class_weights,
    enet_weights,
    median_frequency_weights,
    sqrt_median_frequency_weights,
)

__all__ = [
    "LOSSES",
    "create_loss",
    "parse_spec",
    "loss_options",
    "SegLoss",
    "WeightedSum",
    "CrossEntropyLoss",
    "OhemCrossEntropyLoss",
    "FocalLoss",
    "DiceLoss",
    "LovaszSoftmaxLoss",
    "lovasz_grad",
    "check_inputs",
    "class_weights",
    "enet_weights",
    "median_frequency_weights",
    "sqrt_median_frequency_weights",
    "CLASS_WEIGHT_METHODS",
]

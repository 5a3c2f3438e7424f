"""What travels with a model's weights: :class:`ModelMeta`, and the rules its values obey.

One type describes a model for everything that uses one: a torch model holds it
as ``model.pretrained_cfg`` (the name timm gives it), a checkpoint stores it as
``model_meta`` (:meth:`ModelMeta.to_dict`), an exported ONNX graph carries the
same keys in its ``metadata_props``, and :class:`semseg.predict.Predictor` reads
it from whichever of the three it is given. Unknown values are None (or
ImageNet's mean and std); whoever needs a default (a palette, class names)
fills it in at use.

The checks below are the one place each rule about class ids is written:
``num_classes`` is a positive integer, the ignore index is not a class id, TTA
scales are positive. Configs, datasets, losses, metrics and prediction call them.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

from semseg.errors import SemsegError

Size = tuple[int, int]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ModelMeta:
    """What prediction, export and checkpoints need to know about a model's weights.

    Sequences are stored as tuples (``mean``, ``std``, ``input_size``,
    ``tta_scales``, ``logit_offset``) and lists (``class_names``, ``palette``) whatever was passed.
    """

    num_classes: int | None = None
    class_names: list[str] | None = None
    palette: list[list[int]] | None = None
    mean: tuple[float, ...] = tuple(IMAGENET_MEAN)
    std: tuple[float, ...] = tuple(IMAGENET_STD)
    ignore_index: int = 255
    input_size: tuple[int, int] | None = None  # (height, width) the weights expect, when they expect one
    source: str = ""  # where the weights came from: "" (random init), a file, or a library tag
    # scales of the multi-scale + flip test-time augmentation these weights were validated with;
    # prediction uses it unless told otherwise (None: predict each image once)
    tta_scales: tuple[float, ...] | None = None
    # per-class amounts the zoo model's forward adds to its logits, one per class: `semseg export
    # --logit-adjust` records -alpha * log(class weight), taking back that share of the decision shift a
    # class-weighted loss trained into the weights (None: the logits as trained)
    logit_offset: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if self.tta_scales is not None:
            self.tta_scales = tuple(float(v) for v in self.tta_scales)
        if self.logit_offset is not None:
            self.logit_offset = tuple(float(v) for v in self.logit_offset)
        if self.class_names is not None:
            self.class_names = [str(name) for name in self.class_names]
        if self.palette is not None:
            self.palette = [[int(c) for c in colour] for colour in self.palette]

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples), so the dict is safe for ``weights_only`` loading and JSON."""
        values = dataclasses.asdict(self)
        for key in ("mean", "std", "input_size", "tta_scales", "logit_offset"):
            if values[key] is not None:
                values[key] = list(values[key])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelMeta:
        """The inverse of :meth:`to_dict`; keys this version does not know are ignored, absent ones keep their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def of(cls, model: Any) -> ModelMeta:
        """``model.pretrained_cfg``, or the defaults for a model (or callable) that has none."""
        meta = getattr(model, "pretrained_cfg", None)
        if meta is None:
            return cls()
        if not isinstance(meta, cls):
            raise SemsegError(
                f"{type(model).__name__}.pretrained_cfg is a {type(meta).__name__}; semseg reads its model metadata "
                "from a semseg.meta.ModelMeta there (or from nothing: ImageNet mean and std, no class names)"
            )
        return meta


def check_num_classes(num_classes: Any, name: str = "num_classes") -> int:
    """``num_classes`` as an int; SemsegError unless it is a positive integer (``name``: how the user gave it)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise SemsegError(f"{name} must be a positive integer (at least 1), got {num_classes!r}")
    return int(num_classes)


def check_ignore_index(ignore_index: Any, num_classes: int, name: str = "ignore_index") -> int:
    """``ignore_index`` as an int; SemsegError when it is not an integer or is a class id (0..num_classes-1)."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise SemsegError(f"{name} must be an integer, got {ignore_index!r}")
    if 0 <= ignore_index < num_classes:
        raise SemsegError(
            f"{name} ({ignore_index}) is a class id (there are {num_classes} classes, 0..{num_classes - 1}); "
            "the ignore index must lie outside them, e.g. 255"
        )
    return int(ignore_index)


def check_tta_scales(scales: Sequence[float], name: str = "tta scales") -> tuple[float, ...]:
    """``scales`` as a tuple; SemsegError unless it is a non-empty list of positive numbers."""
    if not scales or min(scales) <= 0:
        raise SemsegError(f"{name} must be positive numbers, got {list(scales)}")
    return tuple(float(s) for s in scales)


def as_size(value: int | Sequence[int] | None, name: str) -> Size | None:
    """``value`` (one int or a (height, width) pair) as a pair; SemsegError unless both are positive integers."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in pair):
        raise SemsegError(f"{name} must be two positive integers (height width), got {value!r}")
    return int(pair[0]), int(pair[1])

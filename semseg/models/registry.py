"""The model registry, in the style of timm: builders are plain functions registered by name.

A builder has the signature ``builder(num_classes: int, pretrained: bool = False,
**its_own_kwargs) -> SegModel``. :func:`create_model` adds what every model
shares: the checks, ``norm=``, weights from a file, and the bookkeeping
(``model_name``, ``model_kwargs``) that lets a checkpoint rebuild the model.
Besides the registered names, ``"ARCH:ENCODER"`` builds any pairing of a
segmentation_models_pytorch architecture (or ``fcn8s``) with an encoder.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from typing import Any, Callable

from semseg.errors import SemsegError
from semseg.meta import check_num_classes
from semseg.models.base import SegModel

ModelBuilder = Callable[..., SegModel]
_MODELS: dict[str, ModelBuilder] = {}

NORMS = ("bn", "gn", "syncbn")
# create_model kwargs that only say where weights come from: not kept in model_kwargs,
# so that rebuilding a model from a checkpoint never downloads anything
WEIGHT_SOURCE_KWARGS = ("pretrained_backbone",)
_PLAIN = (type(None), bool, int, float, str)


def register_model(fn: ModelBuilder | None = None, *, name: str | None = None) -> Any:
    """Decorator: ``@register_model`` (registered as the function's name) or ``register_model(fn, name=...)``."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = builder
        return builder

    return add(fn) if fn is not None else add


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by an fnmatch ``pattern`` (``"unet*"``).

    Any ``"ARCH:ENCODER"`` pairing also works in :func:`create_model` without being listed.
    """
    names = sorted(_MODELS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern.lower())]


def get_builder(name: str) -> ModelBuilder:
    if not isinstance(name, str):
        raise SemsegError(f"model name must be a string, got {name!r}")
    if name in _MODELS:
        return _MODELS[name]
    if ":" in name:
        return _general_builder(name)
    close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SemsegError(
        f"unknown model {name!r}.{hint} semseg.list_models() lists the names; any "
        "segmentation_models_pytorch pairing is written 'ARCH:ENCODER' (e.g. 'unet:resnet18', 'fpn:tu-convnext_tiny')"
    )


def _general_builder(name: str) -> ModelBuilder:
    """The builder of ``"ARCH:ENCODER"``: smp's architectures, and fcn8s on any timm encoder."""
    from semseg.models import fcn8s, smp_zoo

    arch, _, encoder = name.partition(":")
    arch = arch.lower()
    if arch == "fcn8s":
        return fcn8s.fcn8s_builder(encoder, name)
    archs = smp_zoo.smp_architectures()
    if arch not in archs:
        close = difflib.get_close_matches(arch, archs + ["fcn8s"], n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise SemsegError(f"model {name!r}: unknown architecture {arch!r}.{hint} Known: {', '.join(archs + ['fcn8s'])}")
    return smp_zoo.smp_builder(arch, encoder, name)


def _check_kwargs(name: str, builder: ModelBuilder, kwargs: dict[str, Any]) -> None:
    """Unknown kwargs fail here with the accepted ones (builders taking ``**kwargs`` check their own)."""
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p not in ("num_classes", "pretrained")] + ["norm"]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise SemsegError(f"model {name!r}: unknown keyword argument(s) {', '.join(unknown)}; it accepts: {', '.join(accepted)}")


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def create_model(name: str, num_classes: int, pretrained: bool | str | os.PathLike = False, **kwargs: Any) -> SegModel:
    """Build zoo model ``name`` with ``num_classes`` output channels.

    ``pretrained``: False (random init), True (the library's published weights:
    torchvision's COCO-VOC models, the ImageNet encoder for smp and fcn8s models;
    downloads when not cached, fails within seconds offline), or the path of a
    weights file (a semseg checkpoint or a state dict, see :func:`load_weights`).
    ``norm="gn"`` turns BatchNorm into GroupNorm (``"syncbn"``: SyncBatchNorm).
    Other ``kwargs`` go to the builder (plain values only, so checkpoints can rebuild the model).
    """
    from semseg.models.norms import convert_norm
    from semseg.models.weights import load_weights

    check_num_classes(num_classes)
    if not isinstance(pretrained, (bool, str, os.PathLike)) or pretrained == "":
        raise SemsegError(f"pretrained must be True, False or a weights file path, got {pretrained!r}")
    norm = kwargs.pop("norm", "bn")
    if norm not in NORMS:
        raise SemsegError(f"model {name!r}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    builder = get_builder(name)
    _check_kwargs(name, builder, kwargs)
    for key, value in kwargs.items():
        if not _is_plain(value):
            raise SemsegError(
                f"model {name!r}: keyword argument {key}={value!r} must be a plain value "
                "(None, bool, int, float, str, or lists/dicts of them) so that a checkpoint can rebuild the model"
            )
    model = builder(num_classes=num_classes, pretrained=pretrained is True, **kwargs)
    model.model_name = name
    model.model_kwargs = {k: v for k, v in kwargs.items() if k not in WEIGHT_SOURCE_KWARGS}
    if norm != "bn":
        model = convert_norm(model, norm)
    if not isinstance(pretrained, bool):
        load_weights(model, pretrained)
    return model

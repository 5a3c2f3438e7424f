"""Building models: :func:`create_model` from a name, :func:`load_model` from a checkpoint.

Above the model families (torchvision, smp, FCN-8s), which register their
builders in :mod:`semseg.models.registry` when imported here. Besides the
registered names, ``"ARCH:ENCODER"`` builds any pairing of a
segmentation_models_pytorch architecture (or ``fcn8s``) with an encoder.
:func:`create_model` adds what every model shares: the checks, ``norm=``,
weights from a file, and the bookkeeping (``model_name``, ``model_kwargs``)
that lets a checkpoint rebuild the model. :func:`load_torch_model` picks the
model a command names: a checkpoint, a zoo name with a weights file, or the
default model shipped in the package.
"""

from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from semseg.checkpoint import DEFAULT_MODEL_PATH, default_model_path, load_checkpoint  # noqa: F401  (re-exported)
from semseg.errors import SemsegError
from semseg.meta import ModelMeta, check_num_classes
from semseg.models import fcn8s, realtime, smp_zoo, torchvision_zoo, transformers_zoo  # noqa: F401  (importing a family registers its builders)
from semseg.models.base import SegModel
from semseg.models.norms import IBN_MAX_STRIDE, convert_norm, convert_to_ibn
from semseg.models.registry import ModelBuilder, close_names, registered_builder
from semseg.models.weights import dequantize, load_state, load_weights

NORMS = ("bn", "gn", "syncbn", "ibn")
# create_model kwargs that only say where weights come from: not kept in model_kwargs,
# so that rebuilding a model from a checkpoint never downloads anything
WEIGHT_SOURCE_KWARGS = ("pretrained_backbone",)
_PLAIN = (type(None), bool, int, float, str)


def get_builder(name: str) -> ModelBuilder:
    """The builder of a registered name or of an ``"ARCH:ENCODER"`` pairing; SemsegError with close names otherwise."""
    if not isinstance(name, str):
        raise SemsegError(f"model name must be a string, got {name!r}")
    builder = registered_builder(name)
    if builder is not None:
        return builder
    if name.startswith("hf:") and len(name) > 3:
        return transformers_zoo.hf_builder(name[3:], name)
    if ":" in name:
        return _pairing_builder(name)
    close = close_names(name)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SemsegError(
        f"unknown model {name!r}.{hint} semseg.list_models() lists the names; any "
        "segmentation_models_pytorch pairing is written 'ARCH:ENCODER' (e.g. 'unet:resnet18', 'fpn:tu-convnext_tiny'), "
        "a transformers checkpoint 'hf:FOLDER' (or 'hf:ORG/REPO' online)"
    )


def _pairing_builder(name: str) -> ModelBuilder:
    """The builder of ``"ARCH:ENCODER"``: smp's architectures, and fcn8s on any timm encoder."""
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
    torchvision's COCO-VOC models, the ImageNet encoder for smp and fcn8s models,
    Mask2Former's ADE20K weights; downloads when not cached, fails within seconds
    offline), or the path of a weights file (a semseg checkpoint or a state dict,
    see :func:`load_weights`) or, for transformers models, of a ``from_pretrained`` folder.
    ``"hf:FOLDER"`` (or ``"hf:ORG/REPO"``) names a transformers checkpoint: its
    architecture and weights (the heads re-initialized where ``num_classes`` differs).
    ``norm="gn"`` turns BatchNorm into GroupNorm (``"syncbn"``: SyncBatchNorm);
    ``norm="ibn"`` instance-normalizes half the channels of the BatchNorms at strides
    4 to ``ibn_max_stride`` (default 8; IBN-Net, :func:`convert_to_ibn`).
    Other ``kwargs`` go to the builder (plain values only, so checkpoints can rebuild the model).
    """
    check_num_classes(num_classes)
    if not isinstance(pretrained, (bool, str, os.PathLike)) or pretrained == "":
        raise SemsegError(f"pretrained must be True, False or a weights file path, got {pretrained!r}")
    norm = kwargs.pop("norm", "bn")
    if norm not in NORMS:
        raise SemsegError(f"model {name!r}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    ibn_max_stride = kwargs.pop("ibn_max_stride", None)
    if ibn_max_stride is not None and norm != "ibn":
        raise SemsegError(f"model {name!r}: ibn_max_stride goes with norm='ibn', not norm={norm!r}")
    if ibn_max_stride is not None and (isinstance(ibn_max_stride, bool) or ibn_max_stride not in (4, 8, 16, 32)):
        raise SemsegError(f"model {name!r}: ibn_max_stride must be 4, 8, 16 or 32, got {ibn_max_stride!r}")
    if norm == "ibn" and pretrained is True:
        raise SemsegError(f"model {name!r}: norm='ibn' is for training from scratch (its new layers would "
                          "discard the published weights' BatchNorm statistics); leave out pretrained")
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
    # a builder may record kwargs of its own (the published config it was built from)
    model.model_kwargs = {**model.model_kwargs, **{k: v for k, v in kwargs.items() if k not in WEIGHT_SOURCE_KWARGS}}
    if norm == "ibn":
        model = convert_to_ibn(model, ibn_max_stride or IBN_MAX_STRIDE)
        model.model_kwargs["norm"] = "ibn"
        if ibn_max_stride is not None:
            model.model_kwargs["ibn_max_stride"] = ibn_max_stride
    elif norm != "bn":
        model = convert_norm(model, norm)
    if not isinstance(pretrained, bool):
        load_weights(model, pretrained)
    return model


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SegModel:
    """Rebuild the model of a semseg checkpoint, with its weights and metadata, in eval mode."""
    state = load_checkpoint(path, map_location)
    name, meta = state["model_name"], state.get("model_meta") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("num_classes"), int):
        raise SemsegError(f"{path}: checkpoint lacks model_meta.num_classes; cannot rebuild model {name!r}")
    kwargs = state.get("model_kwargs") or {}
    try:
        model = create_model(name, meta["num_classes"], **kwargs)
    except SemsegError as exc:
        raise SemsegError(f"{path}: cannot rebuild its model {name!r} (kwargs {kwargs}): {exc}") from None
    load_state(model, dequantize(state, str(path)), source=str(path), new_head_ok=False, from_model=name)
    model.pretrained_cfg = replace(ModelMeta.from_dict(meta), source=str(path))
    return model.to(map_location).eval()


def load_torch_model(
    checkpoint: str | os.PathLike | None = None,
    model_name: str | None = None,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
) -> SegModel:
    """The model a command names: a checkpoint, a zoo name with a raw state dict, or else the default model."""
    if model_name is None and (weights is not None or num_classes is not None):
        raise SemsegError("--weights and --num-classes go with --model NAME (or use --checkpoint FILE)")
    if checkpoint is not None and model_name is not None:
        raise SemsegError("give either --checkpoint FILE or --model NAME --weights FILE, not both")
    if model_name is None:
        return load_model(checkpoint if checkpoint is not None else default_model_path())
    if model_name.startswith("hf:"):  # a transformers checkpoint holds its weights and its class count
        if weights is not None or num_classes is not None:
            raise SemsegError(f"--model {model_name} loads the checkpoint's own weights and classes; "
                              "leave out --weights and --num-classes")
        return create_model(model_name, transformers_zoo.hf_num_labels(model_name[3:])).eval()
    if weights is None or num_classes is None:
        raise SemsegError(f"--model {model_name} needs --weights FILE (a state dict) and --num-classes N")
    check_num_classes(num_classes, "--num-classes")
    model = create_model(model_name, num_classes)
    load_weights(model, weights, new_head_ok=False)  # a new head is for fine-tuning only, never for predict or export
    return model

"""Loading weights into zoo models: semseg checkpoints, raw state dicts, and the libraries' own files.

A zoo model's state dict is its library's under ``net.`` (torchvision's
``backbone.*``, smp's ``encoder.*``, ...), so a file is accepted with or
without that prefix: torchvision's published ``.pth`` files load as they are.
Entries whose shapes differ only in their first dimension outside the encoder
(the class count of the last layers) keep the model's fresh initialization,
with a warning: that is how weights trained for other classes are fine-tuned.
Anything else that does not fit is a :class:`SemsegError` listing the missing,
unexpected and mis-shaped entries, not torch's traceback.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from semseg.checkpoint import CHECKPOINT_FORMAT, load_file
from semseg.errors import SemsegError
from semseg.meta import ModelMeta
from semseg.models.base import SegModel, is_encoder_key

log = logging.getLogger(__name__)

MAX_LISTED = 6  # keys named per kind of problem; the count says how many more
# the weights a transformers from_pretrained folder may hold
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass
class StateFit:
    """How a state dict fits a model: what it lacks, what it has extra, what has another shape."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, file shape, model shape
    new_head: list[str] = field(default_factory=list)  # class-count mismatches outside the encoder

    def problems(self) -> str:
        def listed(keys: list[str]) -> str:
            more = f", ... ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
            return ", ".join(keys[:MAX_LISTED]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {listed(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {listed(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} (file {list(a)}, model {list(b)})" for k, a, b in self.mismatched]
            parts.append(f"{len(shapes)} shape mismatch(es): {listed(shapes)}")
        return "; ".join(parts)


def _with_net_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The library's own state dict (torchvision's, smp's) gets the ``net.`` prefix of zoo models."""
    if any(key.startswith("net.") for key in state):
        return state
    return {f"net.{key}": value for key, value in state.items()}


def _is_optional(model: SegModel, key: str) -> bool:
    # num_batches_tracked is absent from older files; BatchNorm fills it in itself
    return key.endswith("num_batches_tracked") or key.startswith(tuple(getattr(model, "training_only_prefixes", ())))


def _is_class_count_change(model: SegModel, key: str, file_shape: tuple, model_shape: tuple) -> bool:
    return (not is_encoder_key(model, key) and len(file_shape) == len(model_shape)
            and file_shape[1:] == model_shape[1:])


def fit_state(model: SegModel, state: dict[str, Tensor], new_head_ok: bool) -> StateFit:
    own = model.state_dict()
    fit = StateFit()
    fit.missing = [k for k in own if k not in state and not _is_optional(model, k)]
    fit.unexpected = [k for k in state if k not in own and not _is_optional(model, k)]
    for key, value in state.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            shapes = (tuple(value.shape), tuple(own[key].shape))
            if new_head_ok and _is_class_count_change(model, key, *shapes):
                fit.new_head.append(key)
            else:
                fit.mismatched.append((key, *shapes))
    return fit


def load_state(model: SegModel, state: dict[str, Any], source: str, strict: bool = True,
               new_head_ok: bool = True, from_model: str | None = None) -> StateFit:
    """Copy ``state`` into ``model``; see the module docstring for what may differ. Returns the fit."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SemsegError(f"{source}: not a state dict (a dict of parameter name -> tensor)")
    state = _with_net_prefix(state)
    fit = fit_state(model, state, new_head_ok)
    problems = fit.problems()
    if problems:
        holds = f" (the file holds weights of model {from_model!r})" if from_model and from_model != model.model_name else ""
        message = f"{source}: the weights do not fit model {model.model_name or type(model).__name__!r}{holds}: {problems}"
        if strict:
            raise SemsegError(message)
        warnings.warn(message + "; those entries keep their initial values", stacklevel=3)
    if fit.new_head:
        warnings.warn(
            f"{source}: weights for another number of classes; the backbone is loaded and the head is "
            f"re-initialized for {model.pretrained_cfg.num_classes} classes ({', '.join(fit.new_head)})",
            stacklevel=3,
        )
    skip = set(fit.new_head) | {key for key, _, _ in fit.mismatched}
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in skip}, strict=False)
    return fit


def _note_untrained_training_heads(model: SegModel, state: dict[str, Tensor], source: str) -> None:
    """Say so when the file lacks the training-only heads (an inference export leaves them out)."""
    prefixes = tuple(model.training_only_prefixes)
    keys = _with_net_prefix(state)
    absent = sorted({k.split(".")[1] for k in model.state_dict() if k.startswith(prefixes) and k not in keys})
    if absent:
        log.info("%s: no weights for the training-only head(s) %s (an inference export leaves them out); "
                 "fine-tuning starts them untrained", source, ", ".join(absent))


def _class_count_message(model: SegModel, state: dict[str, Tensor], fit: StateFit, source: str) -> str:
    """The class-count mismatch as one message: a new head is random, so only fine-tuning may start from one."""
    classes = model.pretrained_cfg.num_classes
    own = model.state_dict()
    found = sorted({int(state[k].shape[0]) for k in fit.new_head if own[k].shape[0] == classes}) or ["another number of"]
    return (
        f"{source}: the weights are for {', '.join(map(str, found))} classes but the model is built for {classes}; "
        "a new head would be random: predict and export with the class count the weights were trained for "
        f"(--num-classes {found[0]}), and fine-tune for {classes} classes with train model.pretrained={source}"
    )


# ------------------------------------------------------------------ int8 weight storage of inference checkpoints
# torch's own per-channel quantized tensors (torch.quantize_per_channel) would hold these, but torch deprecates
# them for removal; two plain tensors per weight (int8 values, float32 scales) load with weights_only=True in
# any torch. They live beside "model", not in it, so a semseg without this code refuses such a file with
# "missing keys" instead of loading int8 values as float weights.
INT8_MIN_ELEMENTS = 2**16  # smaller tensors stay float16: the early and depthwise layers, few bytes but most of the error


def int8_weights(
    state: dict[str, Tensor], min_elements: int = INT8_MIN_ELEMENTS
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Split ``state`` into (float16 and non-float entries, int8 weights, their scales), keyed like ``state``.

    A floating tensor of two or more dimensions (a convolution's or linear layer's weight) with at least
    ``min_elements`` elements is stored as int8, symmetric, one float32 scale per output channel (dim 0):
    ``weight ~= int8 * scale``, the scale mapping the channel's largest magnitude to 127. Every other
    floating tensor is stored as float16, other tensors as they are. :func:`dequantize` reverses it.
    """
    rest, values, scales = {}, {}, {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.ndim >= 2 and tensor.numel() >= min_elements:
            weight = tensor.float()
            scale = weight.abs().amax(dim=tuple(range(1, weight.ndim))).clamp_min(1e-12) / 127
            shaped = scale.view(-1, *[1] * (weight.ndim - 1))
            values[key] = (weight / shaped).round().clamp(-127, 127).to(torch.int8)
            scales[key] = scale
        else:
            rest[key] = tensor.half() if tensor.is_floating_point() else tensor
    return rest, values, scales


def dequantize(state: dict[str, Any], source: str) -> dict[str, Tensor]:
    """The float weights of a semseg checkpoint ``state``: its ``model`` plus its int8 weights times their scales.

    A SemsegError names ``source`` and the entry when the int8 part is malformed (a weight without its scale,
    a scale of another length than the weight's output channels, a tensor that is not int8).
    """
    values, scales = state.get("int8_weights") or {}, state.get("int8_scales") or {}
    if not isinstance(values, dict) or not isinstance(scales, dict):
        raise SemsegError(f"{source}: 'int8_weights' and 'int8_scales' must be dicts of parameter name -> tensor")
    if not values and not scales:
        return state["model"]
    if not isinstance(state["model"], dict):
        raise SemsegError(f"{source}: not a state dict (a dict of parameter name -> tensor)")
    weights = dict(state["model"])
    for key, value in values.items():
        scale = scales.get(key)
        if not isinstance(value, Tensor) or value.dtype != torch.int8 or value.ndim < 2:
            raise SemsegError(f"{source}: int8 weight {key!r} is not an int8 tensor of two or more dimensions")
        if not isinstance(scale, Tensor) or not scale.is_floating_point() or scale.shape != (value.shape[0],):
            raise SemsegError(f"{source}: int8 weight {key!r} lacks its scales (one float per output channel, "
                              f"{value.shape[0]} here) in 'int8_scales'")
        weights[key] = value.float() * scale.float().view(-1, *[1] * (value.ndim - 1))
    stray = sorted(set(scales) - set(values))
    if stray:
        raise SemsegError(f"{source}: 'int8_scales' has entries without an int8 weight: {', '.join(stray[:MAX_LISTED])}")
    return weights


def _unpack(obj: Any, path: str) -> tuple[dict[str, Tensor], str | None, dict | None]:
    """(state dict, model name, model_meta) of a semseg checkpoint, a ``{"state_dict": ...}`` file or a state dict."""
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        if "model" not in obj:
            raise SemsegError(f"{path}: semseg checkpoint lacks the 'model' entry")
        return dequantize(obj, path), obj.get("model_name"), obj.get("model_meta")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning-style files
        return obj["state_dict"], None, None
    return obj, None, None


def load_weights(model: SegModel, path: str | os.PathLike, strict: bool = True, new_head_ok: bool = True) -> SegModel:
    """Load weights file ``path`` into zoo model ``model`` (in place; returns it).

    ``path``: a semseg checkpoint, or a state dict of the whole model (semseg's,
    or the library's own: torchvision's published files, with or without the
    aux head), or for a transformers model (Mask2Former) a ``from_pretrained``
    folder. Weights for another class count load all but the last layers,
    with a warning. A checkpoint's class names, palette, mean and std come
    along when its class count is the model's. ``strict=False`` loads what
    fits and warns about the rest. ``new_head_ok=False`` (prediction, export:
    a re-initialized head is a random one) makes a class-count mismatch a SemsegError.
    """
    path = str(path)
    if os.path.isdir(path):  # a transformers from_pretrained folder
        load_state(model, load_hf_state(model, path), source=path, strict=strict)
        model.pretrained_cfg = replace(hf_meta(path, model.pretrained_cfg), source=path)
        return model
    state, from_model, meta = _unpack(load_file(path), path)
    try:
        load_state(model, state, source=path, strict=strict, new_head_ok=new_head_ok, from_model=from_model)
        _note_untrained_training_heads(model, state, path)
    except SemsegError:
        if new_head_ok or not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise
        fit = fit_state(model, _with_net_prefix(state), True)
        if not fit.new_head or fit.problems():
            raise
        raise SemsegError(_class_count_message(model, _with_net_prefix(state), fit, path)) from None
    cfg = model.pretrained_cfg
    if meta and meta.get("num_classes") == cfg.num_classes:
        cfg = ModelMeta.from_dict(meta)
    model.pretrained_cfg = replace(cfg, source=path)
    return model


# ------------------------------------------------------------------ transformers from_pretrained folders
def check_pretrained_folder(path: str | os.PathLike) -> Path:
    """``path`` if it is a ``from_pretrained`` folder (config.json and weights), else a SemsegError saying what is missing."""
    folder = Path(path)
    if not folder.is_dir():
        raise SemsegError(f"{folder}: no such folder")
    if not (folder / "config.json").is_file():
        raise SemsegError(f"{folder}: not a transformers from_pretrained folder (it has no config.json)")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise SemsegError(f"{folder}: holds a config.json but no weights ({', '.join(WEIGHT_FILES)})")
    return folder


def load_hf_state(model: SegModel, folder: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict of the transformers model saved in ``folder``, for loading into zoo model ``model``.

    The folder's model is built by transformers itself (so its own key renames and
    sharded files apply) and must be the architecture of ``model.net``.
    """
    folder = check_pretrained_folder(folder)
    try:
        import transformers
    except ImportError:
        raise SemsegError(f"{folder}: loading a from_pretrained folder needs transformers: "
                          "pip install 'semseg[transformers]'") from None
    net = getattr(model, "net", None)
    if net is None or not isinstance(net, transformers.PreTrainedModel):
        raise SemsegError(f"{folder}: a transformers from_pretrained folder loads into transformers models only "
                          f"(mask2former_*, hf:PATH), not into {model.model_name or type(model).__name__!r}")
    try:
        loaded = type(net).from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SemsegError(f"{folder}: transformers could not load it as {type(net).__name__}: {exc}") from None
    return {f"net.{key}": value for key, value in loaded.state_dict().items()}


def hf_meta(folder: str | os.PathLike, meta: ModelMeta) -> ModelMeta:
    """``meta`` with the mean and std of the folder's image processor (preprocessor_config.json), where it has one."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return meta
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SemsegError(f"{path}: not readable JSON ({exc})") from None
    if values.get("do_normalize", True) is False:
        return replace(meta, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    mean, std = values.get("image_mean"), values.get("image_std")
    if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
        return replace(meta, mean=tuple(mean), std=tuple(std))
    return meta

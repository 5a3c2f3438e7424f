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

import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

from semseg.checkpoint import CHECKPOINT_FORMAT, load_file
from semseg.errors import SemsegError
from semseg.meta import ModelMeta
from semseg.models.base import SegModel, is_encoder_key

MAX_LISTED = 6  # keys named per kind of problem; the count says how many more


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
    return key.endswith("num_batches_tracked") or key.startswith(tuple(getattr(model, "optional_prefixes", ())))


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


def _unpack(obj: Any, path: str) -> tuple[dict[str, Tensor], str | None, dict | None]:
    """(state dict, model name, model_meta) of a semseg checkpoint, a ``{"state_dict": ...}`` file or a state dict."""
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        if "model" not in obj:
            raise SemsegError(f"{path}: semseg checkpoint lacks the 'model' entry")
        return obj["model"], obj.get("model_name"), obj.get("model_meta")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning-style files
        return obj["state_dict"], None, None
    return obj, None, None


def load_weights(model: SegModel, path: str | os.PathLike, strict: bool = True) -> SegModel:
    """Load weights file ``path`` into zoo model ``model`` (in place; returns it).

    ``path``: a semseg checkpoint, or a state dict of the whole model (semseg's,
    or the library's own: torchvision's published files, with or without the
    aux head). Weights for another class count load all but the last layers,
    with a warning. A checkpoint's class names, palette, mean and std come
    along when its class count is the model's. ``strict=False`` loads what
    fits and warns about the rest.
    """
    path = str(path)
    state, from_model, meta = _unpack(load_file(path), path)
    load_state(model, state, source=path, strict=strict, from_model=from_model)
    cfg = model.pretrained_cfg
    if meta and meta.get("num_classes") == cfg.num_classes:
        cfg = ModelMeta.from_dict(meta)
    model.pretrained_cfg = replace(cfg, source=path)
    return model

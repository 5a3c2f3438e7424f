"""The model registry, in the style of timm: a table of builders, plain functions registered by name.

A builder has the signature ``builder(num_classes: int, pretrained: bool = False,
**its_own_kwargs) -> SegModel``. This module only keeps the table; building a
model from a name (the checks, ``norm=``, weights, ``"ARCH:ENCODER"`` names)
is :func:`semseg.models.factory.create_model`.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable

from semseg.models.base import SegModel

ModelBuilder = Callable[..., SegModel]
_MODELS: dict[str, ModelBuilder] = {}


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

    Any ``"ARCH:ENCODER"`` pairing also works in ``create_model`` without being listed.
    """
    names = sorted(_MODELS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern.lower())]


def registered_builder(name: str) -> ModelBuilder | None:
    """The builder registered as ``name``, or None."""
    return _MODELS.get(name)


def close_names(name: str) -> list[str]:
    """Up to five registered names that look like ``name`` (for "did you mean")."""
    return difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)

"""semseg: semantic segmentation toolkit.

Public API: :func:`create_model`, :func:`list_models`, :func:`load_model`,
:class:`Predictor`. Imports are lazy so that ``semseg --help`` starts fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "Predictor", "SemsegError", "__version__"]

from semseg.errors import SemsegError


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models", "load_model"):
        from semseg import models

        return getattr(models, name)
    if name == "Predictor":
        from semseg.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'semseg' has no attribute {name!r}")

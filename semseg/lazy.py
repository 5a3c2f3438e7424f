"""Package attributes imported on first use (PEP 562), so that importing one light module of a package
does not import the heavy ones beside it.

A process that predicts through an exported graph imports ``semseg.predict.exported`` and
``semseg.metrics.scores``; Python runs their packages' ``__init__`` first, and an ``__init__``
that imported every module would bring in torch, seconds of start-up that such a process never needs.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name in ``exports`` comes from the module it maps to
    (relative to ``package``), imported when the name is first read.

    No exported name may be the name of a module of the package: importing that module sets the package's
    attribute to the module, and the name would then read as the module.
    """
    clashes = sorted(name for name in exports if importlib.util.find_spec(f"{package}.{name}") is not None)
    if clashes:
        raise ImportError(f"{package}: exported names {clashes} are also its modules' names")

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__

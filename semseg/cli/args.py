"""Arguments several commands share: where the model comes from, and ``key=value`` config overrides."""

from __future__ import annotations

import argparse
from typing import Sequence

from semseg.errors import SemsegError

ERROR_PREFIX = "semseg: error: "  # the start of the one line a command prints for a SemsegError


def add_model_source(p: argparse.ArgumentParser) -> None:
    """``--checkpoint`` or ``--model`` with ``--weights`` and ``--num-classes`` (none: the default model)."""
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="a semseg checkpoint")
    p.add_argument("--model", default=None, metavar="NAME", help="a zoo architecture, with --weights and --num-classes")
    p.add_argument("--weights", default=None, metavar="FILE", help="a raw state dict for --model (e.g. torchvision's .pth)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N")


def split_overrides(extra: list[str]) -> list[str]:
    """Turn ``key=value``, ``--key value`` and ``--key=value`` leftovers into ``key=value``."""
    overrides: list[str] = []
    i = 0
    while i < len(extra):
        item = extra[i]
        if item.startswith("--"):
            item = item[2:]
            if "=" not in item:
                if i + 1 >= len(extra):
                    raise SemsegError(f"option --{item} needs a value")
                item = f"{item}={extra[i + 1]}"
                i += 1
        if "=" not in item:
            raise SemsegError(f"unexpected argument {item!r}: overrides are written key=value (e.g. train.epochs=5)")
        overrides.append(item)
        i += 1
    return overrides


def check_outputs(files: Sequence[str | None] = (), folders: Sequence[str | None] = ()) -> None:
    """Check, before any work starts, that each output file and folder asked for (not None) can be written."""
    from semseg.io import check_writable_file, check_writable_folder

    for path in files:
        if path is not None:
            check_writable_file(path)
    for folder in folders:
        if folder is not None:
            check_writable_folder(folder)

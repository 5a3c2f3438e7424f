"""The cache of converted models: graphs keyed by the hash of the weights they came from, so a second run starts fast.

An entry is two files in :func:`cache_dir` (``$SEMSEG_CACHE_DIR``, else
``$XDG_CACHE_HOME/semseg``, else ``~/.cache/semseg``), under ``models/``:
``<key>.onnx``, the converted graph, and ``<key>.json``, its record (what the
conversion measured: agreement with PyTorch fp32, timings, the choice made).
The key hashes the weights (a file's bytes, or a model's state dict) together
with everything else that shapes the graph: the model's name and metadata, and
the versions of torch and of semseg's converter (:data:`CONVERTER_VERSION`).

Both files are written atomically (a temporary file, then a rename), the graph
before its record, and a reader trusts a graph only once its record exists. So
concurrent runs are safe without a lock: two that convert the same weights at
once each write complete files, and the later rename wins with an equivalent
graph; a killed run leaves no record and the next one converts again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from semseg.errors import SemsegError
from semseg.io import write_text_atomic

if TYPE_CHECKING:  # looking an entry up needs no torch: a process that runs a cached graph never imports it
    from torch import nn

log = logging.getLogger(__name__)
CHUNK = 1 << 20
# part of every key: raise it when a change in semseg.runtime.convert changes the graphs it writes
CONVERTER_VERSION = 1


def cache_dir() -> Path:
    """Where converted models are kept: ``$SEMSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/semseg``, else ``~/.cache/semseg``."""
    if os.environ.get("SEMSEG_CACHE_DIR"):
        return Path(os.environ["SEMSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "semseg"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (bounded memory for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_digest(model: nn.Module) -> str:
    """SHA-256 of a model's weights and buffers: names, dtypes, shapes and values, in state-dict order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(parts: Iterable[Any]) -> str:
    """A key (48 hex digits) for ``parts`` (digests, names, settings) and the torch version that converts them."""
    # the installed torch distribution's version, read from its metadata without importing torch
    text = json.dumps([importlib.metadata.version("torch"), *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:48]


def entry_paths(key: str, suffix: str = ".onnx") -> tuple[Path, Path]:
    """``(graph, record)`` paths of the entry ``key``."""
    folder = cache_dir() / "models"
    return folder / f"{key}{suffix}", folder / f"{key}.json"


def read_entry(key: str, suffix: str = ".onnx") -> dict[str, Any] | None:
    """The record of a complete entry (its graph's path under ``"path"``), or None when there is none.

    A record that cannot be parsed, or whose graph is gone, counts as no entry
    (it is converted again and overwritten), with a warning for the former.
    """
    graph, record = entry_paths(key, suffix)
    if not record.is_file() or not graph.is_file():
        return None
    try:
        values = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable cache record (%s); converting again", record, exc)
        return None
    return {**values, "path": str(graph)}


def write_record(key: str, values: dict[str, Any], suffix: str = ".onnx") -> dict[str, Any]:
    """Write the record of entry ``key`` atomically, after its graph; returns it with ``"path"``."""
    graph, record = entry_paths(key, suffix)
    if not graph.is_file():
        raise SemsegError(f"{graph}: cannot record a converted model that is not there")
    write_text_atomic(record, json.dumps(values, indent=2, sort_keys=True))
    return {**values, "path": str(graph)}

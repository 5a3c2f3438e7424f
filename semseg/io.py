"""Reading images and label maps, and writing files atomically.

Label maps are read with PIL, never through an RGB conversion: a palette ("P")
PNG is read as its indices, 8- and 16-bit greyscale PNGs as their values.
Everything written by semseg goes through :func:`atomic_write` so that a crash
or a full disk never leaves a half-written file where a good one used to be.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from semseg.errors import SemsegError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image, turning every PIL failure into one message."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later in a worker
            return img.copy()
    except FileNotFoundError:
        raise SemsegError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SemsegError(f"{path}: cannot read image ({exc})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB. Returns uint8 [H, W, 3]."""
    img = _open(path)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG as its values. Returns [H, W] uint8 or int32.

    Palette PNGs give their indices; 16-bit PNGs keep values above 255.
    An RGB(A) mask is an error here: colour masks need a palette to map colours
    to ids (see ``semseg.data``).
    """
    img = _open(path)
    if img.mode in ("P", "L", "1"):
        return np.asarray(img.convert("L") if img.mode == "1" else img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        return np.asarray(img, dtype=np.int32)
    if img.mode in ("LA", "PA"):
        return np.asarray(img)[..., 0].astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        # A common export mistake: an index mask saved as RGB with three equal channels.
        rgb = np.asarray(img)[..., :3]
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
    raise SemsegError(
        f"{path}: label map has mode {img.mode!r} with differing colour channels; expected a "
        "single-channel index PNG or a palette PNG (colour masks need a palette to map colours to ids)"
    )


def encode_label_png(labels: np.ndarray, palette: list[list[int]] | None = None) -> bytes:
    """Encode a [H, W] label map as PNG bytes.

    Ids below 256 with a palette give a palette PNG (its indices are the ids, so
    any tool reading indices gets the ids back); ids of 256 and more give a
    16-bit greyscale PNG.
    """
    if labels.ndim != 2:
        raise SemsegError(f"label map must be 2-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise SemsegError("label ids must lie in 0..65535 to be written as PNG")
    if labels.size and labels.max() > 255:
        img = Image.fromarray(labels.astype(np.uint16))  # 16-bit greyscale
    else:
        img = Image.fromarray(labels.astype(np.uint8))
        if palette is not None:
            # putpalette on an "L" image turns it into a "P" image with the same indices
            flat = [c for rgb in palette[:256] for c in rgb]
            img.putpalette(flat + [0] * (768 - len(flat)))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; the renamed result should have the mode a plain open() gives
# (read once here: os.umask can only be read by setting it, which is not thread-safe)
_NEW_FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _NEW_FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def encode_image_png(rgb: np.ndarray) -> bytes:
    """Encode a uint8 [H, W, 3] (or [H, W]) image as PNG bytes.

    zlib level 1, not PIL's default 6: on photo-like overlays level 6 costs more time
    than a small model's prediction, for files about a tenth smaller (BENCHMARKS.md, "Prediction").
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_label_png(path: str | os.PathLike, labels: np.ndarray, palette: list[list[int]] | None = None) -> None:
    write_bytes_atomic(path, encode_label_png(labels, palette))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SemsegError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

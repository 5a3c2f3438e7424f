"""Files: reading images and label maps safely, writing atomically, locking folders.

Reading. Every image and label map semseg reads goes through :func:`read_image`
or :func:`read_label_map`, which

- read the header first and refuse a file whose width x height exceeds
  :func:`max_image_pixels` (a decompression bomb: a 74-byte PNG may claim
  100000x100000 pixels) before a byte of pixels is decoded;
- turn every failure of the decoders (PIL raises a dozen exception types on
  malformed files) into one :class:`SemsegError` naming the file;
- apply the EXIF orientation, so pixels are where every viewer and annotation
  tool shows them;
- read 16-bit images at their full range: a 16-bit value ``v`` becomes the
  8-bit ``v >> 8``, as PIL already does for 16-bit colour PNGs (values that use
  only the low 12 bits, raw sensor data, give a dark image and a warning);
  32-bit float images are refused.

Label maps are read as their values, never through an RGB conversion: a
palette ("P") PNG as its indices, 8- and 16-bit greyscale PNGs as their values.

Writing. Everything semseg writes goes through :func:`atomic_write` (or
:func:`staged_path`): the data go to a temporary file beside the target,
named ``.<name>.<pid>.<random>.tmp``, which replaces the target only once
complete, so a crash, a signal or a full disk never leaves a half-written file
where a good one used to be. :func:`remove_stale_temporaries` deletes the
temporaries of processes that died (SIGKILL) without touching a live one's.

Locking. :func:`folder_lock` holds ``fcntl.flock`` on ``FOLDER/.semseg.lock``
for the life of a command: a second command on the same folder is refused, and
the lock dies with its process (no stale lock after a SIGKILL).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import ExifTags, Image

from semseg.errors import SemsegError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# 2**28 pixels (16384 x 16384): the largest image any command decodes. docs/safety.md gives each
# command's peak memory at this size; SEMSEG_MAX_IMAGE_PIXELS raises or lowers it.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 28
PIXEL_LIMIT_ENV = "SEMSEG_MAX_IMAGE_PIXELS"
# above this many pixels an image is converted to a numpy array in row bands, which saves a
# whole-image copy (PIL's tobytes joins its chunks into one more buffer)
BAND_PIXELS = 1 << 22
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# ---------------------------------------------------------------------------- reading
def max_image_pixels() -> int:
    """The largest width x height semseg decodes: ``SEMSEG_MAX_IMAGE_PIXELS`` or 2**28."""
    text = os.environ.get(PIXEL_LIMIT_ENV)
    if text is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SemsegError(f"environment variable {PIXEL_LIMIT_ENV} must be a positive number of pixels, got {text!r}")
    return value


def _too_large(path: str | os.PathLike, pixels: str) -> SemsegError:
    limit = max_image_pixels()
    return SemsegError(
        f"{path}: image of {pixels} is larger than semseg's limit of {limit:,} pixels ({limit / 1e6:.0f} MP; "
        f"a decompression bomb, or a scan to cut into tiles); {PIXEL_LIMIT_ENV}=N raises the limit"
    )


def _describe(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _opened(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``path`` opened by PIL, its header read and its size checked, nothing decoded yet.

    Any exception inside the block becomes one SemsegError naming the file: PIL's
    decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError,
    IndexError, ... on malformed files, and a file is bad input, never a crash.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SemsegError(f"{path}: file not found") from None
    except OSError as exc:
        raise SemsegError(f"{path}: cannot read image ({exc.strerror or _describe(exc)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise SemsegError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(info.st_mode):  # a FIFO (opening it would block), a device
        raise SemsegError(f"{path}: not a regular file")
    with warnings.catch_warnings():
        # PIL warns above its own limit (89 MP) and raises above twice that; semseg checks its own limit
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise _too_large(path, _claimed_pixels(exc)) from None
        except Exception as exc:  # noqa: BLE001 - every decoder failure is a bad file
            raise SemsegError(f"{path}: cannot read image ({_describe(exc)})") from None
        with img:
            width, height = img.size
            if width * height > max_image_pixels():
                raise _too_large(path, f"{width}x{height} ({width * height:,} pixels)")
            if width < 1 or height < 1:
                raise SemsegError(f"{path}: image has no pixels ({width}x{height})")
            try:
                yield img
            except SemsegError:
                raise
            except Image.DecompressionBombError as exc:
                raise _too_large(path, _claimed_pixels(exc)) from None
            except MemoryError:
                raise SemsegError(f"{path}: not enough memory to decode this {width}x{height} image") from None
            except Exception as exc:  # noqa: BLE001 - see the docstring
                raise SemsegError(f"{path}: cannot read image ({_describe(exc)})") from None


def _claimed_pixels(exc: Exception) -> str:
    """'10,000,000,000 pixels' from PIL's 'Image size (10000000000 pixels) exceeds limit ...'."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found[1]):,} pixels" if found else "more pixels than PIL's limit"


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as stored (before its EXIF orientation), from its header; checked
    against the pixel limit, nothing decoded."""
    with _opened(path) as img:
        width, height = img.size
    return height, width


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (``img`` itself when it has none)."""
    method = _ORIENTATION.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    return img if method is None else img.transpose(method)


def _banded(img: Image.Image, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """``convert(img)``; for a large image, row band by row band into one preallocated array."""
    width, height = img.size
    if width * height <= BAND_PIXELS:
        return convert(img)
    rows = max(1, BAND_PIXELS // width)
    first = convert(img.crop((0, 0, width, min(rows, height))))
    out = np.empty((height, *first.shape[1:]), first.dtype)
    out[: len(first)] = first
    for top in range(rows, height, rows):
        out[top : top + rows] = convert(img.crop((0, top, width, min(top + rows, height))))
    return out


def _sixteen_to_rgb(img: Image.Image) -> np.ndarray:
    values = np.asarray(img)
    grey = (values >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _to_rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB, upright (EXIF orientation applied). Returns uint8 [H, W, 3].

    16-bit images keep their high byte (``v >> 8``); 32-bit float images and
    images over :func:`max_image_pixels` are refused (see the module docstring).
    """
    with _opened(path) as img:
        img.load()  # decode now: a truncated file fails here, not later in a worker
        img = _upright(img)
        if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
            return _read_sixteen_bit(img, path)
        if img.mode == "F":
            raise SemsegError(
                f"{path}: a 32-bit floating-point image; semseg reads 8- and 16-bit images: convert it to 8 bits "
                "with the value range it needs"
            )
        return _banded(img, _to_rgb)


def _read_sixteen_bit(img: Image.Image, path: str | os.PathLike) -> np.ndarray:
    if img.mode == "I":  # 32-bit integers: PIL's mode for some 16-bit TIFFs; accepted when they fit 16 bits
        low, high = img.getextrema()
        if low < 0 or high > 65535:
            raise SemsegError(f"{path}: a 32-bit integer image with values {low}..{high}; semseg reads 8- and 16-bit images")
        img = img.convert("I;16")
    high = img.getextrema()[1]
    if high < 4096 and _first_warning(path):
        log.warning(
            "%s: 16-bit image whose values reach only %d (12 bits or fewer, e.g. raw sensor data): read at the full "
            "16-bit range it is dark; convert it to 8 bits with its sensor's scaling if that is not what you want",
            path, high,
        )
    return _banded(img, _sixteen_to_rgb)


_WARNED: set[str] = set()


def _first_warning(path: str | os.PathLike) -> bool:
    """True the first time a file is warned about in this process (a training set is read every epoch)."""
    key = str(path)
    if key in _WARNED or len(_WARNED) >= 10_000:
        return False
    _WARNED.add(key)
    return True


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG as its values. Returns [H, W] uint8 or int32.

    Palette PNGs give their indices; 16-bit PNGs keep values above 255.
    An RGB(A) mask is an error here: colour masks need a palette to map colours
    to ids (see ``semseg.data``). The header is checked and the EXIF
    orientation applied as in :func:`read_image`.
    """
    with _opened(path) as img:
        img.load()
        img = _upright(img)
        mode = img.mode
        if mode in ("P", "L", "1"):
            return np.asarray(img.convert("L") if mode == "1" else img, dtype=np.uint8)
        if mode in (*SIXTEEN_BIT_MODES, "I"):
            return np.asarray(img, dtype=np.int32)
        if mode in ("LA", "PA"):
            return np.asarray(img)[..., 0].astype(np.uint8)
        if mode in ("RGB", "RGBA"):
            # A common export mistake: an index mask saved as RGB with three equal channels.
            rgb = np.asarray(img)[..., :3]
            if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
                return np.ascontiguousarray(rgb[..., 0])
    raise SemsegError(
        f"{path}: label map has mode {mode!r}{' with differing colour channels' if mode in ('RGB', 'RGBA') else ''}; "
        "expected a single-channel index PNG or a palette PNG (colour masks need a palette to map colours to ids)"
    )


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation (1..8) of an image file, 1 when it has none or cannot be read (for messages)."""
    try:
        with Image.open(path) as img:
            return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - a hint for an error message, never an error itself
        return 1


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SemsegError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------- encoding
def encode_label_png(labels: np.ndarray, palette: list[list[int]] | None = None) -> bytes:
    """Encode a [H, W] label map as PNG bytes (see :func:`write_label_png`)."""
    buffer = io.BytesIO()
    _label_image(labels, palette).save(buffer, format="PNG")
    return buffer.getvalue()


def _label_image(labels: np.ndarray, palette: list[list[int]] | None) -> Image.Image:
    """Ids below 256 with a palette give a palette PNG (its indices are the ids, so
    any tool reading indices gets the ids back); ids of 256 and more give a
    16-bit greyscale PNG.
    """
    if labels.ndim != 2:
        raise SemsegError(f"label map must be 2-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise SemsegError("label ids must lie in 0..65535 to be written as PNG")
    if labels.size and labels.max() > 255:
        return Image.fromarray(labels.astype(np.uint16))  # 16-bit greyscale
    img = Image.fromarray(labels.astype(np.uint8, copy=False))
    if palette is not None:
        # putpalette on an "L" image turns it into a "P" image with the same indices
        flat = [c for rgb in palette[:256] for c in rgb]
        img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def encode_image_png(rgb: np.ndarray) -> bytes:
    """Encode a uint8 [H, W, 3] (or [H, W]) image as PNG bytes (see :func:`write_image_png`)."""
    buffer = io.BytesIO()
    _save_png(rgb, buffer)
    return buffer.getvalue()


def _save_png(rgb: np.ndarray, handle: io.IOBase) -> None:
    """zlib level 1, not PIL's default 6: on photo-like overlays level 6 costs more time
    than a small model's prediction, for files about a tenth smaller (BENCHMARKS.md, "Prediction").
    """
    Image.fromarray(np.ascontiguousarray(rgb)).save(handle, format="PNG", compress_level=1)


def write_label_png(path: str | os.PathLike, labels: np.ndarray, palette: list[list[int]] | None = None) -> None:
    """Write a label map as PNG atomically, streamed to disk (no whole-file buffer in memory)."""
    img = _label_image(labels, palette)
    with atomic_write(path, "wb") as handle:
        img.save(handle, format="PNG")


def write_image_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 [H, W, 3] (or [H, W]) image as PNG atomically, streamed to disk."""
    with atomic_write(path, "wb") as handle:
        _save_png(rgb, handle)


def write_image_jpeg(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 [H, W, 3] picture for people to look at as JPEG atomically: quality 95 without chroma
    subsampling (4:4:4), so class colours keep their edges. For overlays, where PNG (even at zlib level 1)
    took longer to write than a small model takes to predict, for a file several times the size
    (BENCHMARKS.md, "Whole processes").
    """
    with atomic_write(path, "wb") as handle:
        Image.fromarray(np.ascontiguousarray(rgb)).save(handle, format="JPEG", quality=95, subsampling=0)


# ---------------------------------------------------------------------------- writing
def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; the renamed result should have the mode a plain open() gives
# (read once here: os.umask can only be read by setting it, which is not thread-safe)
_NEW_FILE_MODE = 0o666 & ~_read_umask()
# .<target name>.<pid of the writer>.<mkstemp's random part>.tmp
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _cannot_write(path: str | os.PathLike, exc: OSError) -> SemsegError:
    return SemsegError(f"{path}: cannot write ({exc.strerror or _describe(exc)})")


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(target.parent, exc) from None


def _temporary(target: Path) -> tuple[int, str]:
    _make_parent(target)
    try:
        return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as exc:
        raise _cannot_write(target, exc) from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    On any failure (an exception, a signal turned into one, a full disk) the
    temporary file is removed and ``path`` keeps its previous content; a failed
    write of the disk (OSError) becomes a SemsegError naming ``path``.
    """
    with staged_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()


@contextlib.contextmanager
def staged_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that need a file name (memory maps, exporters, checks).

    The block writes (and may check) the temporary file; it replaces ``path``
    only when the block ends without an exception, and is removed otherwise.
    """
    target = Path(path)
    if target.is_dir():
        raise SemsegError(f"{target}: is a folder; name a file to write")
    fd, tmp = _temporary(target)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)  # the data on disk before the rename: a power cut never leaves an empty file under the name
        os.chmod(tmp, _NEW_FILE_MODE)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _cannot_write(target, exc) from None
        raise


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists, under another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files (of :func:`atomic_write`) in ``folder`` whose writer process is gone.

    A writer killed by SIGKILL leaves its ``.<name>.<pid>.<random>.tmp``; one
    whose process still runs (another command writing there) is kept. ``name``
    limits the cleanup to the temporaries of that target file. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _process_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            entry.unlink()
            removed.append(entry)
    if removed:
        log.debug("removed %d temporary file(s) left by killed processes in %s", len(removed), folder)
    return removed


# ---------------------------------------------------------------------------- checks and locks
def check_writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) and check that a file can be written in it, before any work starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SemsegError(f"{folder}: the {what} is a file, not a folder; name a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".write-check.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SemsegError(f"{folder}: cannot write the {what} here ({exc.strerror or _describe(exc)})") from None
    return folder


def check_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before any work starts, that ``path`` can be written: not a folder, its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise SemsegError(f"{path}: the {what} is a folder; name a file")
    check_writable_folder(path.parent, f"folder of the {what}")
    return path


def check_not_an_input(out: str | os.PathLike, inputs: list[str | os.PathLike | None], flag: str = "--out") -> None:
    """SemsegError when ``out`` is one of ``inputs`` (the same file, under any name): writing it would destroy the input."""
    out_path = Path(out)
    for source in inputs:
        if source is None:
            continue
        source_path = Path(source)
        if out_path.exists() and source_path.exists():
            same = os.path.samefile(out_path, source_path)
        else:
            same = out_path.resolve() == source_path.resolve()
        if same:
            raise SemsegError(f"{out}: {flag} is the input file {source}; writing it would destroy the input: name another file")


LOCK_NAME = ".semseg.lock"


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - semseg's CI runs on Linux
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the block; SemsegError when another process holds it.

    The lock is ``flock`` on ``FOLDER/.semseg.lock``: the kernel releases it when
    its process ends, however it ends, so a killed command never leaves a stale
    lock. The file stays (removing it would race with a process opening it) and
    names the last holder. Temporaries of killed writers are removed once the lock is held.
    """
    folder = check_writable_folder(folder, what)
    lock_path = folder / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SemsegError(f"{lock_path}: cannot create the lock file ({exc.strerror or _describe(exc)})") from None
    try:
        if not _try_lock(fd):
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise SemsegError(
                f"{folder}: the {what} is in use by another semseg command (process {holder}); "
                "wait for it to finish, or use another folder"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}: {' '.join(sys.argv[:6])}\n".encode(), 0)
        remove_stale_temporaries(folder)
        yield folder
    finally:
        os.close(fd)  # releases the lock

"""A malformed-file corpus, generated at test time: the files a careless camera, exporter or attacker produces.

:func:`write_corpus` writes the files into a folder and returns, for each, what
semseg must do with it: read it correctly (``"ok"``, with the upright size it
has), or refuse it with a message containing the given text (the message also
names the file; the tests check both).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# 2**28 + a row: one row more than semseg's default pixel limit
OVER_LIMIT = (16385, 16384)  # width, height
# the issue's 12000x12000 zeros: 144 MP, 140 KB as PNG, within the limit and above what whole-image prediction holds
ISSUE_ZEROS = (12000, 12000)


@dataclass(frozen=True)
class Case:
    expect: str  # "ok" or the text the refusal contains
    size: tuple[int, int] | None = None  # (height, width) as read, upright, for "ok"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` 8-bit grey pixels, with a tiny (too short) IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b"")


def zero_png(width: int, height: int) -> bytes:
    """A real, complete 8-bit grey PNG of zeros, streamed row by row (never ``width * height`` bytes in memory)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    parts = [packer.compress(row) for _ in range(height)]
    data = b"".join(parts) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_corpus(folder: Path, large: bool = True) -> dict[str, Case]:
    """Write the corpus into ``folder``; ``large`` adds the over-the-limit real image of zeros (256 KB on disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}

    def put(name: str, data: bytes, case: Case) -> None:
        (folder / name).write_bytes(data)
        cases[name] = case

    Image.fromarray(_rgb(24, 32, 0)).save(folder / "good.png")
    cases["good.png"] = Case("ok", (24, 32))
    put("zero_bytes.png", b"", Case("cannot read image"))
    good = (folder / "good.png").read_bytes()
    put("truncated.png", good[: len(good) // 2], Case("cannot read image"))
    put("text.jpg", b"this is a text file with an image extension\n", Case("cannot read image"))
    put("bomb.png", png_header_bomb(100_000, 100_000), Case("larger than semseg's limit"))
    if large:
        put("zeros_over_limit.png", zero_png(*OVER_LIMIT), Case("larger than semseg's limit"))
    # a JPEG saved under a .png name: the contents decide, not the extension
    Image.fromarray(_rgb(20, 28, 1)).save(folder / "jpeg_named.png", format="JPEG", quality=95)
    cases["jpeg_named.png"] = Case("ok", (20, 28))
    # 12-bit sensor data in a 16-bit PNG: read at its full 16-bit range (warned about), never clipped
    Image.fromarray(np.random.default_rng(2).integers(0, 4096, (16, 24), dtype=np.uint16)).save(folder / "sixteen.png")
    cases["sixteen.png"] = Case("ok", (16, 24))
    Image.fromarray(_rgb(18, 22, 3)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    cases["cmyk.jpg"] = Case("ok", (18, 22))
    Image.fromarray(_rgb(20, 30, 4)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    cases["palette.png"] = Case("ok", (20, 30))
    # EXIF orientation 6 (rotate 90 clockwise to view): stored 20x36 (HxW), read upright 36x20
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rgb(20, 36, 5)).save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    cases["exif_rotated.jpg"] = Case("ok", (36, 20))
    Image.fromarray(np.zeros((8, 8), np.float32), mode="F").save(folder / "float.tif")
    cases["float.tif"] = Case("32-bit floating-point")
    Image.fromarray(_rgb(16, 16, 6)).save(folder / "bad_crc.png")
    data = bytearray((folder / "bad_crc.png").read_bytes())
    data[29] ^= 0xFF  # the IHDR checksum
    put("bad_crc.png", bytes(data), Case("cannot read image"))
    return cases

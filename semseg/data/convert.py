"""Polygon and RLE labels to index masks: ``semseg data convert`` from COCO JSON and YOLO segmentation txt.

Users coming from detection-style tools hold their labels as shapes, not masks.
This module rasterizes them into the folder format semseg trains on:

* ``OUT/masks/<image stem>.png``: one 8-bit (16-bit past 255) index mask per image;
* ``OUT/<split>.txt``: the ``image mask`` pairs (paths relative to OUT), the
  folder format's list file, so ``semseg data check --config OUT/data.yaml``
  and ``semseg train --config OUT/data.yaml`` read the result as it is;
* ``OUT/data.yaml``: the ``data`` section (format folder, root, class count,
  class names, ignore index).

What becomes what:

* classes: with no class map, background is class 0 and the source classes
  follow in order (COCO categories by id, YOLO class k as k + 1); with
  ``background="ignore"`` unlabelled pixels are ``ignore_index`` and the source
  classes start at 0. A class map (``{source name or id: class id or "ignore"}``)
  replaces that order; a source class it leaves out is an error naming it, so
  nothing is dropped silently.
* COCO crowd regions (``iscrowd: 1``) become ``ignore_index``, as COCO's own
  semantic evaluation ignores them; they are drawn first and annotated
  instances over them.
* overlaps: shapes are drawn largest first, so a small object lying on a
  large one stays visible (the order panoptic-to-semantic conversions use).
* polygons follow COCO's coordinate convention (pixel (i, j) covers
  [j, j+1) x [i, i+1)): a pixel is inside when its centre is;
  RLE masks are decoded with pycocotools (the ``coco`` extra).

Problems that concern one shape or one image (a polygon with fewer than three
points, a YOLO line with an odd coordinate count, an image file not found) are
collected in the report and that shape or image is left out; a malformed file
as a whole, an unknown category or class is a SemsegError naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import yaml
from PIL import Image

from semseg.data.formats import default_palette
from semseg.errors import SemsegError
from semseg.io import IMAGE_EXTENSIONS, write_label_png, write_text_atomic
from semseg.progress import Progress

_LOG = logging.getLogger(__name__)
BACKGROUND_MODES = ("class", "ignore")
IGNORE = "ignore"


@dataclass
class Shape:
    """One labelled region: polygons (flat x, y lists in pixels) or a decoded binary mask."""

    label: Any  # the source class: a COCO category id or a YOLO class index
    polygons: list[list[float]] = field(default_factory=list)
    mask: np.ndarray | None = None
    crowd: bool = False

    def area(self) -> float:
        if self.mask is not None:
            return float(self.mask.sum())
        return float(sum(abs(_shoelace(p)) for p in self.polygons))


@dataclass
class ConversionReport:
    out_dir: Path
    split: str
    class_names: list[str]
    ignore_index: int
    images: int = 0
    shapes: int = 0
    # (file, what is wrong with it): shapes or images left out
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.out_dir / "data.yaml"


def _shoelace(flat: Sequence[float]) -> float:
    x, y = np.asarray(flat[0::2], dtype=np.float64), np.asarray(flat[1::2], dtype=np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def rasterize(shapes: Iterable[tuple[Shape, int]], height: int, width: int, fill: int) -> np.ndarray:
    """An int64 [height, width] map: ``fill`` where no shape lies, else the value of the shape drawn last there.

    ``shapes``: (shape, value) in drawing order.
    """
    labels = np.full((height, width), fill, dtype=np.int64)
    for shape, value in shapes:
        region = shape.mask if shape.mask is not None else polygon_mask(shape.polygons, height, width)
        labels[region] = value
    return labels


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """A bool [height, width] mask of the union of ``polygons`` (flat x, y lists in pixel units, even-odd rule).

    A pixel is inside when its centre is: pixel (i, j) covers [j, j+1) x [i, i+1)
    (COCO's convention), so an axis-aligned polygon on pixel edges fills exactly
    the pixels it encloses. Written here as a scanline fill because Pillow's
    polygon rounds vertex coordinates to whole pixels and so cannot follow that
    convention: each edge toggles, on every pixel row whose centre it crosses,
    the first column whose centre lies right of it; a running parity fills.
    """
    mask = np.zeros((height, width), dtype=bool)
    for flat in polygons:
        xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
        toggles = np.zeros((height, width + 1), dtype=np.int32)
        for (x0, y0), (x1, y1) in zip(xy, np.roll(xy, -1, axis=0)):
            if y0 == y1:
                continue
            # the rows whose centre i + 0.5 lies in [min(y), max(y)): each crossing counted once
            first = max(int(np.ceil(min(y0, y1) - 0.5)), 0)
            stop = min(int(np.ceil(max(y0, y1) - 0.5)), height)
            if first >= stop:
                continue
            rows = np.arange(first, stop)
            x = x0 + (rows + 0.5 - y0) * (x1 - x0) / (y1 - y0)
            np.add.at(toggles, (rows, np.clip(np.ceil(x - 0.5), 0, width).astype(np.int64)), 1)
        mask |= (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(bool)
    return mask


# ------------------------------------------------------------------ class maps
def _read_yaml(path: Path) -> Any:
    """The YAML (or JSON, a subset of it) in ``path``; a SemsegError naming the file when it cannot be read."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SemsegError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise SemsegError(f"{path}: not JSON or YAML ({str(exc).splitlines()[0]})") from None


def load_class_map(path: str | os.PathLike) -> dict[str, int | str]:
    """A class map file (JSON or YAML): ``{source class name or id: class id or "ignore"}``."""
    path = Path(path)
    values = _read_yaml(path)
    if not isinstance(values, dict) or not values:
        raise SemsegError(f"{path}: a class map is a mapping {{source class name or id: class id or \"ignore\"}}")
    return {str(k): v for k, v in values.items()}


def resolve_classes(
    sources: Mapping[Any, str], class_map: Mapping[str, int | str] | None, background: str, ignore_index: int, where: str
) -> tuple[dict[Any, int], list[str]]:
    """Source class (id) -> class id or ``ignore_index``, and the class names.

    ``sources``: source id -> name, in the order classes are numbered without a map.
    A class map is looked up by name first, then by id (as a string).
    """
    if background not in BACKGROUND_MODES:
        raise SemsegError(f"background must be one of {', '.join(BACKGROUND_MODES)}, got {background!r}")
    first = 1 if background == "class" else 0
    if class_map is None:
        table = {source: first + i for i, source in enumerate(sources)}
        names = (["background"] if background == "class" else []) + [sources[s] for s in sources]
        _check_ignore(ignore_index, len(names))
        return table, names
    table, unmapped = {}, []
    for source, name in sources.items():
        key = name if name in class_map else str(source)
        if key not in class_map:
            unmapped.append(f"{name!r} (id {source})" if name != str(source) else repr(name))
            continue
        value = class_map[key]
        if value == IGNORE:
            table[source] = ignore_index
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            table[source] = value
        else:
            raise SemsegError(f"class map: {key!r} maps to {value!r}; expected a class id >= 0 or \"ignore\"")
    if unmapped:
        raise SemsegError(f"{where}: the class map does not say what becomes of class(es) {', '.join(unmapped[:10])}"
                          f"{' and more' if len(unmapped) > 10 else ''}; map each to a class id or to \"ignore\"")
    used = sorted({v for v in table.values() if v != ignore_index} | ({0} if background == "class" else set()))
    num_classes = (max(used) + 1) if used else 1
    _check_ignore(ignore_index, num_classes)
    names = [f"class_{i}" for i in range(num_classes)]
    if background == "class":
        names[0] = "background"
    by_class: dict[int, list[str]] = {}
    for source, value in table.items():
        if value != ignore_index:
            by_class.setdefault(value, []).append(sources[source])
    for value, merged in by_class.items():
        names[value] = "+".join(merged)
    if background == "class" and 0 in by_class:
        names[0] = "+".join(["background", *by_class[0]])
    return table, names


def _check_ignore(ignore_index: int, num_classes: int) -> None:
    if not 0 <= ignore_index <= 65535 or ignore_index < num_classes:
        raise SemsegError(f"ignore index {ignore_index} must lie in {num_classes}..65535 (past the {num_classes} class ids)")


# ------------------------------------------------------------------ writing
def _write(report: ConversionReport, pairs: list[tuple[Path, Path]], palette: list[list[int]]) -> None:
    lines = []
    for image, mask in pairs:
        rel = [os.path.relpath(p, report.out_dir) for p in (image, mask)]
        if any(any(c.isspace() for c in r) for r in rel):
            raise SemsegError(f"{image}: a path with white space cannot go in the list file {report.split}.txt; "
                              "rename it or write OUT next to the images")
        lines.append(" ".join(Path(r).as_posix() for r in rel))
    write_text_atomic(report.out_dir / f"{report.split}.txt", "\n".join(lines) + "\n")
    data = {"data": {"format": "folder", "root": str(report.out_dir.resolve()), "num_classes": len(report.class_names),
                     "class_names": report.class_names, "ignore_index": report.ignore_index,
                     "palette": palette}}
    write_text_atomic(report.config_path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


def _draw_and_save(shapes: list[Shape], table: Mapping[Any, int], size: tuple[int, int], fill: int, ignore_index: int,
                   path: Path, palette: list[list[int]]) -> None:
    # crowd regions first, then instances largest first (small objects on top)
    ordered = sorted(shapes, key=lambda s: (not s.crowd, -s.area()))
    values = [(s, ignore_index if s.crowd else table[s.label]) for s in ordered]
    labels = rasterize(values, size[0], size[1], fill)
    write_label_png(path, labels, palette if labels.max(initial=0) < 256 else None)


def _out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise SemsegError(f"{out}: exists and is not a folder")
    (out / "masks").mkdir(parents=True, exist_ok=True)
    return out


def _check_split(split: str) -> str:
    if not split or any(c in split for c in "/\\ +") or split.startswith("."):
        raise SemsegError(f"split name {split!r} must be a plain file name without '/', '+' or spaces")
    return split


# ------------------------------------------------------------------ COCO
def _coco_shapes(annotation: dict, height: int, width: int, where: str) -> Shape:
    seg = annotation.get("segmentation")
    shape = Shape(annotation["category_id"], crowd=bool(annotation.get("iscrowd", 0)))
    if isinstance(seg, list):
        for flat in seg:
            if not isinstance(flat, list) or len(flat) < 6 or len(flat) % 2:
                raise ValueError("a polygon needs an even count of coordinates, at least 3 points")
            shape.polygons.append([float(v) for v in flat])
        return shape
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        shape.mask = _decode_rle(seg, height, width, where)
        return shape
    raise ValueError("segmentation is neither a list of polygons nor an RLE {size, counts}")


def _decode_rle(seg: dict, height: int, width: int, where: str) -> np.ndarray:
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise SemsegError(f"{where}: RLE segmentations need pycocotools: pip install 'semseg[coco]'") from None
    if list(seg["size"]) != [height, width]:
        raise ValueError(f"RLE size {seg['size']} is not the image's {[height, width]}")
    rle = coco_mask.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
    if isinstance(rle.get("counts"), str):
        rle = {**rle, "counts": rle["counts"].encode()}
    return coco_mask.decode(rle).astype(bool)


def coco_to_masks(
    annotation_file: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    class_map: Mapping[str, int | str] | None = None,
    background: str = "class",
    ignore_index: int = 255,
) -> ConversionReport:
    """Rasterize a COCO instances/stuff JSON (polygons or RLE) into index masks; see the module docstring.

    ``images_dir``: the folder ``images[].file_name`` is relative to.
    """
    path, images_dir = Path(annotation_file), Path(images_dir)
    split = _check_split(split)
    try:
        coco = json.loads(path.read_text())
    except OSError as exc:
        raise SemsegError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SemsegError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
        raise SemsegError(f"{path}: not a COCO annotation file (it needs lists 'images', 'annotations' and 'categories')")
    if not images_dir.is_dir():
        raise SemsegError(f"{images_dir}: images folder not found")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in sorted(coco["categories"], key=lambda c: int(c["id"]))}
        images = {int(i["id"]): (str(i["file_name"]), int(i["height"]), int(i["width"])) for i in coco["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise SemsegError(f"{path}: a category needs 'id' and 'name', an image 'id', 'file_name', 'height' and 'width' "
                          f"({type(exc).__name__}: {exc})") from None
    table, names = resolve_classes(categories, class_map, background, ignore_index, str(path))
    report = ConversionReport(_out_dir(out_dir), split, names, ignore_index)
    by_image: dict[int, list[dict]] = {i: [] for i in images}
    for number, annotation in enumerate(coco["annotations"]):
        image_id, category = annotation.get("image_id"), annotation.get("category_id")
        if image_id not in by_image:
            raise SemsegError(f"{path}: annotation {annotation.get('id', number)} names image_id {image_id!r}, "
                              "which 'images' does not list")
        if category not in categories:
            raise SemsegError(f"{path}: annotation {annotation.get('id', number)} names category_id {category!r}, "
                              "which 'categories' does not list")
        by_image[image_id].append(annotation)
    palette = default_palette(len(names))
    fill = 0 if background == "class" else ignore_index
    pairs, stems = [], set()
    with Progress(len(images), "converting COCO labels", unit="image") as bar:
        for image_id, (file_name, height, width) in images.items():
            bar.update()
            image = images_dir / file_name
            if not image.is_file():
                report.problems.append((str(image), "listed in the JSON but not found; left out"))
                continue
            stem = Path(file_name).stem
            if stem in stems:
                raise SemsegError(f"{path}: two images named {stem!r}: masks are named after the image stem")
            stems.add(stem)
            where = f"{path} (image {file_name})"
            shapes = []
            for annotation in by_image[image_id]:
                try:
                    shapes.append(_coco_shapes(annotation, height, width, where))
                except (ValueError, TypeError, KeyError) as exc:
                    report.problems.append((where, f"annotation {annotation.get('id', '?')}: {exc}; left out"))
            mask = report.out_dir / "masks" / f"{stem}.png"
            _draw_and_save(shapes, table, (height, width), fill, ignore_index, mask, palette)
            report.images += 1
            report.shapes += len(shapes)
            pairs.append((image, mask))
    _write(report, pairs, palette)
    return report


# ------------------------------------------------------------------ YOLO
def load_yolo_names(path: str | os.PathLike) -> list[str]:
    """The class names of a YOLO dataset YAML (``names:`` as a list, or as a dict {index: name})."""
    path = Path(path)
    values = _read_yaml(path)
    names = values.get("names") if isinstance(values, dict) else None
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: int(k))
        if [int(k) for k in keys] != list(range(len(keys))):
            raise SemsegError(f"{path}: 'names' must number the classes 0..N-1, got {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise SemsegError(f"{path}: a YOLO dataset YAML with a 'names' list (or {{index: name}} mapping)")
    return [str(n) for n in names]


def _yolo_shapes(label_file: Path, height: int, width: int, num_names: int | None,
                 problems: list[tuple[str, str]]) -> list[Shape]:
    shapes = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label_file}:{number}"
        try:
            cls, coords = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            problems.append((where, f"expected 'class x1 y1 x2 y2 ...', got {line.strip()[:60]!r}; left out"))
            continue
        if len(coords) < 6 or len(coords) % 2:
            problems.append((where, f"a polygon needs an even count of coordinates, at least 3 points (got {len(coords)}); "
                                    "left out (a 4-number line is a detection box, not a segment)"))
            continue
        if cls < 0 or (num_names is not None and cls >= num_names):
            raise SemsegError(f"{where}: class {cls} is not among the {num_names} names of the dataset YAML")
        flat = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
        shapes.append(Shape(cls, [flat]))
    return shapes


def yolo_to_masks(
    labels_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    split: str = "train",
    class_map: Mapping[str, int | str] | None = None,
    background: str = "class",
    ignore_index: int = 255,
) -> ConversionReport:
    """Rasterize YOLO segmentation labels (``class x1 y1 ...`` in 0..1, one txt per image) into index masks.

    Every image in ``images_dir`` gets a mask; one without a label file is all
    background (YOLO's convention for images with no objects). ``names``: the
    class names (``load_yolo_names``); without them classes are named ``class_K``
    after the largest index the labels use.
    """
    labels_dir, images_dir = Path(labels_dir), Path(images_dir)
    split = _check_split(split)
    for folder, what in ((labels_dir, "labels"), (images_dir, "images")):
        if not folder.is_dir():
            raise SemsegError(f"{folder}: {what} folder not found")
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise SemsegError(f"{images_dir}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    problems: list[tuple[str, str]] = []
    shapes_of: dict[Path, list[Shape]] = {}
    sizes: dict[Path, tuple[int, int]] = {}
    for image in images:
        try:
            with Image.open(image) as img:  # the header only
                width, height = img.size
        except (OSError, ValueError) as exc:
            problems.append((str(image), f"cannot read its size ({exc}); left out"))
            continue
        label_file = labels_dir / f"{image.stem}.txt"
        sizes[image] = (height, width)
        shapes_of[image] = _yolo_shapes(label_file, height, width, len(names) if names else None, problems) \
            if label_file.is_file() else []
    known = {i.stem for i in images}
    problems += [(str(t), "label file without an image; left out") for t in sorted(labels_dir.glob("*.txt"))
                 if t.stem not in known]
    used = max((s.label for shapes in shapes_of.values() for s in shapes), default=-1)
    source_names = list(names) if names else [f"class_{k}" for k in range(used + 1)]
    table, class_names = resolve_classes(dict(enumerate(source_names)), class_map, background, ignore_index, str(labels_dir))
    report = ConversionReport(_out_dir(out_dir), split, class_names, ignore_index, problems=problems)
    palette = default_palette(len(class_names))
    fill = 0 if background == "class" else ignore_index
    pairs = []
    with Progress(len(shapes_of), "converting YOLO labels", unit="image") as bar:
        for image, shapes in shapes_of.items():
            bar.update()
            mask = report.out_dir / "masks" / f"{image.stem}.png"
            _draw_and_save(shapes, table, sizes[image], fill, ignore_index, mask, palette)
            report.images += 1
            report.shapes += len(shapes)
            pairs.append((image, mask))
    _write(report, pairs, palette)
    return report

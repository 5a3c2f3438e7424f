"""The segmentation dataset: (image, mask) pairs of any format, decoded in DataLoader workers.

``build_dataset(cfg, split, transform)`` finds the pairs (:mod:`semseg.data.layouts`),
decodes masks through the one lookup table (:mod:`semseg.data.masks`) and hands
``(image, mask)`` to the joint transform (:mod:`semseg.data.transforms`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import tv_tensors

from semseg.config import DataConfig, check_classes, check_data_format
from semseg.data.formats import FORMATS, default_palette
from semseg.data.layouts import Listing
from semseg.data.masks import MaskDecoder, mask_decoder
from semseg.data.splits import split_listing
from semseg.errors import SemsegError
from semseg.io import read_image
from semseg.meta import check_num_classes
from semseg.progress import Progress

log = logging.getLogger(__name__)

# A bad sample is replaced by the next one; this many bad ones in a row stop the run.
MAX_CONSECUTIVE_BAD = 16
MAX_WORKER_SLOTS = 64


@dataclass
class DatasetInfo:
    name: str
    num_classes: int
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Classes, names and palette of ``cfg``'s dataset (built-in table, or the config for ``folder``)."""
    check_data_format(cfg.format)
    if cfg.format in FORMATS:
        fmt = FORMATS[cfg.format]
        num_classes, names, palette = fmt.num_classes, list(fmt.class_names), [list(c) for c in fmt.palette]
    else:
        if cfg.num_classes is None:
            raise SemsegError("config key 'data.num_classes' is required for format 'folder' (the number of classes)")
        num_classes = check_num_classes(cfg.num_classes, "config key 'data.num_classes'")
        names = [f"class_{i}" for i in range(num_classes)]
        palette = default_palette(num_classes)
    check_classes(cfg, num_classes)
    # names and colours given in the config win (e.g. for visualisations of a built-in format)
    if cfg.class_names is not None:
        names = [str(n) for n in cfg.class_names]
    if cfg.palette is not None:
        palette = [list(c) for c in cfg.palette[:num_classes]]
    return DatasetInfo(cfg.format, num_classes, names, palette, cfg.ignore_index)


class SegDataset(Dataset):
    """Pairs of (image file, mask file). ``dataset[i]`` -> ``transform(image, mask)``.

    Without a transform: image uint8 ``tv_tensors.Image`` [3, H, W] and mask int64
    ``tv_tensors.Mask`` [H, W] holding class ids and ``info.ignore_index``.
    """

    def __init__(
        self,
        samples: list[tuple[Path, Path]],
        info: DatasetInfo,
        decoder: MaskDecoder,
        transform: Callable | None = None,
        skip_bad_samples: bool = False,
    ) -> None:
        self.samples = samples
        self.info = info
        self.decoder = decoder
        self.transform = transform
        self.skip_bad_samples = skip_bad_samples
        # Skip counts in shared memory, one slot per DataLoader worker (the last for the main
        # process), so that no two processes add to one slot and `skipped` is the run's total.
        # A multiprocessing.Value would need a lock that cannot be pickled (spawn, deepcopy).
        self._skips = torch.zeros(MAX_WORKER_SLOTS + 1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def skipped(self) -> int:
        """How many bad samples were skipped so far (in this process and its DataLoader workers)."""
        return int(self._skips.sum())

    def read_image(self, index: int) -> np.ndarray:
        """The decoded image, uint8 [H, W, 3]."""
        return read_image(self.samples[index][0])

    def read_mask(self, index: int) -> np.ndarray:
        """The decoded mask (lookup table applied, no transform), int64 [H, W]."""
        return self.decoder.read(self.samples[index][1])

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image uint8 [H, W, 3] and mask int64 [H, W] of one sample, checked to be the same size."""
        image, mask = self.read_image(index), self.read_mask(index)
        check_same_size(image, mask, *self.samples[index])
        return image, mask

    def _read_or_skip(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``read_pair(index)``; with skip_bad_samples, a bad sample is counted and logged, and the next good one read.

        The count and the log line are for sample ``index`` itself: the bad
        samples tried in its place are counted when the sampler draws them, so
        an epoch counts each bad sample once.
        """
        for attempt in range(MAX_CONSECUTIVE_BAD):
            try:
                return self.read_pair((index + attempt) % len(self))
            except SemsegError as exc:
                if not self.skip_bad_samples:
                    raise
                if attempt == 0:
                    worker = get_worker_info()
                    self._skips[worker.id % MAX_WORKER_SLOTS if worker is not None else MAX_WORKER_SLOTS] += 1
                    # a log record, one line on the console (a Python warning would print its source line too)
                    log.warning("skipping bad sample: %s", exc)
                last_error = exc
        raise SemsegError(f"{MAX_CONSECUTIVE_BAD} bad samples in a row from index {index} on; the last: {last_error}")

    def __getitem__(self, index: int) -> Any:
        image, mask = self._read_or_skip(index)
        # HWC -> CHW as a view: resize kernels are fastest on this channels-last layout
        image_chw = torch.from_numpy(np.require(image, requirements="W")).permute(2, 0, 1)
        sample = tv_tensors.Image(image_chw), tv_tensors.Mask(torch.from_numpy(mask))
        return self.transform(*sample) if self.transform is not None else sample


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise SemsegError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} "
            f"is {image.shape[1]}x{image.shape[0]} (width x height)"
        )


def raise_on_problems(listing: Listing, cfg: DataConfig, split: str) -> None:
    if not listing.problems:
        return
    shown = "\n".join(f"  {path}: {message}" for path, message in listing.problems[:10])
    more = f"\n  ... and {len(listing.problems) - 10} more" if len(listing.problems) > 10 else ""
    raise SemsegError(
        f"{cfg.root}: {len(listing.problems)} problem(s) in the {split} split:\n{shown}{more}\n"
        f"(`semseg data check --format {cfg.format} --root {cfg.root} --split {split}` lists them all)"
    )


def build_dataset(
    cfg: DataConfig, split: str, transform: Callable | None = None, skip_bad_samples: bool = False
) -> SegDataset:
    """The dataset of ``split`` described by ``cfg``: a split name such as ``cfg.train_split``, or a part held
    out of the training split (``groups:...``, ``fold:K/N``; see :mod:`semseg.data.splits`).

    ``skip_bad_samples`` is passed explicitly, never read from ``cfg``: only the
    training set may skip (``cfg.skip_bad_samples``); an evaluation that skipped a
    frame would count another one twice and report a different score.
    """
    info = dataset_info(cfg)
    decoder = mask_decoder(cfg, info.num_classes)
    listing = split_listing(cfg, split)
    raise_on_problems(listing, cfg, split)
    return SegDataset(listing.pairs, info, decoder, transform, skip_bad_samples)


# ---------------------------------------------------------------- class statistics
def mask_counts(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Pixels per class of one decoded mask, int64 [num_classes + 1]; the last entry counts ignored pixels."""
    counts = np.bincount(mask.ravel(), minlength=max(num_classes, ignore_index + 1))
    return np.append(counts[:num_classes], counts[ignore_index])


def accumulate_counts(per_image: list[np.ndarray], num_classes: int) -> dict[str, Any]:
    """Totals over images from :func:`mask_counts` rows (see :func:`class_statistics`)."""
    rows = np.stack(per_image) if per_image else np.zeros((0, num_classes + 1), dtype=np.int64)
    class_rows, ignored = rows[:, :num_classes], rows[:, num_classes]
    present = class_rows > 0
    # SegNet's median frequency balancing divides by the pixels of the images in which the class appears
    image_pixels = rows.sum(axis=1, keepdims=True)
    return {
        "num_images": len(per_image),
        "class_pixels": class_rows.sum(axis=0).tolist(),
        "present_pixels": (present * image_pixels).sum(axis=0).tolist(),
        "image_counts": present.sum(axis=0).tolist(),
        "ignored_pixels": int(ignored.sum()),
    }


class _MaskCounts(Dataset):
    def __init__(self, dataset: SegDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> np.ndarray | str:
        """The sample's counts; with skip_bad_samples, the error of a sample training skips (image or mask)."""
        dataset, info, index = self.dataset, self.dataset.info, self.indices[position]
        if not dataset.skip_bad_samples:
            return mask_counts(dataset.read_mask(index), info.num_classes, info.ignore_index)
        try:  # the same check as training's skip: both files decoded, sizes compared
            _, mask = dataset.read_pair(index)
        except SemsegError as exc:
            return str(exc)
        return mask_counts(mask, info.num_classes, info.ignore_index)


def parallel_map(dataset: Dataset, workers: int, desc: str | None = None) -> list[Any]:
    """``[dataset[i] for i in range(len(dataset))]`` computed in DataLoader worker processes,
    shown as progress named ``desc`` when given."""
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_identity)
    if desc is None:
        return list(loader)
    results = []
    with Progress(len(dataset), desc, unit="img", logger=log) as bar:
        for item in loader:
            results.append(item)
            bar.update(1)
    return results


def _identity(x: Any) -> Any:
    return x


def class_statistics(dataset: SegDataset, workers: int = 0, progress: bool = True,
                     part: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Class frequencies of the decoded masks (no transform), read in ``workers`` processes (shown as progress
    unless ``progress`` is False). ``part=(k, n)`` counts the samples k, k + n, k + 2n, ... only: DDP's ranks
    share the counting, and :func:`add_statistics` of the n parts gives the whole dataset's.

    Returns ``class_pixels`` (pixels per class), ``present_pixels`` (per class, all
    pixels of the images that contain it: SegNet median-frequency weights),
    ``image_counts`` (images containing each class), ``ignored_pixels``, ``num_images``.
    With ``dataset.skip_bad_samples`` the samples training skips are left out
    (each logged) and counted in ``skipped``; without it a bad sample raises.
    """
    rows = parallel_map(_MaskCounts(dataset, range(part[0], len(dataset), part[1])), workers,
                        "class statistics" if progress else None)
    errors = [row for row in rows if isinstance(row, str)]
    for error in errors:
        log.warning("class statistics: skipped %s", error)
    counts = accumulate_counts([row for row in rows if not isinstance(row, str)], dataset.info.num_classes)
    return {**counts, "skipped": len(errors)}


def add_statistics(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The :func:`class_statistics` of a dataset from those of its disjoint parts: every entry is a count."""
    total = dict(parts[0])
    for part in parts[1:]:
        for key, value in part.items():
            total[key] = [a + b for a, b in zip(total[key], value)] if isinstance(value, list) else total[key] + value
    return total

"""Data pipeline throughput: semseg's CamVid train preset beside a torchvision-references-style pipeline.

Both pipelines decode CamVid train frames and masks and apply the same augmentation
(random scale 0.5-2.0, crop 360x480 padded with ignore, hflip, photometric
distortion, normalization) in a DataLoader with 2 workers and batches of 8.
The baseline is written the way torchvision's references/segmentation does it:
PIL images, joint transform classes with ``__call__(image, target)``, resizing
and cropping on PIL, the void label mapped with a tensor comparison.
Repeats are interleaved so that both pipelines see the same machine load.

    .venv/bin/python benchmarks/bench_data.py [--root /work/shared/camvid] [--batches 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from semseg.config import DataConfig
from semseg.data import build_dataset, train_transform

CROP = (360, 480)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- the baseline (references/segmentation style)
class RandomScale:
    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, image, target):
        scale = random.uniform(self.low, self.high)
        size = [round(image.height * scale), round(image.width * scale)]
        image = TF.resize(image, size, antialias=True)
        target = TF.resize(target, size, interpolation=T.InterpolationMode.NEAREST)
        return image, target


class RandomCrop:
    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image, target):
        pad_h, pad_w = max(self.size[0] - image.height, 0), max(self.size[1] - image.width, 0)
        if pad_h or pad_w:
            image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
            target = TF.pad(target, [0, 0, pad_w, pad_h], fill=255)
        top, left, h, w = T.RandomCrop.get_params(image, self.size)
        return TF.crop(image, top, left, h, w), TF.crop(target, top, left, h, w)


class RandomHorizontalFlip:
    def __call__(self, image, target):
        if random.random() < 0.5:
            return TF.hflip(image), TF.hflip(target)
        return image, target


class Photometric:
    def __init__(self) -> None:
        jitters = [T.ColorJitter(brightness=0.125), T.ColorJitter(contrast=0.5), T.ColorJitter(saturation=0.5), T.ColorJitter(hue=0.1)]
        self.ops = [T.RandomApply([j], p=0.5) for j in jitters]

    def __call__(self, image, target):
        for op in self.ops:
            image = op(image)
        return image, target


class ToNormalizedTensors:
    def __call__(self, image, target):
        image = TF.normalize(TF.convert_image_dtype(TF.pil_to_tensor(image), torch.float32), MEAN, STD)
        target = torch.as_tensor(np.array(target), dtype=torch.int64)
        target[target == 11] = 255  # CamVid void
        return image, target


class Compose:
    def __init__(self, transforms) -> None:
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class ReferencesCamVid(Dataset):
    def __init__(self, root: Path) -> None:
        self.images = sorted((root / "train").glob("*.png"))
        self.transform = Compose([RandomScale(0.5, 2.0), RandomCrop(CROP), RandomHorizontalFlip(), Photometric(), ToNormalizedTensors()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.open(self.images[i]).convert("RGB")
        target = Image.open(self.images[i].parent.parent / "trainannot" / self.images[i].name)
        return self.transform(image, target)


# ---------------------------------------------------------------- timing
def images_per_second(loader: DataLoader, batches: int) -> float:
    start, seen = time.perf_counter(), 0
    for i, (images, masks) in enumerate(loader):
        assert images.shape[1:] == (3, *CROP) and masks.shape[1:] == CROP
        seen += images.shape[0]
        if i + 1 == batches:
            break
    return seen / (time.perf_counter() - start)


def per_image_ms(dataset, n: int = 30) -> float:
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return 1000 * (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/work/shared/camvid")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    cfg = DataConfig(format="camvid", root=args.root, crop_size=list(CROP), scale_range=[0.5, 2.0])
    pipelines = {
        "semseg": build_dataset(cfg, "train", train_transform(cfg)),
        "references": ReferencesCamVid(Path(args.root)),
    }
    loaders = {
        name: DataLoader(ds, batch_size=8, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=True)
        for name, ds in pipelines.items()
    }
    for loader in loaders.values():  # start the workers outside the timed runs
        images_per_second(loader, 1)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    single: dict[str, list[float]] = {name: [] for name in loaders}
    torch.set_num_threads(1)  # the in-process timing below, like one worker
    for _ in range(args.repeats):
        for name in loaders:
            rates[name].append(images_per_second(loaders[name], args.batches))
            single[name].append(per_image_ms(pipelines[name]))

    print(f"CamVid train preset, crop {CROP[0]}x{CROP[1]}, scale 0.5-2.0, hflip, photometric; "
          f"{args.repeats} interleaved repeats of {args.batches} batches of 8")
    print(f"{'pipeline':<12} {'images/s (' + str(args.workers) + ' workers)':>24} {'ms/image (1 process)':>22}")
    for name in loaders:
        print(f"{name:<12} {statistics.median(rates[name]):>24.1f} {statistics.median(single[name]):>22.1f}")
    ratio = statistics.median(rates["semseg"]) / statistics.median(rates["references"])
    print(f"semseg / references throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()

"""Leakage-aware splits: samples grouped by a pattern, validation held out by whole groups.

Frames of one video sequence, images of one site or one patient are near-copies
of each other. A validation set that shares groups with the training set rewards
memorising and overstates accuracy on unseen scenes: CamVid's val split is 101
frames of sequence 0016E5 interleaved with 204 training frames of the same
sequence. Recipes are chosen on a split that holds out whole groups.

A sample's group comes from ``data.group_by``: a regular expression searched in
the image's path relative to ``data.root`` (written with ``/``); its capture
group (or the whole match) names the group. Built-in formats bring their own
(``semseg.data.formats``: CamVid's sequence, Cityscapes' city).

``data.val_split`` may hold out part of the training split instead of naming a
split: ``groups:A,B`` validates on groups A and B, ``fold:K/N`` on the K-th of N
folds. The held-out samples leave the training set; the two never share a group.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from semseg.config import DataConfig, Holdout, check_group_pattern, parse_holdout
from semseg.data.formats import FORMATS
from semseg.data.layouts import Listing, find_samples
from semseg.errors import SemsegError

log = logging.getLogger(__name__)

Pair = tuple[Path, Path]


@dataclass(frozen=True)
class Grouping:
    """How samples are grouped: ``pattern`` searched in each image's path relative to ``root``.

    ``strict`` (a pattern the user set): an image it does not match is an error.
    Otherwise (a format's own pattern) such an image is a group of its own.
    """

    pattern: re.Pattern[str]
    root: Path
    strict: bool

    def group(self, image: Path) -> str:
        image = Path(image)
        try:
            relative = image.relative_to(self.root).as_posix()
        except ValueError:  # listed outside the root (a folder-format list file may do that)
            relative = image.as_posix()
        found = self.pattern.search(relative)
        if found is not None:
            return found.group(1) if self.pattern.groups else found.group(0)
        if self.strict:
            raise SemsegError(
                f"{image}: data.group_by {self.pattern.pattern!r} does not match {relative!r}; every image needs a "
                "group (set data.group_by to a pattern that matches each path relative to data.root)"
            )
        return relative

    def sizes(self, pairs: list[Pair]) -> dict[str, int]:
        """Samples per group, groups in order of first appearance."""
        sizes: dict[str, int] = {}
        for image, _ in pairs:
            group = self.group(image)
            sizes[group] = sizes.get(group, 0) + 1
        return sizes


def grouping(cfg: DataConfig) -> Grouping | None:
    """``data.group_by`` (strict), else the format's own pattern; None when samples have no groups."""
    own = getattr(FORMATS.get(cfg.format), "group_by", None)
    pattern = cfg.group_by if cfg.group_by is not None else own
    if not pattern:
        return None
    return Grouping(check_group_pattern(pattern), Path(cfg.root).expanduser(), strict=cfg.group_by is not None)


def assign_folds(sizes: dict[str, int], folds: int) -> dict[str, int]:
    """Group -> fold (1..``folds``): largest groups first, each into the fold holding fewest samples so far.

    Deterministic (ties: the group name, then the lowest fold), so ``fold:K/N`` names
    the same samples on every machine. Fewer groups than folds is an error.
    """
    if len(sizes) < folds:
        raise SemsegError(
            f"{folds} folds need at least {folds} groups; the training split has {len(sizes)}: "
            f"{', '.join(sizes) or 'none'}"
        )
    filled = [0] * folds
    assignment: dict[str, int] = {}
    for group in sorted(sizes, key=lambda g: (-sizes[g], g)):
        fold = min(range(folds), key=lambda f: (filled[f], f))
        assignment[group] = fold + 1
        filled[fold] += sizes[group]
    return assignment


def held_out_groups(holdout: Holdout, sizes: dict[str, int]) -> set[str]:
    """The groups ``holdout`` names among ``sizes``; SemsegError for a group the split does not have."""
    if holdout.folds:
        return {g for g, fold in assign_folds(sizes, holdout.folds).items() if fold == holdout.fold}
    unknown = [g for g in holdout.groups if g not in sizes]
    if unknown:
        raise SemsegError(
            f"config key 'data.val_split': group(s) {', '.join(unknown)} not in the training split; "
            f"its groups: {', '.join(f'{g} ({n})' for g, n in sizes.items())}"
        )
    return set(holdout.groups)


def partition(cfg: DataConfig, pairs: list[Pair], holdout: Holdout) -> tuple[list[Pair], list[Pair]]:
    """``pairs`` (of the training split) -> (kept for training, held out for validation), by whole groups."""
    groups_of = grouping(cfg)
    if groups_of is None:
        raise SemsegError(
            f"config key 'data.val_split' ({cfg.val_split!r}) holds out groups, but the {cfg.format} format has "
            "no groups: set data.group_by to a pattern that names each image's group"
        )
    groups = [groups_of.group(image) for image, _ in pairs]
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    held = held_out_groups(holdout, sizes)
    kept = [pair for pair, group in zip(pairs, groups) if group not in held]
    if not kept:
        raise SemsegError(f"config key 'data.val_split' ({cfg.val_split!r}) holds out every training image")
    return kept, [pair for pair, group in zip(pairs, groups) if group in held]


def split_listing(cfg: DataConfig, split: str) -> Listing:
    """The pairs of ``split``, held-out groups applied.

    ``split`` may be a held-out part (``groups:...``, ``fold:K/N``): the matching
    samples of ``cfg.train_split``. The training split itself loses the samples
    that ``cfg.val_split`` holds out.
    """
    holdout = parse_holdout(split)
    if holdout is not None:
        listing = find_samples(cfg.format, cfg.root, cfg.train_split)
        return Listing(partition(cfg, listing.pairs, holdout)[1], listing.problems)
    listing = find_samples(cfg.format, cfg.root, split)
    val_holdout = parse_holdout(cfg.val_split)
    if val_holdout is not None and split == cfg.train_split:
        return Listing(partition(cfg, listing.pairs, val_holdout)[0], listing.problems)
    return listing


def shared_groups(cfg: DataConfig) -> dict[str, tuple[int, int]]:
    """Groups that ``cfg.train_split`` and a named ``cfg.val_split`` share: group -> (train, val) samples.

    Empty when validation is a held-out part, when there is no validation split or
    no group pattern, or when either split cannot be listed (the run reports that itself).
    """
    groups_of = grouping(cfg)
    if groups_of is None or not cfg.val_split or parse_holdout(cfg.val_split) is not None:
        return {}
    try:
        train = groups_of.sizes(find_samples(cfg.format, cfg.root, cfg.train_split).pairs)
        val = groups_of.sizes(find_samples(cfg.format, cfg.root, cfg.val_split).pairs)
    except SemsegError as exc:
        log.debug("no leakage check: %s", exc)
        return {}
    return {group: (train[group], count) for group, count in val.items() if group in train}


def leakage_warning(cfg: DataConfig) -> str | None:
    """A warning naming the groups the training and validation splits share, or None."""
    shared = shared_groups(cfg)
    if not shared:
        return None
    listed = ", ".join(f"{g} ({n_train} train / {n_val} val images)" for g, (n_train, n_val) in shared.items())
    return (
        f"the {cfg.train_split} and {cfg.val_split} splits share group(s) {listed}: validation scores will overstate "
        "accuracy on unseen scenes. Hold out whole groups instead, e.g. data.val_split=fold:1/3 or "
        "data.val_split=groups:NAME (with data.train_split joining every labelled split, e.g. train+val)"
    )

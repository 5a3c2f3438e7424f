"""Typed run configuration: dataclasses, loaded from YAML, overridden by ``key=value``.

A YAML file holds three sections (``model``, ``data``, ``train``) plus ``name``;
keys may also be written flat with dots (``train.epochs: 5``). Nothing inherits
from anything: a config file is the whole story of a run. Every setting lives in
one place; :func:`validate` fails before training starts when settings disagree.
The resolved config is saved into the run folder and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from semseg.errors import SemsegError
from semseg.meta import IMAGENET_MEAN, IMAGENET_STD, check_ignore_index


@dataclass
class ModelConfig:
    name: str = "lraspp_mobilenet_v3_large"
    # False, True (the library's published weights, needs the network) or a weights file path
    pretrained: Union[bool, str] = False
    # bn | gn (GroupNorm, for small batches) | syncbn (under DDP: statistics over every process, CUDA or CPU)
    # | ibn (IBN-Net: half the channels instance-normalized at strides 4-8, from scratch only;
    # model.kwargs.ibn_max_stride moves the 8; docs/models.md)
    norm: Literal["bn", "gn", "syncbn", "ibn"] = "bn"
    # momentum of every BatchNorm's running statistics (null: the architecture's own). torchvision's
    # MobileNetV3 uses 0.01, whose statistics lag far behind the weights in a short from-scratch run
    bn_momentum: Optional_float = None  # type: ignore[valid-type]
    # extra keyword arguments of create_model (e.g. encoder_depth)
    kwargs: dict = field(default_factory=dict)


# The dataset formats semseg reads: data/formats.py holds their class tables, data/layouts.py their folders.
DataFormat = Literal["camvid", "voc", "cityscapes", "ade20k", "folder"]


@dataclass
class DataConfig:
    format: DataFormat = "folder"
    root: str = ""
    train_split: str = "train"
    # where validation images come from: a split name ("val"; "a+b" joins splits), or a part of the
    # training split held out of training by group (data.group_by): "groups:0006R0,0001TP" (those
    # groups) or "fold:K/N" (the K-th of N group-disjoint folds); "" = no validation
    val_split: str = "val"
    # regular expression searched in each image's path relative to data.root (with "/"); its first
    # capture group (or the whole match) names the sample's group: a video sequence, a site, a patient.
    # null: the format's own (camvid: the sequence before the first "_", cityscapes: the city), else none
    group_by: Optional_str = None  # type: ignore[valid-type]
    # folder format only: the others fix classes, names and palette themselves
    num_classes: Optional_int = None  # type: ignore[valid-type]
    class_names: Optional_list = None  # type: ignore[valid-type]
    # RGB per class: colours of colour masks (mask_mode=color) and of visualisations
    palette: Optional_list = None  # type: ignore[valid-type]
    # index: single-channel or palette PNG masks; color: RGB masks mapped through `palette`
    mask_mode: Literal["index", "color"] = "index"
    # what an RGB colour that is not in the palette becomes: an error, or ignore
    unknown_color: Literal["error", "ignore"] = "error"
    # raw mask value -> class id (or ignore_index), applied once as a lookup table
    label_map: Optional_dict = None  # type: ignore[valid-type]
    # ADE20K style: 0 is "other" (ignored), 1..C become 0..C-1
    reduce_zero_label: bool = False
    # the label of pixels that count in no loss and no metric, in every tensor semseg makes
    ignore_index: int = 255
    # training crops (height, width) and random rescaling of the image before cropping
    crop_size: list = field(default_factory=lambda: [512, 512])
    scale_range: list = field(default_factory=lambda: [0.5, 2.0])
    # re-draw a crop where one class covers more than this fraction (1.0 = off)
    cat_max_ratio: float = 1.0
    hflip: bool = True
    photometric: bool = True
    # the photometric distortion's brightness range: a factor drawn from [1 - b, 1 + b] (with probability 1/2);
    # 0.125 is about mmsegmentation's +-32/255; a stronger range helps where the frames to predict are darker
    # or brighter than the training frames (BENCHMARKS.md, "Stronger brightness jitter on both folds")
    brightness: float = 0.125
    # the other three, mmsegmentation's defaults: contrast and saturation factors drawn from [1 - c, 1 + c],
    # a hue shift drawn from [-h, h] of the colour circle; each with probability 1/2, 0 turns one off
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.1
    # the probability of a Gaussian blur of the training image (sigma drawn from BLUR_SIGMA, the mask untouched),
    # as in the strong augmentation of domain-generalization work (DAFormer); 0 = off
    blur: float = 0.0
    # ClassMix (semseg.data.mixing): the probability that a training sample gets the pixels of half the
    # classes of another sample of its batch pasted onto it, image and label alike; 0 = off
    class_mix: float = 0.0
    # optional (height, width) the images are resized to before augmentation and at evaluation
    base_size: Optional_list = None  # type: ignore[valid-type]
    mean: list = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list = field(default_factory=lambda: list(IMAGENET_STD))
    workers: int = 2
    # skip (with a warning, counted) training samples that fail to decode, instead of stopping;
    # evaluation never skips (docs/safety.md)
    skip_bad_samples: bool = False


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 8
    seed: int = 0
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # learning-rate multiplier of the decoder/head relative to the encoder
    head_lr_mult: float = 1.0
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    poly_power: float = 0.9
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.1
    accumulate: int = 1
    clip_grad: Optional_float = None  # type: ignore[valid-type]
    ema: bool = False
    ema_decay: float = 0.999
    freeze_encoder_epochs: int = 0
    # a create_loss spec: "ce", "ce+dice", "0.5*focal+lovasz", ...; auto: the model's own loss
    # (the set-prediction loss of mask-classification models such as Mask2Former, else ce)
    loss: str = "auto"
    loss_kwargs: dict = field(default_factory=dict)
    # None, "median_freq", "sqrt_median_freq", "enet" (semseg.losses.weights) or a list of per-class weights
    class_weights: Union[None, str, list] = None
    # weight of the auxiliary head's loss, for models that have one
    aux_weight: float = 0.4
    # auto: bf16 autocast on CUDA; on a CPU with native bf16 (AVX512-BF16, AMX) bf16 or fp32, whichever
    # trains this model faster (measured at the run's start, kept on resume); else fp32. fp16 needs CUDA
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    # torch.compile the training forward pass (inductor; on the CPU it needs a C++ compiler). Off by default:
    # BENCHMARKS.md "Training step: torch.compile" has what it gives per machine
    compile: bool = False
    device: str = "auto"
    val_every: int = 1
    # write last.pt every this many epochs, and always at a validation and at the run's end. An epoch of a
    # few steps (a small dataset) spends as long writing the checkpoint (model, optimizer, EMA) as training:
    # a longer period gives those seconds to training; a resume then redoes the epochs since the last write
    checkpoint_every: int = 1
    # stop after this many validations without a better mIoU (0 = never)
    early_stop_patience: int = 0
    # wall-clock budget of the whole run: checked after every optimizer step, the lr schedule stretched
    # over it, time kept for the closing validation and checkpoints (engine/trainer.py, RunClock)
    time_limit_minutes: Optional_float = None  # type: ignore[valid-type]
    # reproducible kernels (slower); resume reproduces a run exactly either way on CPU
    deterministic: bool = False
    # where the output is not a terminal (a log file): a progress line every this many batches
    log_every: int = 10
    # at every validation, write the run folder's figures, gallery, summary.json and report.html (reports/)
    reports: bool = True
    # the validation gallery: this many frames spread over the val set and this many worst by IoU (0: none)
    gallery_frames: int = 4


@dataclass
class RunConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ------------------------------------------------------------------ type helpers
Optional_int = typing.Optional[int]
Optional_str = typing.Optional[str]
Optional_float = typing.Optional[float]
Optional_list = typing.Optional[list]
Optional_dict = typing.Optional[dict]

SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, globalns={**globals(), **vars(typing)})


def valid_keys() -> list[str]:
    keys = ["name"]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``kind``; convert the harmless cases (int -> float)."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(kind):
            try:
                return _coerce(value, option, key)
            except SemsegError as exc:
                errors.append(str(exc))
        names = ", ".join(_type_name(o) for o in get_args(kind))
        raise SemsegError(f"config key '{key}': {value!r} is not one of: {names}")
    if origin is Literal:
        choices = get_args(kind)
        if isinstance(value, bool) and "on" in choices and "off" in choices:
            # YAML 1.1 reads a bare on/off (train.channels_last=off) as a boolean
            value = "on" if value else "off"
        if value not in choices:
            raise SemsegError(f"config key '{key}': {value!r} is not one of {list(get_args(kind))}")
        return value
    if kind is type(None):
        if value is None:
            return None
        raise SemsegError(f"config key '{key}': expected null, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SemsegError(f"config key '{key}': expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SemsegError(f"config key '{key}': expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise SemsegError(f"config key '{key}': expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise SemsegError(f"config key '{key}': expected a string, got {value!r}")
    if kind in (list, dict):
        if isinstance(value, kind):
            return value
        raise SemsegError(f"config key '{key}': expected a {kind.__name__}, got {value!r}")
    raise SemsegError(f"config key '{key}': unsupported type {kind}")


def check_data_format(name: Any) -> DataFormat:
    """``name`` if it is one of :data:`DataFormat`, else SemsegError naming ``data.format`` and the choices."""
    return _coerce(name, DataFormat, "data.format")


@dataclass(frozen=True)
class Holdout:
    """The part of the training split that ``data.val_split`` holds out for validation, by group:
    the named ``groups``, or fold ``fold`` of ``folds`` group-disjoint folds."""

    groups: tuple[str, ...] = ()
    fold: int = 0
    folds: int = 0


def parse_holdout(val_split: str) -> Holdout | None:
    """``"groups:A,B"`` or ``"fold:K/N"`` -> :class:`Holdout`; a plain split name -> None."""
    kind, sep, spec = val_split.partition(":")
    if not sep:
        return None
    where = f"config key 'data.val_split' ({val_split!r})"
    if kind == "groups":
        groups = tuple(g.strip() for g in spec.split(",") if g.strip())
        if not groups:
            raise SemsegError(f"{where}: name at least one group after 'groups:', e.g. groups:0006R0")
        return Holdout(groups=groups)
    if kind == "fold":
        fold, _, folds = spec.partition("/")
        if not (fold.strip().isdigit() and folds.strip().isdigit()) or not 1 <= int(fold) <= int(folds) or int(folds) < 2:
            raise SemsegError(f"{where}: expected fold:K/N with 1 <= K <= N and N >= 2, e.g. fold:1/3")
        return Holdout(fold=int(fold), folds=int(folds))
    raise SemsegError(f"{where}: expected a split name, groups:NAME[,NAME...] or fold:K/N")


def _type_name(kind: Any) -> str:
    if kind is type(None):
        return "null"
    if get_origin(kind) is Literal:
        return "/".join(map(str, get_args(kind)))
    return getattr(kind, "__name__", str(kind))


def _flatten(raw: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 5}, "data.root": "x"} -> {"train.epochs": 5, "data.root": "x"}."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if not prefix and key in SECTIONS and isinstance(value, dict):
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[full] = value
    return flat


def _unknown_key_message(key: str) -> str:
    section = key.split(".")[0]
    if section in SECTIONS:
        keys = [k for k in valid_keys() if k.startswith(section + ".")]
    else:
        keys = valid_keys()
    return f"unknown config key '{key}'. Valid keys: {', '.join(keys)}"


def apply(config: RunConfig, values: dict[str, Any], source: str = "") -> RunConfig:
    """Set dotted keys on ``config`` with type checks; returns ``config``."""
    where = f" (in {source})" if source else ""
    for key, value in _flatten(values).items():
        if key == "name":
            config.name = _coerce(value, str, key)
            continue
        section, _, attr = key.partition(".")
        if section not in SECTIONS or not attr:
            raise SemsegError(_unknown_key_message(key) + where)
        target = getattr(config, section)
        hints = _field_types(type(target))
        if attr not in hints:
            raise SemsegError(_unknown_key_message(key) + where)
        try:
            setattr(target, attr, _coerce(value, hints[attr], key))
        except SemsegError as exc:
            raise SemsegError(f"{exc}{where}") from None
    return config


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=5", "data.crop_size=[360,480]"]`` -> dict; values are read as YAML."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SemsegError(f"override {item!r} is not key=value")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            values[key.strip()] = text
    return values


# the configs installed with the package (semseg/configs: in a clone, a link to the top-level configs/ folder)
BUNDLED_CONFIGS = Path(__file__).resolve().parent / "configs"


def bundled_configs() -> dict[str, str]:
    """The bundled configs by name (``camvid`` for ``configs/camvid.yaml``), each with the first line of its
    opening comment (what it is)."""
    found = {}
    for path in sorted(BUNDLED_CONFIGS.glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.strip()), "")
        about = first.lstrip("#").strip() if first.startswith("#") else ""
        found[path.stem] = about.split(": semseg train")[0]  # the usage line some carry is the same for all
    return found


def config_path(name: str | os.PathLike) -> Path:
    """A config file's path: ``name`` itself when it is a file, else the bundled config of that name
    (``camvid`` or ``camvid.yaml``). A name that is neither lists the bundled ones."""
    path = Path(name)
    if path.is_file():
        return path
    if path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml"):
        bundled = BUNDLED_CONFIGS / f"{path.stem}.yaml"
        if bundled.is_file():
            return bundled
    known = ", ".join(bundled_configs()) or "none"
    raise SemsegError(f"{name}: config file not found (bundled configs, usable by name: {known}; `semseg configs` lists them)")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (a file, or a bundled config's name: :func:`config_path`)."""
    path = config_path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SemsegError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise SemsegError(f"{path}: a config file must be a mapping of keys to values")
    return raw


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then ``base`` (e.g. a checkpoint's config), then the YAML file, then overrides."""
    config = RunConfig()
    if base:
        apply(config, base, "checkpoint config")
    if path is not None:
        apply(config, load_yaml(path), str(path))
    if overrides:
        apply(config, parse_overrides(overrides), "command line")
    return config


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def validate(config: RunConfig, num_classes: int | None = None) -> None:
    """Fail loudly, before anything runs, when settings are invalid or disagree.

    ``num_classes`` is the dataset's class count (known once the data format is
    resolved); it must agree with ``data.num_classes`` and per-class settings.
    """
    d, t = config.data, config.train
    _check_finite(config)
    if len(d.crop_size) != 2 or not all(isinstance(v, int) and v > 0 for v in d.crop_size):
        raise SemsegError(f"config key 'data.crop_size': expected [height, width] positive integers, got {d.crop_size}")
    for key in ("brightness", "contrast", "saturation"):
        if not 0 <= getattr(d, key) < 1:
            raise SemsegError(f"config key 'data.{key}': expected a number in [0, 1) (the factor is drawn from "
                              f"[1 - v, 1 + v]), got {getattr(d, key)}")
    if not 0 <= d.hue <= 0.5:
        raise SemsegError(f"config key 'data.hue': expected a number in [0, 0.5] (a shift drawn from [-h, h] of "
                          f"the colour circle), got {d.hue}")
    if len(d.scale_range) != 2 or not 0 < d.scale_range[0] <= d.scale_range[1]:
        raise SemsegError(f"config key 'data.scale_range': expected [low, high] with 0 < low <= high, got {d.scale_range}")
    if d.base_size is not None and (len(d.base_size) != 2 or not all(isinstance(v, int) and v > 0 for v in d.base_size)):
        raise SemsegError(f"config key 'data.base_size': expected [height, width] positive integers, got {d.base_size}")
    if len(d.mean) != 3 or len(d.std) != 3 or any(s <= 0 for s in d.std):
        raise SemsegError("config keys 'data.mean' and 'data.std' need three values each, std > 0")
    if parse_holdout(d.val_split) is not None and "+" in d.val_split:
        raise SemsegError(f"config key 'data.val_split' ({d.val_split!r}): a held-out part cannot be joined with '+'")
    if d.group_by is not None:
        check_group_pattern(d.group_by)
    if not 0 <= d.class_mix <= 1:
        raise SemsegError(f"config key 'data.class_mix': expected a probability in [0, 1], got {d.class_mix}")
    if d.class_mix > 0 and t.batch_size < 2:
        raise SemsegError("config key 'data.class_mix' mixes the samples of a batch: it needs train.batch_size >= 2, "
                          f"got {t.batch_size}")
    if not 0 <= d.blur <= 1:
        raise SemsegError(f"config key 'data.blur': expected a probability in [0, 1], got {d.blur}")
    if not 0 < d.cat_max_ratio <= 1:
        raise SemsegError(f"config key 'data.cat_max_ratio': must lie in (0, 1], got {d.cat_max_ratio}")
    if not 0 <= d.ignore_index <= 65535:
        raise SemsegError(f"config key 'data.ignore_index': must lie in 0..65535, got {d.ignore_index}")
    if config.model.bn_momentum is not None and not 0 < config.model.bn_momentum <= 1:
        raise SemsegError(f"config key 'model.bn_momentum' must lie in (0, 1], got {config.model.bn_momentum}")
    if d.workers < 0:
        raise SemsegError("config key 'data.workers' must be >= 0")
    for key in ("epochs", "batch_size", "accumulate", "val_every", "checkpoint_every", "log_every"):
        if getattr(t, key) < 1:
            raise SemsegError(f"config key 'train.{key}' must be >= 1, got {getattr(t, key)}")
    if t.gallery_frames < 0:
        raise SemsegError(f"config key 'train.gallery_frames' must be >= 0, got {t.gallery_frames}")
    if t.lr <= 0:
        raise SemsegError(f"config key 'train.lr' must be > 0, got {t.lr}")
    if not 0 < t.ema_decay < 1:
        raise SemsegError(f"config key 'train.ema_decay' must lie in (0, 1), got {t.ema_decay}")
    if t.freeze_encoder_epochs < 0 or t.freeze_encoder_epochs >= t.epochs and t.freeze_encoder_epochs:
        raise SemsegError("config key 'train.freeze_encoder_epochs' must be >= 0 and below train.epochs")
    # the names of semseg.losses.CLASS_WEIGHT_METHODS (config sits below losses, so it cannot import them)
    if isinstance(t.class_weights, str) and t.class_weights not in ("median_freq", "sqrt_median_freq", "enet"):
        raise SemsegError(
            f"config key 'train.class_weights': expected median_freq, sqrt_median_freq, enet, a list or null, got {t.class_weights!r}"
        )
    if num_classes is None:
        return
    check_classes(d, num_classes)
    if isinstance(t.class_weights, list) and len(t.class_weights) != num_classes:
        raise SemsegError(f"config key 'train.class_weights' has {len(t.class_weights)} values for {num_classes} classes")


def check_group_pattern(pattern: str) -> "re.Pattern[str]":
    """``data.group_by`` compiled; SemsegError for an invalid expression or more than one capture group."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise SemsegError(f"config key 'data.group_by': {pattern!r} is not a regular expression ({exc})") from None
    if compiled.groups > 1:
        raise SemsegError(f"config key 'data.group_by': {pattern!r} has {compiled.groups} capture groups; use one (or none)")
    return compiled


def _check_finite(config: RunConfig) -> None:
    """NaN and infinity pass every ``<`` test; no setting of semseg takes one."""
    for section in SECTIONS:
        for key, value in vars(getattr(config, section)).items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise SemsegError(f"config key '{section}.{key}' must be a finite number, got {value}")


# what a resumed run may not change: the model, its classes and the state saved with it (the optimizer's
# parameter groups and moments, the EMA weights, the loss and its class weights, the steps per epoch)
RESUME_FIXED = ("model.", "data.format", "data.num_classes", "train.optimizer", "train.ema", "train.batch_size",
                "train.accumulate", "train.head_lr_mult", "train.loss", "train.class_weights")


def check_resume_changes(saved: RunConfig, new: RunConfig, run_dir: str | os.PathLike) -> None:
    """SemsegError naming every :data:`RESUME_FIXED` setting that ``new`` changes from the ``saved`` run's."""
    before, after = dataclasses.asdict(saved), dataclasses.asdict(new)
    changed = [
        f"{section}.{key} ({before[section][key]!r} -> {value!r})"
        for section in SECTIONS
        for key, value in after[section].items()
        if f"{section}.{key}".startswith(RESUME_FIXED) and value != before[section][key]
    ]
    if changed:
        raise SemsegError(
            f"--resume {run_dir}: a resumed run cannot change {', '.join(changed)}: it is part of the saved state. "
            f"Resume without it, or start a new run from these weights with model.pretrained={Path(run_dir) / 'last.pt'}"
        )


def check_classes(d: DataConfig, num_classes: int) -> None:
    """Fail when a ``data`` setting disagrees with the dataset's ``num_classes`` (known once the format is)."""
    if d.num_classes is not None and d.num_classes != num_classes:
        raise SemsegError(
            f"config key 'data.num_classes' is {d.num_classes} but the {d.format} dataset has {num_classes} classes"
        )
    check_ignore_index(d.ignore_index, num_classes, "config key 'data.ignore_index'")
    if d.class_names is not None and len(d.class_names) != num_classes:
        raise SemsegError(f"config key 'data.class_names' has {len(d.class_names)} names for {num_classes} classes")
    if d.palette is not None and len(d.palette) < num_classes:
        raise SemsegError(f"config key 'data.palette' has {len(d.palette)} colours for {num_classes} classes")

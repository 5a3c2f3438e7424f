"""Hugging Face transformers segmentation models under the semseg contract.

* **Mask2Former** (Cheng et al., CVPR 2022, "Masked-attention Mask Transformer
  for Universal Image Segmentation") on a Swin backbone (Liu et al., 2021):
  ``mask2former_swin_{tiny,small,base,large}``, built from a config with no
  download. ``pretrained=True`` loads the ADE20K semantic weights the authors
  published on the Hugging Face Hub (cache first, a clear error within seconds
  offline); a ``from_pretrained`` folder or a weights file loads like every
  zoo model's (``create_model(..., pretrained=PATH)``).
* **Any transformers semantic-segmentation checkpoint** as ``"hf:PATH"``:
  a local ``from_pretrained`` folder (config.json + weights) or, online, a Hub
  repository id. ``*ForSemanticSegmentation`` models (SegFormer, UperNet, DPT,
  BEiT, MobileViT, ...) give per-pixel logits; ``Mask2FormerForUniversalSegmentation``
  checkpoints give the semantic logits below. ``id2label`` becomes the class
  names, the image processor's mean and std the model's.

Mask2Former predicts Q (class, mask) pairs, not per-pixel logits. Its
semantic logits follow the authors' semantic inference: mask logits upsampled
to the (padded) input size, ``scores[c] = sum_q softmax(class_q)[c] *
sigmoid(mask_q)``, and ``out = log(scores)``, so that the softmax prediction
takes of them is the scores normalized over classes, argmax the authors'
label. That costs Q x H x W floats per image (100 queries at 1024x2048: 800 MB):
use ``--mode slide`` for large images. For training, ``forward_aux`` returns
the queries themselves and the engine trains them with their set-prediction
loss (:mod:`semseg.losses.mask_classification`).

Where the contract bends: DPT's head assumes a square grid of patches, so its
input is padded to a square (and the logits cropped back), which costs up to
twice the compute on wide images; ViT checkpoints run at sizes other than
their training size by interpolating their position embeddings, where the
model offers it; ``norm=gn`` finds no BatchNorm to replace in Swin.
Mask2Former exports to ONNX (opset 17, fixed or dynamic size) within the
usual parity check.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.meta import ModelMeta
from semseg.models.base import SegModel
from semseg.models.download import fetch, hf_source
from semseg.models.registry import register_model
from semseg.models.weights import check_pretrained_folder, hf_meta, load_state

# Swin sizes of the published Mask2Former models (embed_dim, depths, num_heads, window_size) and
# their ADE20K semantic weights on the Hub
SWIN_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7},
    "small": {"embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24], "window_size": 7},
    "base": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12},
    "large": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48], "window_size": 12},
}
MASK2FORMER_HUB = {
    "tiny": "facebook/mask2former-swin-tiny-ade-semantic",
    "small": "facebook/mask2former-swin-small-ade-semantic",
    "base": "facebook/mask2former-swin-base-IN21k-ade-semantic",
    "large": "facebook/mask2former-swin-large-ade-semantic",
}
# the transformers architectures whose outputs are class and mask queries
MASK_CLASSIFICATION = ("Mask2FormerForUniversalSegmentation",)
_SEMANTIC_EPS = 1e-8


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise SemsegError("this model needs Hugging Face transformers: pip install 'semseg[transformers]'") from None
    return transformers


# ------------------------------------------------------------------ the models
def semantic_logits(class_logits: Tensor, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Mask2Former's semantic inference: ``[N,Q,C+1]``, ``[N,Q,h,w]`` -> log class scores ``[N,C,*size]``."""
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    scores = torch.einsum("nqc,nqhw->nchw", class_logits.softmax(-1)[..., :-1], masks)
    return scores.clamp(min=_SEMANTIC_EPS).log()


class MaskClassificationModel(SegModel):
    """A transformers mask-classification model (Mask2Former) under the semseg contract.

    ``model(x)`` gives the log semantic scores (module docstring).
    ``forward_aux(x)`` adds the raw queries for the set-prediction loss:
    ``class_queries`` [N,Q,C+1], ``mask_queries`` [N,Q,Hp/4,Wp/4] over the input
    padded to ``size_divisor``, and ``layer_class_queries`` [L,N,Q,C+1],
    ``layer_mask_queries`` [L,N,Q,Hp/4,Wp/4] of the intermediate decoder layers.
    """

    set_prediction = True

    def __init__(self, net: nn.Module, num_classes: int, encoder_path: str, size_divisor: int = 32) -> None:
        super().__init__(net, num_classes, encoder_path=encoder_path, size_divisor=size_divisor, has_aux=True)

    def _logits(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        output = self.net(pixel_values=x, output_auxiliary_logits=with_aux)
        classes, masks = output.class_queries_logits, output.masks_queries_logits
        result = {"out": semantic_logits(classes, masks, tuple(x.shape[-2:]))}
        if with_aux:
            result["class_queries"], result["mask_queries"] = classes, masks
            layers = output.auxiliary_logits or []
            if layers:
                result["layer_class_queries"] = torch.stack([layer["class_queries_logits"] for layer in layers])
                result["layer_mask_queries"] = torch.stack([layer["masks_queries_logits"] for layer in layers])
        return result

    def _padded(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        # only the logits are cropped back: the queries stay over the padded input, which the loss pads its
        # targets to (with the ignore index)
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.size_divisor, (-width) % self.size_divisor
        outputs = self._logits(F.pad(x, (0, pad_w, 0, pad_h)), with_aux)
        outputs["out"] = outputs["out"][..., :height, :width]
        return outputs

    def set_loss_settings(self) -> dict[str, float]:
        """The set-prediction loss settings stored in the transformers config (the paper's by default)."""
        config = self.net.config
        return {
            "class_weight": config.class_weight,
            "mask_weight": config.mask_weight,
            "dice_weight": config.dice_weight,
            "no_object_weight": config.no_object_weight,
            "num_points": config.train_num_points,
            "oversample_ratio": config.oversample_ratio,
            "importance_sample_ratio": config.importance_sample_ratio,
        }


# architectures whose head assumes a square grid of patches (DPT's neck reshapes to sqrt(tokens)): semseg
# pads their input to a square, zeros bottom or right, and crops the logits back
SQUARE_INPUT = ("DPTForSemanticSegmentation",)


class _TrainingOnlyHead:
    """Mixed into a transformers auxiliary head: it runs only while ``runs`` is set (``forward_aux``).

    transformers' BEiT, DPT and Data2Vec forwards call their auxiliary head on every pass, prediction
    included, and use its output only in the loss they compute from ``labels``, which semseg never
    passes; otherwise the head returns None, so ``model(x)`` and exported graphs leave it out.
    """

    runs = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs) if self.runs else None  # type: ignore[misc]


@functools.cache
def _training_only_class(head_class: type) -> type:
    return type(f"TrainingOnly{head_class.__name__}", (_TrainingOnlyHead, head_class), {})


def _make_training_only(head: nn.Module) -> None:
    """Gate ``head`` in place (its class gains :class:`_TrainingOnlyHead`): weights and state-dict keys unchanged."""
    if not isinstance(head, _TrainingOnlyHead):
        head.__class__ = _training_only_class(type(head))


class PixelLogitsModel(SegModel):
    """A transformers ``*ForSemanticSegmentation`` model: its ``logits`` upsampled (bilinear) to the input size.

    Where the checkpoint has an auxiliary head (``net.auxiliary_head``: BEiT, DPT, Data2Vec, UperNet with
    ``use_auxiliary_head``), ``forward_aux`` adds its logits as ``"aux"``, upsampled the same way, so that
    semseg's loss trains it (``train.aux_weight``): transformers returns them only inside the loss it
    computes from ``labels``, and a head whose weights get no gradient would stop a DDP run. ``model(x)``
    does not run that head (:class:`_TrainingOnlyHead`).
    """

    training_only_prefixes = ("net.auxiliary_head.",)

    def _logits(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        height, width = x.shape[-2:]
        if type(self.net).__name__ in SQUARE_INPUT and height != width:
            side = max(height, width)
            x = F.pad(x, (0, side - width, 0, side - height))
        kwargs = {"interpolate_pos_encoding": True} if self._interpolates else {}
        aux_head = getattr(self.net, "auxiliary_head", None) if with_aux else None
        captured: list[Tensor] = []  # the auxiliary head's output, caught on its way (transformers drops it)
        hook = None
        if aux_head is not None:
            hook = aux_head.register_forward_hook(lambda module, inputs, output: captured.append(output))
            aux_head.runs = True
        try:
            outputs = {"out": self.net(pixel_values=x, **kwargs).logits}
        finally:
            if hook is not None:  # set exactly when aux_head is
                aux_head.runs = False
                hook.remove()
        if captured:
            outputs["aux"] = captured[0]
        return {key: _upsampled(value, x)[..., :height, :width] for key, value in outputs.items()}

    @property
    def _interpolates(self) -> bool:
        return "interpolate_pos_encoding" in inspect.signature(self.net.forward).parameters


def _upsampled(logits: Tensor, x: Tensor) -> Tensor:
    if logits.shape[-2:] == x.shape[-2:]:
        return logits
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class UperNetModel(PixelLogitsModel):
    """transformers' ``UperNetForSemanticSegmentation`` with an auxiliary head: that head also kept out of prediction.

    transformers runs the auxiliary head in every forward, prediction included;
    this model runs the backbone and the two heads itself (the steps of
    transformers' forward), so ``model(x)`` and exported graphs run the decode
    head alone, and ``forward_aux`` adds ``"aux"`` as for every auxiliary head.
    """

    def _logits(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        features = self.net.backbone.forward_with_filtered_kwargs(x).feature_maps
        heads = {"out": self.net.decode_head, "aux": self.net.auxiliary_head} if with_aux else {"out": self.net.decode_head}
        return {key: _upsampled(head(features), x) for key, head in heads.items()}


def _encoder_path(net: nn.Module) -> str:
    """Where the backbone sits in a transformers segmentation model (Mask2Former, SegFormer, UperNet, DPT, ...)."""
    # Mask2Former's Swin, UperNet's backbone, else the base model (SegFormer's MiT, DPT's or BEiT's ViT)
    for path in ("model.pixel_level_module.encoder", "backbone", getattr(net, "base_model_prefix", "")):
        try:
            if path:
                net.get_submodule(path)
                return "net." + path
        except AttributeError:
            continue
    raise SemsegError(f"transformers model {type(net).__name__}: semseg does not know where its backbone is")


def wrap(net: nn.Module) -> SegModel:
    """A transformers model as a :class:`SegModel`, with its ``id2label`` as class names."""
    arch = type(net).__name__
    num_classes = int(net.config.num_labels)
    if arch in MASK_CLASSIFICATION:
        model: SegModel = MaskClassificationModel(net, num_classes, _encoder_path(net))
    elif arch == "UperNetForSemanticSegmentation" and getattr(net, "auxiliary_head", None) is not None:
        model = UperNetModel(net, num_classes, _encoder_path(net), size_divisor=32, has_aux=True)
    elif arch.endswith("ForSemanticSegmentation"):
        has_aux = getattr(net, "auxiliary_head", None) is not None
        if has_aux:
            _make_training_only(net.auxiliary_head)
        model = PixelLogitsModel(net, num_classes, _encoder_path(net), size_divisor=32, has_aux=has_aux)
    else:
        raise SemsegError(f"transformers model {arch} is not a semantic segmentation model semseg can run; it takes "
                          f"*ForSemanticSegmentation models and {', '.join(MASK_CLASSIFICATION)}")
    model.pretrained_cfg = replace(model.pretrained_cfg, class_names=_class_names(net.config))
    return model


def _class_names(config: Any) -> list[str] | None:
    labels = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if sorted(labels) != list(range(int(config.num_labels))):
        return None
    names = [labels[i] for i in range(len(labels))]
    if all(name == f"LABEL_{i}" for i, name in enumerate(names)) or len(set(names)) != len(names):
        return None  # transformers' placeholder names, or names a report could not key by
    return names


def plain_config(config: Any) -> dict[str, Any]:
    """A transformers config as JSON values (string keys), to store in ``model_kwargs`` and rebuild from."""
    values = json.loads(config.to_json_string(use_diff=False))
    values.pop("transformers_version", None)
    return values


# ------------------------------------------------------------------ Mask2Former by name
def _mask2former_config(size: str, num_classes: int, kwargs: dict[str, Any]) -> Any:
    transformers = import_transformers()
    fields = set(inspect.signature(transformers.Mask2FormerConfig.__init__).parameters) | {
        f for f in getattr(transformers.Mask2FormerConfig, "__annotations__", {})}
    kwargs = dict(kwargs)
    backbone = {**SWIN_SIZES[size], "out_features": ["stage1", "stage2", "stage3", "stage4"], **kwargs.pop("backbone", {})}
    unknown = sorted(k for k in kwargs if k not in fields or k in ("backbone_config", "num_labels", "id2label", "label2id"))
    if unknown:
        accepted = sorted(f for f in fields if not f.startswith("_") and f not in ("self", "kwargs", "backbone_config"))
        raise SemsegError(f"model 'mask2former_swin_{size}': unknown keyword argument(s) {', '.join(unknown)}; it takes "
                          f"Mask2FormerConfig's fields ({', '.join(accepted)}) and backbone={{SwinConfig fields}}")
    try:
        swin = transformers.SwinConfig(**backbone)
        return transformers.Mask2FormerConfig(backbone_config=swin, num_labels=num_classes, **kwargs)
    except Exception as exc:  # TypeError, ValueError, or huggingface_hub's StrictDataclassError (an Exception)
        reason = str(exc).strip().replace("\n", " ")
        raise SemsegError(f"model 'mask2former_swin_{size}': transformers refused the config: {reason}") from None


def _config_kwargs(config: Any) -> dict[str, Any]:
    """The kwargs that rebuild ``config`` through a ``mask2former_swin_*`` builder (the Hub's config, for instance)."""
    values = plain_config(config)
    backbone = values.pop("backbone_config", {}) or {}
    for key in ("id2label", "label2id", "num_labels", "architectures", "model_type", "torch_dtype", "dtype"):
        values.pop(key, None)
        backbone.pop(key, None)
    backbone.pop("transformers_version", None)
    return {**values, "backbone": backbone}


def build_mask2former(size: str, num_classes: int, pretrained: bool, kwargs: dict[str, Any]) -> SegModel:
    transformers = import_transformers()
    config = _mask2former_config(size, num_classes, kwargs)
    if not pretrained:
        model = wrap(transformers.Mask2FormerForUniversalSegmentation(config))
        model.pretrained_cfg = replace(model.pretrained_cfg, class_names=None)
        return model
    repo = MASK2FORMER_HUB[size]
    source = hf_source(repo, ("config.json",))
    hub = fetch(source, lambda: transformers.Mask2FormerForUniversalSegmentation.from_pretrained(repo),
                f"Mask2Former Swin-{size} ADE20K weights")
    return from_published(hub, num_classes, f"hf:{repo}")


def from_published(net: nn.Module, num_classes: int, source: str) -> SegModel:
    """A zoo model from published transformers weights, re-headed for ``num_classes`` where they differ.

    The model is built from the published config with ``num_classes`` labels and the
    weights loaded through :func:`semseg.models.weights.load_state` (a class-count change
    re-initializes the heads, with a warning); ``model_kwargs`` keeps the config so a
    checkpoint rebuilds the model without the published files.
    """
    transformers = import_transformers()
    published_names = _class_names(net.config)
    config = net.config
    if int(config.num_labels) != num_classes:
        config = type(config).from_dict({**plain_config(config), "num_labels": num_classes, "id2label": None, "label2id": None})
    model = wrap(getattr(transformers, type(net).__name__)(config)) if config is not net.config else wrap(net)
    if config is not net.config:
        model.model_name = source
        load_state(model, net.state_dict(), source=source)
    names = published_names if published_names is not None and len(published_names) == num_classes else None
    model.pretrained_cfg = replace(model.pretrained_cfg, class_names=names, source=source)
    return model


def _mask2former_builder(size: str) -> Callable[..., SegModel]:
    def build(num_classes: int, pretrained: bool = False, **kwargs: Any) -> SegModel:
        """Mask2Former (Swin backbone); ``kwargs``: Mask2FormerConfig fields, ``backbone={SwinConfig fields}``."""
        model = build_mask2former(size, num_classes, pretrained, kwargs)
        if pretrained:  # the published config, so a checkpoint rebuilds this model without the Hub
            model.model_kwargs = _config_kwargs(model.net.config)
        return model

    build.__name__ = build.__qualname__ = f"mask2former_swin_{size}"
    return build


for _size in SWIN_SIZES:
    register_model(_mask2former_builder(_size))


# ------------------------------------------------------------------ hf:PATH
def is_folder(path: str) -> bool:
    return Path(path).is_dir()


def _load_pretrained(location: str) -> nn.Module:
    """The transformers model saved in folder (or Hub repository) ``location``, its weights loaded."""
    transformers = import_transformers()

    def load() -> nn.Module:
        config = transformers.AutoConfig.from_pretrained(location)
        arch = (getattr(config, "architectures", None) or [""])[0]
        cls = getattr(transformers, arch, None)
        if cls is None or not (arch in MASK_CLASSIFICATION or arch.endswith("ForSemanticSegmentation")):
            raise SemsegError(f"{location}: its config names architecture {arch or 'none'!r}; semseg runs "
                              f"*ForSemanticSegmentation models and {', '.join(MASK_CLASSIFICATION)}")
        return cls.from_pretrained(location, config=config).eval()

    if is_folder(location):
        check_pretrained_folder(location)
        try:
            return load()
        except (OSError, ValueError, KeyError) as exc:
            raise SemsegError(f"{location}: transformers could not load it: {exc}") from None
    if "/" not in location or location.startswith((".", "/", "~")) or os.sep in location.strip("/").split("/", 1)[0]:
        raise SemsegError(f"{location}: no such folder (hf:PATH takes a from_pretrained folder or a Hub repository "
                          "id such as nvidia/segformer-b0-finetuned-ade-512-512)")
    return fetch(hf_source(location, ("config.json",)), load, f"the transformers model {location}")


def hf_num_labels(location: str) -> int:
    """The class count of the checkpoint at ``location`` (folder or Hub id), read from its config."""
    transformers = import_transformers()
    if is_folder(location):
        check_pretrained_folder(location)
        return int(transformers.AutoConfig.from_pretrained(location).num_labels)
    return int(fetch(hf_source(location, ("config.json",)),
                     lambda: transformers.AutoConfig.from_pretrained(location), f"the config of {location}").num_labels)


def hf_builder(location: str, name: str) -> Callable[..., SegModel]:
    """The builder of ``"hf:LOCATION"``: the checkpoint's model and weights, or (``config=``) its architecture alone."""

    def build(num_classes: int, pretrained: bool = False, config: dict | None = None) -> SegModel:
        """A transformers checkpoint; ``config`` (stored in checkpoints) rebuilds it without reading ``location``."""
        transformers = import_transformers()
        if config is not None:
            values = dict(config)
            arch = (values.get("architectures") or [""])[0]
            cls = getattr(transformers, arch, None)
            if cls is None:
                raise SemsegError(f"model {name!r}: its stored config names architecture {arch!r}, which this "
                                  "transformers does not have")
            values.update(num_labels=num_classes)
            if len(values.get("id2label") or {}) != num_classes:
                values.update(id2label=None, label2id=None)
            return wrap(cls(cls.config_class.from_dict(values)))
        model = from_published(_load_pretrained(location), num_classes, name)
        model.model_kwargs = {"config": plain_config(model.net.config)}
        if is_folder(location):
            model.pretrained_cfg = hf_meta(location, model.pretrained_cfg)
        return model

    build.__name__ = build.__qualname__ = name
    return build
